"""Running an image model tile by tile, so memory stays bounded, with the seams blended away.

The image is cut into as few tiles of at most `tile` pixels a side as cover it with at least `overlap` pixels
shared between neighbours, spread evenly (so little is computed twice); each is run on its own and added
into the output with a weight that ramps linearly across each overlap it shares with a neighbour, so the two
predictions fade into each other and the weights add up to one (no second accumulator, no division). A
tile's own border (where it lacks the context its neighbour has) thus counts for nothing at the seam. An
image that fits in one tile is run whole: then the result is exactly the untiled one.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

TileFn = Callable[[torch.Tensor], torch.Tensor]


def grid(size: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """(where the tiles along one side begin, their common length): the fewest tiles of at most `tile` that
    overlap by at least `overlap`, evenly spread, the first at 0 and the last flush with the end."""
    if size <= tile:
        return [0], size
    count = math.ceil((size - overlap) / (tile - overlap))
    while True:  # one more tile when rounding the starts would leave a pair with less than `overlap`
        length = min(tile, math.ceil((size + (count - 1) * overlap) / count))
        starts = [round(i * (size - length) / (count - 1)) for i in range(count)]
        if all(a + length - b >= overlap for a, b in zip(starts, starts[1:])):
            return starts, length
        count += 1


def _ramp(length: int, before: int, after: int) -> torch.Tensor:
    """Weights along one side of a tile: linear over the overlap with the previous and the next tile."""
    weight = torch.ones(length)
    if before > 0:
        weight[:before] = (torch.arange(before, dtype=torch.float32) + 0.5) / before
    if after > 0:
        weight[length - after :] = torch.minimum(
            weight[length - after :], (torch.arange(after, 0, -1, dtype=torch.float32) - 0.5) / after
        )
    return weight


def run_tiled(image: torch.Tensor, fn: TileFn, scale: int, tile: int = 512, overlap: int = 32) -> torch.Tensor:
    """fn over (1, C, H, W) in overlapping tiles; fn must return (1, C', h*scale, w*scale) for each tile."""
    _, _, height, width = image.shape
    (ys, th), (xs, tw) = grid(height, tile, overlap), grid(width, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return fn(image)
    out: torch.Tensor | None = None
    for iy, y in enumerate(ys):
        above = (ys[iy - 1] + th - y) * scale if iy > 0 else 0
        below = (y + th - ys[iy + 1]) * scale if iy + 1 < len(ys) else 0
        wy = _ramp(th * scale, above, below)
        for ix, x in enumerate(xs):
            left = (xs[ix - 1] + tw - x) * scale if ix > 0 else 0
            right = (x + tw - xs[ix + 1]) * scale if ix + 1 < len(xs) else 0
            weight = (wy[:, None] * _ramp(tw * scale, left, right)[None, :])[None, None]
            result = fn(image[:, :, y : y + th, x : x + tw]).float().cpu()
            if out is None:
                out = torch.zeros((1, result.shape[1], height * scale, width * scale))
            box = (slice(None), slice(None), slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale))
            out[box] += result.mul_(weight)
    assert out is not None
    return out
