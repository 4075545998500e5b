"""Inpainting masks as pixels: white is what changes. Made binary, inverted, blurred, used to pre-fill the masked
area from its surroundings, and to lay the result over the input so that nothing outside the mask changes.

The steps and their arithmetic are A1111's (modules/processing.py StableDiffusionProcessingImg2Img.init,
modules/masking.py fill, apply_overlay), so a mask sent to either app means the same pixels: a mask is made
binary at 128 (or taken from the alpha channel of a brush layer), blurred with OpenCV's Gaussian kernel along x
then y (written here in numpy: OpenCV is not a dependency), and the result is laid over the input through the
blurred mask, so where it is 0 the input's own pixels are kept exactly.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from pipelines.images.inputs import to_rgb

CUT = 128  # A1111's create_binary_mask: above this, the pixel is masked
# A1111's masking.fill: blurs of the unmasked pixels laid over each other, widest first, so the masked area takes
# the colours around it (radius, repeats).
FILL_PASSES = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))


def binary_mask(image: Image.Image) -> Image.Image:
    """An "L" mask of 0 and 255. A picture with transparency (a brush layer, a PNG cut-out) is masked where it is
    opaque; any other is masked where it is light, as A1111's create_binary_mask does."""
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):
            return _threshold(alpha)
    return _threshold(to_rgb(image).convert("L"))


def _threshold(grey: Image.Image) -> Image.Image:
    return grey.point(lambda v: 255 if v > CUT else 0)


def invert(mask: Image.Image) -> Image.Image:
    return ImageOps.invert(mask.convert("L"))


def is_blank(mask: Image.Image) -> bool:
    """Nothing is masked."""
    return mask.getbbox() is None


def gaussian_kernel(sigma: float) -> np.ndarray:
    """OpenCV's kernel for A1111's size 2 * int(2.5 * sigma + 0.5) + 1."""
    size = 2 * int(2.5 * sigma + 0.5) + 1
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _blur_axis(values: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    padded = np.pad(values, pad, mode="reflect")  # OpenCV's default border, BORDER_REFLECT_101
    out = np.zeros_like(values)
    length = values.shape[axis]
    for i, weight in enumerate(kernel):
        out += weight * (padded[i : i + length, :] if axis == 0 else padded[:, i : i + length])
    return out


def blur(mask: Image.Image, x: float, y: float) -> Image.Image:
    """A1111's mask blur: a Gaussian of sigma `x` along the rows, then `y` along the columns (0: none)."""
    values = np.asarray(mask.convert("L"), dtype=np.float64)
    for sigma, axis in ((x, 1), (y, 0)):
        if sigma > 0:
            values = np.rint(_blur_axis(values, sigma, axis))  # each pass rounds to 8 bits, as OpenCV's does
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")


def doubled(mask: Image.Image) -> Image.Image:
    """A1111's overlay mask for a whole-picture inpaint: the blurred mask doubled, so the new pixels reach the
    mask's edge fully and fade out only beyond it."""
    values = np.asarray(mask.convert("L"), dtype=np.float32) * 2
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill" masked content: the masked area painted with the colours around it (blurs of the unmasked
    pixels, widest first), so the sampler starts from something that fits instead of what was there."""
    keep = ImageOps.invert(mask.convert("L"))
    layered = Image.new("RGBA", image.size)
    unmasked = Image.new("RGBa", image.size)
    unmasked.paste(image.convert("RGBA").convert("RGBa"), mask=keep)
    for radius, repeats in FILL_PASSES:
        blurred = unmasked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            layered.alpha_composite(blurred)
    return layered.convert("RGB")


def overlay(generated: Image.Image, original: Image.Image, mask: Image.Image) -> Image.Image:
    """`generated` shown through `mask` over `original` (same sizes): the original's own pixels where the mask is
    0, the generated ones where it is 255, mixed in between."""
    alpha = np.asarray(mask.convert("L"), dtype=np.float32)[..., None] / 255.0
    new = np.asarray(generated.convert("RGB"), dtype=np.float32)
    old = np.asarray(original.convert("RGB"), dtype=np.float32)
    mixed = new * alpha + old * (1.0 - alpha)
    return Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8), "RGB")
