"""Pixel work without a model: A1111's resize modes and tiled runs with blended seams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.images.resize import ResizeMode, multiple_of_8, resize_image
from pipelines.images.tiles import grid, run_tiled


def striped(width: int, height: int) -> Image.Image:
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, :, 0] = np.arange(width)[None, :] * 255 // max(1, width - 1)
    array[:, :, 1] = np.arange(height)[:, None] * 255 // max(1, height - 1)
    return Image.fromarray(array)


def test_a1111_resize_modes_frame_the_image_as_a1111_does():
    wide = striped(200, 100)
    assert resize_image(ResizeMode.JUST_RESIZE, wide, 64, 64).size == (64, 64)
    assert resize_image(ResizeMode.from_a1111(3), wide, 64, 64).size == (64, 64)
    # crop and resize: height fills the frame (100 -> 64, width 128), the centre is kept
    crop = np.asarray(resize_image(ResizeMode.CROP_AND_RESIZE, wide, 64, 64))
    expected = np.asarray(wide.resize((128, 64), Image.Resampling.LANCZOS))[:, 32:96]
    assert np.array_equal(crop, expected)
    # resize and fill: the width fits (200 -> 64, height 32); the bands above and below repeat the edge rows
    fill = np.asarray(resize_image(ResizeMode.RESIZE_AND_FILL, wide, 64, 64))
    inner = np.asarray(wide.resize((64, 32), Image.Resampling.LANCZOS))
    assert np.array_equal(fill[16:48], inner)
    # (A1111 stretches a zero-height box at the edge: every band row is the same, close to the edge row)
    assert all(np.array_equal(fill[0], fill[i]) for i in range(16)) and np.abs(fill[0] - inner[0].astype(int)).max() <= 2
    assert all(np.array_equal(fill[63], fill[i]) for i in range(48, 64))
    tall = np.asarray(resize_image(ResizeMode.RESIZE_AND_FILL, striped(50, 100), 64, 64))
    assert np.array_equal(tall[:, 0], tall[:, 15])  # columns stretched into the side bands


def test_sizes_snap_to_multiples_of_8_within_the_limits():
    assert multiple_of_8(517, 301) == (520, 304)
    assert multiple_of_8(20, 9000) == (64, 4096)


def test_the_fewest_even_tiles_cover_the_side_with_the_overlap():
    assert grid(100, 128, 16) == ([0], 100)
    assert grid(1024, 512, 32) == ([0, 330, 661], 363)  # three tiles of 363, not two of 512 and a third
    for size in (129, 300, 1000, 4095, 2047, 777):
        starts, length = grid(size, 128, 32)
        assert length <= 128 and starts[0] == 0 and starts[-1] + length == size
        assert all(a + length - b >= 32 for a, b in zip(starts, starts[1:]))  # neighbours share the overlap


def test_one_tile_is_the_untiled_call_and_weights_add_up_to_one():
    image = torch.rand(1, 3, 40, 56)
    assert torch.equal(run_tiled(image, lambda t: t * 2, 1, tile=64), image * 2)
    # a pointwise function gives the same result tiled: the blend weights sum to one everywhere
    upscale = lambda t: torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
    tiled = run_tiled(image, upscale, 2, tile=16, overlap=6)
    assert torch.allclose(tiled, upscale(image), atol=1e-6)


@pytest.mark.parametrize("overlap", [4, 8])
def test_a_network_with_context_differs_only_in_the_overlaps(overlap):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Conv2d(3, 3, 3, padding=1))
    image = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        whole = net(image)
        tiled = run_tiled(image, net, 1, tile=24, overlap=overlap)
    diff = (tiled - whole).abs()[0].amax(0)
    # receptive radius 2: a tile's prediction is exact 2 pixels away from its cut edges, and the ramps
    # give the cut edge itself (where a tile lacks context) almost no weight
    assert float(diff.max()) < 0.15 * float(whole.abs().max()) and float(diff.mean()) < 0.01
    starts, length = grid(48, 24, overlap)
    exact = torch.ones(48, dtype=torch.bool)
    for before, a in zip(starts, starts[1:]):  # the band both tiles cover, and the context radius around it
        exact[max(0, a - 2) : before + length + 2] = False
    assert torch.allclose(tiled[..., exact, :][..., :, exact], whole[..., exact, :][..., :, exact], atol=1e-6)
