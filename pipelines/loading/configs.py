"""Offline configs and tokenizers for single-file (A1111 / CivitAI) checkpoints.

A `.safetensors` checkpoint holds weights only. diffusers' `from_single_file` needs, for every component, a
diffusers config and, for the pipeline, the tokenizers; left to itself it fetches them from the hub. This
module hands it everything from files shipped in `pipelines/model_configs/` instead, so SD1.5 and SDXL
checkpoints load with no network at all:

    config_dir = config_dir_for(arch, checkpoint, cache_root)
    StableDiffusionXLPipeline.from_single_file(
        str(checkpoint), config=str(config_dir), local_files_only=True, **tokenizer_kwargs(arch))

Checkpoints of a non-standard size (tiny test models, odd fine-tunes) carry a sidecar `foo.config.json`
beside `foo.safetensors` whose component configs replace the bundled ones. Inpainting checkpoints (a UNet with
9 input channels: latents, mask, masked picture) load with the same configs, the UNet's input channels set from
the file's tensors.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from transformers import CLIPTokenizer

from pipelines.errors import ModelLoadError
from pipelines.types import Architecture

CONFIG_ROOT = Path(__file__).resolve().parent / "model_configs"
TOKENIZER_DIR = CONFIG_ROOT / "tokenizer"
CLIP_MAX_LENGTH = 77
SIDECAR_SUFFIX = ".config.json"

_ARCH_DIRS: dict[Architecture, str] = {
    Architecture.SD1: "sd15",
    Architecture.SDXL: "sdxl",
    Architecture.SDXL_REFINER: "sdxl_refiner",
}
# Components a sidecar may override, per architecture, and the file diffusers reads each config from.
_COMPONENTS: dict[Architecture, tuple[str, ...]] = {
    Architecture.SD1: ("unet", "vae", "text_encoder", "scheduler"),
    Architecture.SDXL: ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler"),
    Architecture.SDXL_REFINER: ("unet", "vae", "text_encoder_2", "scheduler"),  # OpenCLIP bigG only
}
ALL_COMPONENTS: tuple[str, ...] = ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler")


def _config_file(component: str) -> str:
    return "scheduler_config.json" if component == "scheduler" else "config.json"


def _arch_dir_name(arch: Architecture) -> str:
    try:
        return _ARCH_DIRS[Architecture(arch)]
    except (KeyError, ValueError):
        label = arch.label if isinstance(arch, Architecture) else str(arch)
        raise ModelLoadError(
            f"No bundled configuration for {label} models: only SD 1.x, SDXL and SDXL refiner checkpoints "
            "can be loaded from a single file offline."
        ) from None


def bundled_config_dir(arch: Architecture) -> Path:
    """The shipped diffusers config folder (no weights) for a full-size model of `arch`."""
    return CONFIG_ROOT / _arch_dir_name(arch)


@functools.lru_cache(maxsize=1)
def _clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Parse the shipped CLIP vocabulary once; building a tokenizer from it then takes ~60 ms."""
    vocab = json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    lines = (TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    return vocab, merges  # type: ignore[return-value]


def clip_tokenizer(pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """A fresh CLIP ViT-L/14 tokenizer built from the shipped files (SDXL's tokenizer_2 pads with "!")."""
    vocab, merges = _clip_bpe()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=CLIP_MAX_LENGTH)


def tokenizer_kwargs(arch: Architecture) -> dict[str, CLIPTokenizer]:
    """Tokenizers to pass to `from_single_file`, so it never looks for them on the hub.

    SD1.x has one (CLIP ViT-L), SDXL two, the SDXL refiner only the second (OpenCLIP bigG, padded with "!").
    """
    name = _arch_dir_name(arch)
    kwargs = {}
    if name in ("sd15", "sdxl"):
        kwargs["tokenizer"] = clip_tokenizer()
    if name in ("sdxl", "sdxl_refiner"):
        kwargs["tokenizer_2"] = clip_tokenizer("!")
    return kwargs


def sidecar_path(checkpoint: Path) -> Path:
    """`foo.safetensors` -> `foo.config.json` (the file that overrides configs for non-standard sizes)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + SIDECAR_SUFFIX)


def read_sidecar(path: Path, arch: Architecture) -> dict[str, dict[str, Any]]:
    """Parse and check a sidecar; every problem is reported with the file's name so users can fix it."""
    _arch_dir_name(arch)  # unsupported architectures fail here, with the same message as elsewhere
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Cannot read model config override {path.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"Model config override {path.name} must be a JSON object of component configs.")
    allowed = _COMPONENTS[Architecture(arch)]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ModelLoadError(
            f"Model config override {path.name} names unknown component(s) {', '.join(unknown)} "
            f"for {Architecture(arch).label}; allowed: {', '.join(allowed)}."
        )
    for name, cfg in data.items():
        if not isinstance(cfg, dict):
            raise ModelLoadError(f"Model config override {path.name}: '{name}' must be a JSON object.")
    return data


def _content_key(arch: Architecture, bundled: Path, overrides: bytes) -> str:
    """Hash of everything the materialized folder is made of, so it is rebuilt only when one changes."""
    digest = hashlib.sha256(_arch_dir_name(arch).encode())
    for file in sorted(p for p in bundled.rglob("*") if p.is_file()):
        digest.update(file.relative_to(bundled).as_posix().encode())
        digest.update(file.read_bytes())
    digest.update(overrides)
    return digest.hexdigest()[:16]


def config_dir_for(arch: Architecture, checkpoint: Path | None, cache_root: Path, unet_in_channels: int | None = None) -> Path:
    """The config folder to load `checkpoint` with: the bundled one, or a cached copy patched by its sidecar and,
    for an inpainting checkpoint (`unet_in_channels` 9, read from its tensors), by the UNet's input channels.

    The copy lives in `cache_root/<arch>-<hash>` and is written atomically (temp folder, then rename), so
    concurrent loaders and interrupted runs never see a half-written folder.
    """
    bundled = bundled_config_dir(arch)
    sidecar = sidecar_path(checkpoint) if checkpoint is not None else None
    overrides = read_sidecar(sidecar, arch) if sidecar is not None and sidecar.is_file() else {}
    if unet_in_channels is not None:
        unet = overrides.get("unet") or json.loads((bundled / "unet" / "config.json").read_text(encoding="utf-8"))
        if unet.get("in_channels", 4) != unet_in_channels:
            overrides = {**overrides, "unet": {**unet, "in_channels": unet_in_channels}}
    if not overrides:
        return bundled
    key = _content_key(arch, bundled, json.dumps(overrides, sort_keys=True).encode())
    target = Path(cache_root) / f"{_arch_dir_name(arch)}-{key}"
    if (target / "model_index.json").is_file():
        return target
    if target.exists():  # an incomplete leftover (crash while copying by hand, etc.)
        shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        shutil.copytree(bundled, staging, dirs_exist_ok=True)
        for name, cfg in overrides.items():
            (staging / name).mkdir(exist_ok=True)
            (staging / name / _config_file(name)).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "model_index.json").is_file():  # lost a race to a complete copy: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
