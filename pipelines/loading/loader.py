"""Loading a checkpoint into a diffusers pipeline, fully offline.

Single files are read with the configs and tokenizer shipped in this repo (arch_configs.py), so
nothing is fetched; diffusers folders load as they are; hub ids go through hub.py first.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from pipelines.devices import DevicePlan
from pipelines.errors import EaselError, ModelLoadError, UnsafeCheckpoint
from pipelines.loading import configs as arch_configs
from pipelines.loading import hub
from pipelines.loading.hashing import HashCache
from pipelines.loading.optimize import optimize_for_device
from pipelines.loading.probe import (
    PICKLE_SUFFIXES,
    load_pickle_state_dict,
    probe_diffusers_folder,
    read_safetensors_header,
    unet_in_channels,
)
from pipelines.loading.text_encoders import rootless_text_encoders
from pipelines.types import Architecture, ModelFormat, ModelRecord

log = logging.getLogger(__name__)

StatusFn = Callable[[str, float | None], None]

SUPPORTED = (Architecture.SD1, Architecture.SDXL, Architecture.SDXL_REFINER)


@dataclass
class LoadedModel:
    record: ModelRecord
    architecture: Architecture
    pipe: Any  # a diffusers StableDiffusion(XL)Pipeline
    model_hash: str  # full sha256; A1111 shows the first 10 digits
    size_bytes: int
    scheduler_config: Any = None  # the checkpoint's own scheduler config: every sampler is built from it
    config_dir: Path | None = None  # the diffusers config folder it was built from (a VAE override reuses its vae/)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def short_hash(self) -> str:
        return self.model_hash[:10]


def pipeline_class(arch: Architecture):
    import diffusers

    if arch is Architecture.SD1:
        return diffusers.StableDiffusionPipeline
    if arch is Architecture.SDXL:
        return diffusers.StableDiffusionXLPipeline
    if arch is Architecture.SDXL_REFINER:  # no text-to-image of its own: it refines the base model's latents
        return diffusers.StableDiffusionXLImg2ImgPipeline
    raise ModelLoadError(f"{arch.label} models are not supported; use an SD 1.x or SDXL checkpoint.")


def header_shapes(header: dict[str, Any]) -> dict[str, Any]:
    return {k: v.get("shape", ()) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


def module_bytes(pipe: Any) -> int:
    total = 0
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            total += sum(p.numel() * p.element_size() for p in component.parameters())
            total += sum(b.numel() * b.element_size() for b in component.buffers())
    return total


class ModelLoader:
    def __init__(self, plan: DevicePlan, cache_dir: Path, hashes: HashCache):
        self.plan = plan
        self.cache_dir = Path(cache_dir)
        self.hashes = hashes

    def load(self, record: ModelRecord, status: StatusFn = lambda message, fraction=None: None) -> LoadedModel:
        if not record.usable:
            raise ModelLoadError(f"{record.name} cannot be used: {record.note}.")
        try:
            if record.format is ModelFormat.HUB:
                return self._load_hub(record, status)
            if record.format is ModelFormat.DIFFUSERS:
                return self._load_folder(record, record.path, status)
            return self._load_single_file(record, status)
        except EaselError:
            raise
        except pickle.UnpicklingError as exc:
            raise UnsafeCheckpoint(f"{record.name}: the file holds more than tensors and was not loaded ({exc}).") from exc
        except MemoryError as exc:
            raise ModelLoadError(f"Not enough memory to load {record.name}.") from exc
        except Exception as exc:
            log.exception("loading %s failed", record.name)
            raise ModelLoadError(f"Could not load {record.name}: {type(exc).__name__}: {exc}") from exc

    def _load_single_file(self, record: ModelRecord, status: StatusFn) -> LoadedModel:
        assert record.path is not None
        arch = record.architecture
        cls = pipeline_class(arch)
        state = None
        if record.path.suffix.lower() in PICKLE_SUFFIXES:
            state = load_pickle_state_dict(record.path)  # refuses pickles with code before diffusers touches them
        header = read_safetensors_header(record.path) if state is None else {}
        keys = state.keys() if state is not None else header.keys()
        shapes = {k: tuple(getattr(v, "shape", ())) for k, v in state.items()} if state is not None else header_shapes(header)
        status(f"Loading {record.name} ({arch.label}{', inpainting' if record.inpainting else ''})", None)
        # an inpainting UNet takes 9 channels where the bundled configs say 4: the file's tensors decide
        channels = unet_in_channels(shapes)
        config_dir = arch_configs.config_dir_for(arch, record.path, self.cache_dir / "configs", unet_in_channels=channels)
        built = rootless_text_encoders(record.path, keys, config_dir, self.plan.dtype, state)
        del state, keys, shapes  # diffusers reads the file again: do not hold a second copy meanwhile
        pipe = cls.from_single_file(
            str(record.path),
            config=str(config_dir),
            local_files_only=True,
            torch_dtype=self.plan.dtype,
            **arch_configs.tokenizer_kwargs(arch),
            **built,
        )
        return self._finish(record, arch, pipe, status, config_dir=config_dir)

    def _load_folder(self, record: ModelRecord, path: Path, status: StatusFn, variant: str | None = None) -> LoadedModel:
        probe = probe_diffusers_folder(path)
        if probe.note:
            raise ModelLoadError(f"{record.name}: {probe.note}.")
        arch = probe.architecture
        cls = pipeline_class(arch)
        status(f"Loading {record.name} ({arch.label})", None)
        kwargs: dict[str, Any] = {"torch_dtype": self.plan.dtype, "local_files_only": True}
        if variant:
            kwargs["variant"] = variant
        if arch is Architecture.SD1:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        pipe = cls.from_pretrained(str(path), **kwargs)
        return self._finish(record, arch, pipe, status, files=path, config_dir=path)

    def _load_hub(self, record: ModelRecord, status: StatusFn) -> LoadedModel:
        assert record.hub_id is not None
        path, variant = hub.download(record.hub_id, status)
        return self._load_folder(record, path, status, variant)

    def _finish(
        self,
        record: ModelRecord,
        arch: Architecture,
        pipe: Any,
        status: StatusFn,
        files: Path | None = None,
        config_dir: Path | None = None,
    ) -> LoadedModel:
        pipe.set_progress_bar_config(disable=True)
        pipe.to(self.plan.device)
        for change in optimize_for_device(pipe, self.plan):
            log.info("%s: %s", record.name, change)
        files = files or record.path
        digest = ""
        if files is not None:
            status(f"Hashing {record.name}", None)
            digest = self.hashes.model_hash(files)
        return LoadedModel(
            record=record,
            architecture=arch,
            pipe=pipe,
            model_hash=digest,
            size_bytes=module_bytes(pipe),
            scheduler_config=pipe.scheduler.config,
            config_dir=Path(config_dir) if config_dir is not None else None,
        )
