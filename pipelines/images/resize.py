"""A1111's four resize modes for fitting an input image to the size a job makes, and sizes in multiples of 8.

0 just resize (stretch), 1 crop and resize (fill the frame, crop the overflow, centred), 2 resize and fill
(fit inside, then stretch the edge rows or columns into the gaps), 3 just resize in latent space (the image
is encoded at its own size and the latents are resized; see generation/img2img.py). The arithmetic is
A1111's own (modules/images.py resize_image), so a request sent to either gives the same framing.
"""

from __future__ import annotations

import enum
from typing import Callable

from PIL import Image

Resize = Callable[[Image.Image, int, int], Image.Image]


class ResizeMode(str, enum.Enum):
    JUST_RESIZE = "just_resize"
    CROP_AND_RESIZE = "crop_and_resize"
    RESIZE_AND_FILL = "resize_and_fill"
    LATENT = "latent_upscale"  # "Just resize (latent upscale)"

    @classmethod
    def from_a1111(cls, index: int) -> ResizeMode:
        """A1111's resize_mode number (0-3)."""
        return list(cls)[index]

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    ResizeMode.JUST_RESIZE: "Just resize",
    ResizeMode.CROP_AND_RESIZE: "Crop and resize",
    ResizeMode.RESIZE_AND_FILL: "Resize and fill",
    ResizeMode.LATENT: "Just resize (latent upscale)",
}


def lanczos(image: Image.Image, width: int, height: int) -> Image.Image:
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.LANCZOS)


def multiple_of_8(width: float, height: float, low: int = 64, high: int = 4096) -> tuple[int, int]:
    """The nearest size in multiples of 8 within [low, high], which the VAE and the UNet need."""

    def snap(value: float) -> int:
        return int(min(high, max(low, round(value / 8) * 8)))

    return snap(width), snap(height)


def resize_image(mode: ResizeMode, image: Image.Image, width: int, height: int, resize: Resize = lanczos) -> Image.Image:
    """`image` framed to width x height by A1111's rule for `mode` (LATENT frames like JUST_RESIZE in pixels)."""
    if mode in (ResizeMode.JUST_RESIZE, ResizeMode.LATENT):
        return resize(image, width, height)
    ratio = width / height
    src_ratio = image.width / image.height
    if mode is ResizeMode.CROP_AND_RESIZE:
        src_w = width if ratio > src_ratio else image.width * height // image.height
        src_h = height if ratio <= src_ratio else image.height * width // image.width
        resized = resize(image, src_w, src_h)
        out = Image.new("RGB", (width, height))
        out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return out
    src_w = width if ratio < src_ratio else image.width * height // image.height
    src_h = height if ratio >= src_ratio else image.height * width // image.width
    resized = resize(image, src_w, src_h)
    out = Image.new("RGB", (width, height))
    out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill = height // 2 - src_h // 2
        if fill > 0:
            out.paste(resized.resize((width, fill), box=(0, 0, width, 0)), box=(0, 0))
            out.paste(resized.resize((width, fill), box=(0, resized.height, width, resized.height)), box=(0, fill + src_h))
    elif ratio > src_ratio:
        fill = width // 2 - src_w // 2
        if fill > 0:
            out.paste(resized.resize((fill, height), box=(0, 0, 0, height)), box=(0, 0))
            out.paste(resized.resize((fill, height), box=(resized.width, 0, resized.width, height)), box=(fill + src_w, 0))
    return out
