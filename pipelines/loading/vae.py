"""VAE override: decode a job's images with a VAE from models/vae instead of the checkpoint's own.

As in A1111, the weights come from the VAE file and the configuration (latent scaling factor,
`force_upcast`) from the checkpoint it decodes for: a VAE file holds no config, and the latent space is
the UNet's. Single files are read in the original layout (`encoder.down.*`, optionally under
`first_stage_model.`) or the diffusers one; a diffusers `AutoencoderKL` folder loads with its own config.

The swap lasts one job: `swapped_vae` always puts the checkpoint's VAE back, also when the job fails,
is skipped or is cancelled. Loaded VAEs are kept in a small LRU, so a series of jobs reads the file once.
SDXL's VAE overflows in fp16; diffusers' SDXL pipelines upcast it for decoding when its config says
`force_upcast`, which the override keeps, so nothing else is needed here.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from pipelines.errors import EaselError, InvalidRequest, ModelLoadError, ModelNotFound
from pipelines.loading import configs as arch_configs
from pipelines.loading.hashing import HashCache
from pipelines.loading.loader import LoadedModel
from pipelines.loading.optimize import optimize_module
from pipelines.loading.probe import SAFETENSORS_SUFFIXES, load_pickle_state_dict
from pipelines.loading.registry import FOLDERS, ModelRegistry
from pipelines.types import GenerationRequest, ModelFormat, ModelKind, ModelRecord

log = logging.getLogger(__name__)

_AUTOMATIC = ("", "automatic", "none", "default")  # "use the checkpoint's own VAE", as forms spell it


def own_vae_name(text: str | None) -> str | None:
    """A VAE name as written, or None when it means the checkpoint's own ("Automatic", "None" or nothing)."""
    name = (text or "").strip()
    return None if name.lower() in _AUTOMATIC else name


def vae_name(request: GenerationRequest) -> str | None:
    """The VAE a request asks for, or None for the checkpoint's own."""
    return own_vae_name(request.vae)


@dataclass(frozen=True)
class LoadedVae:
    name: str  # as A1111 writes it in the infotext: the file's name (a folder's name for diffusers folders)
    short_hash: str  # sha256 of the file, first 10 hex digits (A1111's `VAE hash`)
    module: Any  # diffusers AutoencoderKL, on the pipeline's device and in its dtype

    def metadata(self) -> dict[str, str]:
        return {"vae": self.name, "vae_hash": self.short_hash}


def find_vae(registry: ModelRegistry, name: str) -> ModelRecord:
    """The VAE named `name`; a file of that name that is something else, or no file, is an InvalidRequest."""
    try:
        return registry.find(ModelKind.VAE, name)
    except ModelNotFound as exc:
        not_found = exc
    roots = [registry.models_dir / folder for folder in FOLDERS[ModelKind.VAE]]
    for kind in (ModelKind.CHECKPOINT, ModelKind.LORA, ModelKind.EMBEDDING):
        for record in registry.list(kind):
            if record.path is not None and _named(record.path, name, roots):
                raise InvalidRequest(f"{record.path.name} in {record.path.parent} is a {kind.value}, not a VAE.", field="vae")
    for path, note in registry.skipped:
        if _named(path, name, roots):
            raise InvalidRequest(f"{path.name} in {path.parent} is not a VAE: {note}.", field="vae")
    raise InvalidRequest(str(not_found), field="vae")


def _named(path: Path, name: str, roots: list[Path]) -> bool:
    """Whether `path`, inside one of the VAE folders, is what a user calls `name` (file name, stem or rel. path)."""
    wanted = name.strip().replace("\\", "/").lower()
    for root in roots:
        try:
            rel = path.relative_to(root).as_posix().lower()
        except ValueError:
            continue
        stem = rel.rsplit(".", 1)[0] if path.is_file() else rel
        return wanted in (rel, stem, path.name.lower(), path.stem.lower())
    return False


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a VAE file; pickles are read with weights_only, so they cannot run code."""
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        return load_file(str(path))
    return load_pickle_state_dict(path)


class VaeLoader:
    """Loads VAE overrides for a checkpoint and keeps the last few (LRU) on the device."""

    def __init__(self, hashes: HashCache, capacity: int = 2):
        self.hashes = hashes
        self.capacity = capacity
        self._loaded: collections.OrderedDict[tuple, LoadedVae] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many files were read (tests read it)

    def for_request(self, request: GenerationRequest, registry: ModelRegistry, model: LoadedModel) -> LoadedVae | None:
        name = vae_name(request)
        return None if name is None else self.load(find_vae(registry, name), model)

    def load(self, record: ModelRecord, model: LoadedModel) -> LoadedVae:
        assert record.path is not None
        own = model.pipe.vae
        config_dir = model.config_dir or arch_configs.bundled_config_dir(model.architecture)
        stat = record.path.stat()
        key = (str(record.path.resolve()), stat.st_size, stat.st_mtime_ns, str(config_dir), own.dtype, str(own.device))
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        module = self._read(record, config_dir, own.dtype).to(own.device).eval()
        optimize_module("vae", module, own.device)  # the same layout the checkpoint's own VAE got
        self.loads += 1
        name = record.path.name if record.format is ModelFormat.SINGLE_FILE else record.name
        loaded = LoadedVae(name, self.hashes.model_hash(record.path)[:10], module)
        with self._lock:
            self._loaded[key] = loaded
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
        return loaded

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()

    def _read(self, record: ModelRecord, config_dir: Path, dtype: torch.dtype) -> Any:
        from diffusers import AutoencoderKL

        path = record.path
        assert path is not None
        try:
            if path.is_dir():
                vae = AutoencoderKL.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
            else:
                vae = AutoencoderKL.from_single_file(
                    read_state_dict(path), config=str(config_dir), subfolder="vae", local_files_only=True, torch_dtype=dtype
                )
        except EaselError as exc:
            raise ModelLoadError(f"Could not load the VAE {path.name}: {exc}") from exc
        except Exception as exc:  # diffusers reports bad files with ValueError, KeyError, NotImplementedError...
            log.info("loading VAE %s failed", path, exc_info=True)
            raise ModelLoadError(f"Could not load the VAE {path.name} ({path}): {_reason(exc)}") from exc
        if any(p.device.type == "meta" for p in vae.parameters()):
            raise ModelLoadError(f"Could not load the VAE {path.name}: the file lacks some of the VAE's tensors.")
        return vae


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "meta tensor" in text:
        return "the file lacks some of the VAE's tensors"
    if "expected shape" in text:
        return f"its tensors do not fit this checkpoint's VAE ({text[:300]})"
    return f"{type(exc).__name__}: {text[:300]}"


@contextlib.contextmanager
def swapped_vae(vae: LoadedVae | None, pipes: Iterable[Any]) -> Iterator[None]:
    """Give `pipes` the override VAE for the duration; their own VAEs come back whatever happens inside."""
    if vae is None:
        yield
        return
    unique = list({id(p): p for p in pipes if p is not None}.values())
    saved = [(pipe, pipe.vae) for pipe in unique]
    try:
        for pipe in unique:
            pipe.vae = vae.module
        yield
    finally:
        for pipe, own in saved:
            pipe.vae = own
