"""LoRAs for a job: patched into the weights inside a `with` block, restored bit for bit.

Why patching and not diffusers' PEFT adapters: unfused adapters leave the base weights alone but add two
extra matmuls to every adapted layer at every step (bench/lora_switch.py measures it), and fusing them
(`fuse_lora`/`unfuse_lora`) subtracts the delta again, which in bf16/fp16 does not give the original bits
back. Here each touched weight is copied once before it changes and copied back on exit, so:

- a job with LoRAs runs at exactly the speed of one without (the weights in effect are plain tensors);
- the weights in effect are W + Σ weightᵢ·scaleᵢ·(upᵢ·downᵢ), summed in float32 and rounded once (LoHa, LoKr
  and DoRA layers add their own full-size change, layer_changes.py, in the same sum);
- the weights in effect are restored bit for bit whenever they change: the model a job runs on is exactly
  the loaded one plus that job's LoRAs, whatever ran before (finished, failed or cancelled mid-step);
- switching LoRA sets costs a few matmuls and copies, never a checkpoint read; and as in A1111, jobs that
  follow each other with the same set (CPU Turbo's LCM LoRA, a style LoRA kept on) keep it patched rather
  than restoring and patching it again (`keep=True`, the worker's jobs): 0.3-0.4 s a job for the LCM LoRA
  on SD1.5 on a 2-core CPU.

LoRA files are parsed once and kept in a bounded in-memory cache (least recently used first out).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch

from pipelines.errors import EaselError, LoraError, ModelNotFound
from pipelines.loading.hashing import HashCache
from pipelines.loading.loader import LoadedModel
from pipelines.loading.registry import ModelRegistry
from pipelines.loras.formats import LoraFile, read_lora
from pipelines.loras.info import LoraInfo, lora_info
from pipelines.loras.targets import (
    LayerPatch,
    ModuleIndex,
    add_changes_,
    add_low_rank_,
    group_by_parameter,
    resolve,
    stacked_factors,
)
from pipelines.types import AppliedLora, LoraRef, ModelKind, ModelRecord

log = logging.getLogger(__name__)

MIB = 1024**2


@dataclass
class LoraActivation:
    """What a job got: the LoRAs in effect (for metadata) and why others were left out."""

    applied: list[AppliedLora] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class KeptPatch:
    """A LoRA set left patched into a model after a job, to be reused by the next job that asks for the same.

    `key`: each LoRA's file digest and weight, in order; `saved`: (parameter, its original value) to restore.
    """

    key: tuple[tuple[str, float], ...]
    saved: list[tuple[torch.nn.Parameter, torch.Tensor]]


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
        # model.pipe -> the set left patched in it; weak, so a model dropped from the cache takes its entry along
        self._kept: weakref.WeakKeyDictionary[Any, KeptPatch] = weakref.WeakKeyDictionary()
        self.patches = 0  # how many times a LoRA set was patched in (tests read it)
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
    def activate(
        self, model: LoadedModel, refs: Sequence[LoraRef], skip_invalid: bool = False, keep: bool = False
    ) -> Iterator[LoraActivation]:
        """Apply `refs` to `model` for the duration of the block; the weights are restored exactly on exit,
        unless `keep`: then they stay patched for the next block with the same set (any other block, with
        another set or none, restores them first).

        Every file is read, mapped and checked before any weight changes. A LoRA that cannot be used raises
        LoraError naming it, or with `skip_invalid` is left out with a note saying why.
        """
        activation = LoraActivation()
        wanted = effective(refs)
        planned: list[tuple[LayerPatch, float]] = []
        key: list[tuple[str, float]] = []
        index = ModuleIndex.build(model.pipe, model.architecture) if wanted else None
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
            key.append((digest, float(ref.weight)))
        kept = self._kept.get(model.pipe)
        if keep and kept is not None and kept.key == tuple(key):
            yield activation  # the same set is in the weights already
            return
        self.restore(model)  # another set, or none: the loaded weights first
        if not planned:
            yield activation
            return
        saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        try:
            self._patch(planned, saved)
        except BaseException:
            self._restore(saved)
            raise
        self.patches += 1
        if keep:
            self._kept[model.pipe] = KeptPatch(tuple(key), saved)
            yield activation
            return
        try:
            yield activation
        finally:
            self._restore(saved)

    def restore(self, model: LoadedModel) -> None:
        """Restore the set kept in `model`, if any: before it serves a job in a role its LoRAs must not reach
        (the refiner of another base model)."""
        kept = self._kept.pop(model.pipe, None)
        if kept is not None:
            self._restore(kept.saved)

    @staticmethod
    @torch.no_grad()
    def _patch(planned: list[tuple[LayerPatch, float]], saved: list[tuple[torch.nn.Parameter, torch.Tensor]]) -> None:
        for group in group_by_parameter(planned).values():
            param = group[0][0].weight
            saved.append((param, param.detach().to("cpu", copy=True)))  # before the first change
            if all(patch.low_rank for patch, _ in group):
                add_low_rank_(param.data, *stacked_factors(group, param.device))
            else:  # LoHa, LoKr, DoRA: full-size changes
                add_changes_(param.data, group)

    @staticmethod
    @torch.no_grad()
    def _restore(saved: list[tuple[torch.nn.Parameter, torch.Tensor]]) -> None:
        for param, original in reversed(saved):
            param.copy_(original)
        saved.clear()
