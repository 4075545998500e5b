"""LoRAs for one job: patched into the weights inside a `with` block, restored bit for bit on exit.

Why patching and not diffusers' PEFT adapters: unfused adapters leave the base weights alone but add two
extra matmuls to every adapted layer at every step (bench/lora_switch.py measures it), and fusing them
(`fuse_lora`/`unfuse_lora`) subtracts the delta again, which in bf16/fp16 does not give the original bits
back. Here each touched weight is copied once before it changes and copied back on exit, so:

- a job with LoRAs runs at exactly the speed of one without (the weights in effect are plain tensors);
- the weights in effect are W + Σ weightᵢ·scaleᵢ·(upᵢ·downᵢ), summed in float32 and rounded once;
- after any job, finished, failed or cancelled mid-step, the model is bit-identical to the loaded one;
- switching LoRA sets costs a few matmuls and copies, never a checkpoint read.

LoRA files are parsed once and kept in a bounded in-memory cache (least recently used first out).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from pipelines.errors import EaselError, LoraError, ModelNotFound
from pipelines.loading.hashing import HashCache
from pipelines.loading.loader import LoadedModel
from pipelines.loading.registry import ModelRegistry
from pipelines.loras.formats import LoraFile, read_lora
from pipelines.loras.info import LoraInfo, lora_info
from pipelines.loras.targets import LayerPatch, ModuleIndex, add_low_rank_, group_by_parameter, resolve, stacked_factors
from pipelines.types import AppliedLora, LoraRef, ModelKind, ModelRecord

log = logging.getLogger(__name__)

MIB = 1024**2


@dataclass
class LoraActivation:
    """What a job got: the LoRAs in effect (for metadata) and why others were left out."""

    applied: list[AppliedLora] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def effective(refs: Sequence[LoraRef]) -> list[LoraRef]:
    """The refs that change anything: enabled and with a non-zero weight (the others are not even read)."""
    return [r for r in refs if r.enabled and float(r.weight) != 0.0]


class LoraManager:
    def __init__(self, registry: ModelRegistry, hashes: HashCache, cache_bytes: int = 1024 * MIB):
        self.registry = registry
        self.hashes = hashes
        self.cache_bytes = cache_bytes
        self._files: collections.OrderedDict[tuple[str, int, int], LoraFile] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0  # how many times a LoRA file was read from disk (tests read it)

    # -- lookup and reading -------------------------------------------------------------------------

    def record(self, name: str) -> ModelRecord:
        """The LoRA called `name`; a refresh is tried once so files added since the last scan are found."""
        try:
            return self.registry.find(ModelKind.LORA, name)
        except ModelNotFound:
            self.registry.refresh()
        try:
            return self.registry.find(ModelKind.LORA, name)
        except ModelNotFound as exc:
            unusable = self._unusable(name)
            raise LoraError(unusable or str(exc)) from exc

    def _unusable(self, name: str) -> str | None:
        """Why a file of that name in the LoRA folder was not listed as a LoRA (junk, a checkpoint, …)."""
        wanted = name.strip().replace("\\", "/").rsplit("/", 1)[-1].lower()
        for path, why in self.registry.skipped:
            if path.stem.lower() == wanted or path.name.lower() == wanted:
                return f"{path.name} cannot be used as a LoRA: {why}."
        for record in self.registry.list(ModelKind.CHECKPOINT) + self.registry.list(ModelKind.VAE):
            if record.path is not None and (record.path.stem.lower() == wanted or record.path.name.lower() == wanted):
                return f"{record.path.name} is a {record.kind.value}, not a LoRA."
        return None

    def read(self, record: ModelRecord) -> LoraFile:
        """The parsed file, from memory when it has not changed on disk since it was read."""
        assert record.path is not None
        stat = record.path.stat()
        key = (str(record.path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._files:
                self._files.move_to_end(key)
                return self._files[key]
        lora = read_lora(record.path)
        self.reads += 1
        with self._lock:
            self._files[key] = lora
            while len(self._files) > 1 and sum(f.nbytes for f in self._files.values()) > self.cache_bytes:
                self._files.popitem(last=False)
        return lora

    def cached_bytes(self) -> int:
        with self._lock:
            return sum(f.nbytes for f in self._files.values())

    def info(self, name: str) -> LoraInfo:
        """Training metadata of a LoRA for the UI (trigger words, top tags, base model); reads no tensors."""
        record = self.record(name)
        assert record.path is not None
        return lora_info(record.name, record.path, record.architecture.label)

    # -- one job ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def activate(self, model: LoadedModel, refs: Sequence[LoraRef], skip_invalid: bool = False) -> Iterator[LoraActivation]:
        """Apply `refs` to `model` for the duration of the block; the weights are restored exactly on exit.

        Every file is read, mapped and checked before any weight changes. A LoRA that cannot be used raises
        LoraError naming it, or with `skip_invalid` is left out with a note saying why.
        """
        activation = LoraActivation()
        wanted = effective(refs)
        if not wanted:
            yield activation
            return
        index = ModuleIndex.build(model.pipe, model.architecture)
        planned: list[tuple[LayerPatch, float]] = []
        for ref in wanted:
            try:
                record = self.record(ref.name)
                assert record.path is not None
                patches = resolve(self.read(record), index, model.name)
                digest = self.hashes.lora_hash(record.path)
            except (EaselError, OSError) as exc:
                message = str(exc) if isinstance(exc, EaselError) else f"LoRA {ref.name} could not be read: {exc}"
                if not skip_invalid:
                    if isinstance(exc, LoraError):
                        raise
                    raise LoraError(message) from exc
                activation.notes.append(f"Skipped LoRA {ref.name}: {message}")
                continue
            planned += [(patch, float(ref.weight)) for patch in patches]
            activation.applied.append(AppliedLora(record.name, float(ref.weight), digest))
        saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        try:
            self._patch(planned, saved)
            yield activation
        finally:
            self._restore(saved)

    @staticmethod
    @torch.no_grad()
    def _patch(planned: list[tuple[LayerPatch, float]], saved: list[tuple[torch.nn.Parameter, torch.Tensor]]) -> None:
        for group in group_by_parameter(planned).values():
            param = group[0][0].weight
            up, down = stacked_factors(group, param.device)
            saved.append((param, param.detach().to("cpu", copy=True)))  # before the first change
            add_low_rank_(param.data, up, down)

    @staticmethod
    @torch.no_grad()
    def _restore(saved: list[tuple[torch.nn.Parameter, torch.Tensor]]) -> None:
        for param, original in reversed(saved):
            param.copy_(original)
        saved.clear()
