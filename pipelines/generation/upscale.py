"""Upscalers by name: the built-in resamplers and latent modes (tables/upscalers.yaml) and the models found
in models/upscale_models (and A1111's ESRGAN/RealESRGAN/SwinIR folders), as A1111 lists them.

A model upscales by its own factor (often 4x) in overlapping tiles (images/tiles.py), as many passes as the
target needs (at most three, as A1111), and the result is then resized to the exact size with Lanczos.
Latent modes resize the latents of a first pass (hires fix) with torch's interpolate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from PIL import Image

from pipelines.errors import InvalidRequest
from pipelines.images.tiles import run_tiled
from pipelines.loading.registry import ModelRegistry
from pipelines.loading.upscalers import UpscalerLoader
from pipelines.types import ModelKind, ModelRecord

TABLE_PATH = Path(__file__).parent.parent / "tables" / "upscalers.yaml"
MAX_PASSES = 3
_RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST}

Check = Callable[[], None]


@dataclass(frozen=True)
class UpscalerChoice:
    name: str
    kind: str  # "pixel", "latent" or "model"
    resample: str = "lanczos"  # pixel
    mode: str = "bilinear"  # latent: torch interpolate mode
    antialias: bool = False
    record: ModelRecord | None = None  # model

    @property
    def latent(self) -> bool:
        return self.kind == "latent"


class UpscalerLibrary:
    def __init__(self, registry: ModelRegistry, loader: UpscalerLoader, table_path: Path = TABLE_PATH):
        self.registry = registry
        self.loader = loader
        table = yaml.safe_load(table_path.read_text(encoding="utf-8")) or {}
        self._pixel = {name: UpscalerChoice(name, "pixel", resample=v["resample"]) for name, v in table["pixel"].items()}
        self._latent = {
            name: UpscalerChoice(name, "latent", mode=v["mode"], antialias=bool(v["antialias"]))
            for name, v in table["latent"].items()
        }
        self.tile = int(table.get("tile", 512))
        self.tile_overlap = int(table.get("tile_overlap", 32))

    # -- names ------------------------------------------------------------------------------------

    def models(self) -> list[ModelRecord]:
        return [r for r in self.registry.list(ModelKind.UPSCALER) if r.usable]

    def pixel_names(self) -> list[str]:
        """What can upscale an image (A1111's sd_upscalers order): None, Lanczos, Nearest, then the models."""
        return [*self._pixel, *(r.name for r in self.models())]

    def latent_names(self) -> list[str]:
        return list(self._latent)

    def default(self) -> str:
        """The upscaler of Upscale modes when the request names none: the first model installed, else Lanczos."""
        models = self.models()
        return models[0].name if models else "Lanczos"

    def resolve(self, name: str | None, field: str = "upscaler", latent: bool = True) -> UpscalerChoice:
        """The upscaler called `name` (None: the default); InvalidRequest naming `field` for an unknown one."""
        wanted = (name or self.default()).strip()
        for table in (self._pixel, self._latent if latent else {}):
            for key, choice in table.items():
                if key.lower() == wanted.lower():
                    return choice
        for record in self.models():
            if wanted in (record.name, record.path.name if record.path else "") or record.name.lower() == wanted.lower():
                return UpscalerChoice(record.name, "model", record=record)
        known = self.pixel_names() + (self.latent_names() if latent else [])
        raise InvalidRequest(f"Unknown upscaler {wanted!r}. Known: {', '.join(known)}.", field=field)

    # -- running ----------------------------------------------------------------------------------

    def upscale(self, image: Image.Image, width: int, height: int, name: str | None, check: Check | None = None) -> Image.Image:
        """`image` at width x height: the upscaler's passes until it is at least that big, then Lanczos."""
        choice = self.resolve(name, latent=False)
        if choice.kind == "model" and (image.width < width or image.height < height):
            descriptor = self.loader.get(choice.record)
            for _ in range(MAX_PASSES):
                if image.width >= width and image.height >= height:
                    break
                image = self.run_model(descriptor, image, check)
        resample = _RESAMPLE[choice.resample] if choice.kind == "pixel" else Image.Resampling.LANCZOS
        return image if image.size == (width, height) else image.resize((width, height), resample)

    def run_model(self, descriptor: Any, image: Image.Image, check: Check | None = None) -> Image.Image:
        """One pass of the network over `image`, in tiles; `check` runs before each tile (stop, skip)."""
        param = next(descriptor.model.parameters())
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]

        def one(tile: torch.Tensor) -> torch.Tensor:
            if check is not None:
                check()
            return descriptor(tile.to(param.device, param.dtype))

        with torch.inference_mode():
            out = run_tiled(pixels, one, descriptor.scale, self.tile, self.tile_overlap)
            out = out[0].float().clamp_(0, 1).mul_(255.0).round_().to(torch.uint8)  # in place: the output is the big part
        return Image.fromarray(out.permute(1, 2, 0).cpu().numpy(), "RGB")

    def upscale_latents(self, latents: torch.Tensor, width: int, height: int, name: str, factor: int = 8) -> torch.Tensor:
        """A latent mode: the latents resized to (height, width) / factor, as A1111's hires fix does."""
        choice = self.resolve(name)
        if not choice.latent:
            raise ValueError(f"{name} is not a latent upscale mode")
        size = (height // factor, width // factor)
        kwargs: dict[str, Any] = {"antialias": choice.antialias} if choice.mode in ("bilinear", "bicubic") else {}
        return torch.nn.functional.interpolate(latents.float(), size=size, mode=choice.mode, **kwargs).to(latents.dtype)
