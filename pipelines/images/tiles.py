"""Running an image model tile by tile, so memory stays bounded, with the seams blended away.

The image is cut into tiles of at most `tile` pixels a side that overlap by `overlap` pixels; each is run on
its own and written into the output with a weight that ramps linearly across each overlap it shares with a
neighbour, so the two predictions fade into each other and the weights add up to one. A tile's own border
(where it lacks the context its neighbour has) thus counts for nothing at the seam. An image that fits in
one tile is run whole: then the result is exactly the untiled one.
"""

from __future__ import annotations

from typing import Callable

import torch

TileFn = Callable[[torch.Tensor], torch.Tensor]


def starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one side begin: every tile is full size, the last one flush with the end."""
    if size <= tile:
        return [0]
    step = max(1, tile - overlap)
    out = list(range(0, size - tile, step))
    out.append(size - tile)
    return out


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
    ys, xs = starts(height, tile, overlap), starts(width, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return fn(image)
    th, tw = min(tile, height), min(tile, width)
    out: torch.Tensor | None = None
    total = torch.zeros((1, 1, height * scale, width * scale))
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
            out[box] += result * weight
            total[box] += weight
    assert out is not None
    return out / total
