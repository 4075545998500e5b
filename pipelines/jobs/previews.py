"""Live previews: the tiny preview decoder (TAESD) when one is installed, else a linear approximation.

TAESD is a ~1 M-parameter decoder of SD's latent space: its previews look like the final image, at full
size, for a few percent of a denoising step. Users install it by dropping its file into
`models/vae_approx` (ComfyUI's folder; A1111's `VAE-approx` works too):

- `taesd_decoder.safetensors` / `taesdxl_decoder.safetensors` (decoder only, the original layout), or
- a diffusers `AutoencoderTiny` as one file (`encoder.layers.*`, `decoder.layers.*`) or a folder.

Which architecture a file decodes is in its name (`xl` = SDXL): TAESD and TAESDXL have the same shapes.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from pipelines.jobs.progress import PreviewFn, latent_preview
from pipelines.loading.optimize import optimize_module
from pipelines.types import Architecture

log = logging.getLogger(__name__)

FOLDERS = ("vae_approx", "VAE-approx")
SUFFIXES = (".safetensors", ".pth", ".pt")
MODES = ("auto", "approx", "off")  # AppConfig.previews


def family_of(name: str) -> Architecture:
    return Architecture.SDXL if "xl" in name.lower() else Architecture.SD1


def _family(architecture: Architecture) -> Architecture:
    return Architecture.SDXL if architecture in (Architecture.SDXL, Architecture.SDXL_REFINER) else Architecture.SD1


def decoder_state(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The decoder weights of a TAESD file in diffusers' `decoder.layers.*` names.

    The original decoder is one nn.Sequential that starts with a parameter-free clamp, which diffusers
    applies in forward() instead, so its layer i is diffusers' layer i-1.
    """
    if any(k.startswith("decoder.layers.") for k in raw):
        return {k: v for k, v in raw.items() if k.startswith("decoder.")}
    out = {}
    for key, value in raw.items():
        index, _, rest = key.partition(".")
        if not index.isdigit():
            raise ValueError(f"unexpected key {key!r} for a TAESD decoder")
        out[f"decoder.layers.{int(index) - 1}.{rest}"] = value
    return out


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    data = torch.load(path, map_location="cpu", weights_only=True)
    return data.get("state_dict", data) if isinstance(data, dict) else data


def load_tiny_decoder(path: Path) -> Any:
    """An AutoencoderTiny holding the file's decoder (the encoder, unused for previews, stays random)."""
    from diffusers import AutoencoderTiny

    if path.is_dir():
        return AutoencoderTiny.from_pretrained(str(path), local_files_only=True)
    model = AutoencoderTiny()
    missing, unexpected = model.load_state_dict(decoder_state(read_weights(path)), strict=False)
    if unexpected or any(k.startswith("decoder.") for k in missing):
        raise ValueError(f"{path.name} is not a TAESD decoder (missing {len(missing)}, unexpected {len(unexpected)} tensors)")
    return model


class PreviewDecoders:
    """Finds and keeps the preview decoders; hands the step callback a preview function per model."""

    def __init__(self, models_dir: Path, mode: str = "auto"):
        if mode not in MODES:
            raise ValueError(f"previews must be one of {', '.join(MODES)}, not {mode!r}")
        self.models_dir = Path(models_dir)
        self.mode = mode
        self._loaded: dict[tuple[Path, str, str], Any] = {}
        self._lock = threading.Lock()

    def installed(self) -> dict[Architecture, Path]:
        """The decoder file (or folder) for each architecture family, as found on disk now."""
        found: dict[Architecture, Path] = {}
        for folder in FOLDERS:
            root = self.models_dir / folder
            if not root.is_dir():
                continue
            for path in sorted(root.iterdir()):
                usable = (path.is_dir() and (path / "config.json").exists()) or path.suffix in SUFFIXES
                if usable and "taesd" in path.name.lower() and "encoder" not in path.name.lower():
                    found.setdefault(family_of(path.name), path)
        return found

    def for_model(self, architecture: Architecture, device: torch.device, dtype: torch.dtype) -> PreviewFn | None:
        if self.mode == "off":
            return None
        if self.mode == "auto":
            path = self.installed().get(_family(architecture))
            if path is not None:
                try:
                    return self._tiny(path, device, dtype)
                except Exception as exc:  # a broken preview decoder must never stop a generation
                    log.warning("preview decoder %s unusable (%s); using the approximation", path.name, exc)
        return latent_preview(architecture)

    def final_decoder(self, architecture: Architecture, device: torch.device, dtype: torch.dtype) -> PreviewFn | None:
        """TAESD for the final image (CPU Turbo's fast decode) when installed, whatever the preview mode; else None."""
        path = self.installed().get(_family(architecture))
        if path is None:
            return None
        try:
            return self._tiny(path, device, dtype)
        except Exception as exc:  # a broken decoder file: the full VAE decodes, said in the log
            log.warning("TAESD decoder %s unusable for the final image (%s); using the full VAE", path.name, exc)
            return None

    def _tiny(self, path: Path, device: torch.device, dtype: torch.dtype) -> PreviewFn:
        key = (path, str(device), str(dtype))
        with self._lock:
            model = self._loaded.get(key)
            if model is None:
                model = load_tiny_decoder(path).to(device=device, dtype=dtype).eval()
                # frozen, and channels-last on the CPU like the VAE: 2.5x faster there, the same output bits
                optimize_module("vae", model, device)
                self._loaded[key] = model
        return tiny_preview(model)


def tiny_preview(model: Any) -> PreviewFn:
    def to_image(latents: torch.Tensor) -> Image.Image:
        with torch.inference_mode():
            sample = model.decode(latents[:1].to(model.dtype)).sample[0]
        rgb = ((sample.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(rgb, "RGB")

    return to_image
