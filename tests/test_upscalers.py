"""Upscaler models as users download them, found by the registry, loaded through spandrel, run in tiles."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.errors import InvalidRequest
from pipelines.generation.upscale import UpscalerLibrary
from pipelines.loading.registry import ModelRegistry
from pipelines.loading.upscalers import UpscalerLoader, load_upscaler
from pipelines.types import ModelKind
from tests.support.compare import assert_images_equal
from tests.support.upscaler_files import write_compact, write_esrgan, write_realesrgan, write_swinir


class Evil:
    def __reduce__(self):
        return (print, ("this ran",))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("upscaler-models")
    write_esrgan(root / "upscale_models" / "4x-Tiny.pth", scale=4, seed=1)  # ComfyUI's folder
    write_esrgan(root / "ESRGAN" / "2x-Tiny.pth", scale=2, seed=2)  # A1111's folders
    write_realesrgan(root / "RealESRGAN" / "RealESRGAN_x4plus.pth", seed=3)
    write_compact(root / "upscale_models" / "compact" / "realesr-general-x4v3.safetensors", seed=4)
    write_swinir(root / "SwinIR" / "SwinIR-M_x2.pth", seed=6)
    with open(root / "upscale_models" / "evil.pth", "wb") as f:
        pickle.dump({"model.0.weight": Evil()}, f)
    return root


@pytest.fixture(scope="module")
def library(models, tmp_path_factory):
    registry = ModelRegistry(models, tmp_path_factory.mktemp("cache"))
    registry.refresh()
    return UpscalerLibrary(registry, UpscalerLoader(torch.device("cpu")))


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC)


def test_the_registry_finds_upscalers_in_comfyui_and_a1111_folders(library):
    found = {r.name: r.family for r in library.registry.list(ModelKind.UPSCALER)}
    assert found == {
        "4x-Tiny": "ESRGAN",
        "2x-Tiny": "ESRGAN",
        "RealESRGAN_x4plus": "ESRGAN",
        "compact/realesr-general-x4v3": "RealESRGAN Compact",
        "SwinIR-M_x2": "SwinIR",
    }
    skipped = {path.name: why for path, why in library.registry.skipped}
    assert "holds more than tensors" in skipped["evil.pth"]
    assert library.pixel_names() == [
        "None",
        "Lanczos",
        "Nearest",
        "2x-Tiny",
        "4x-Tiny",
        "compact/realesr-general-x4v3",
        "RealESRGAN_x4plus",
        "SwinIR-M_x2",
    ]
    assert library.latent_names()[0] == "Latent" and "Latent (nearest-exact)" in library.latent_names()


def test_unknown_names_are_refused_naming_the_field(library):
    with pytest.raises(InvalidRequest, match="Unknown upscaler 'R-ESRGAN 8x'") as info:
        library.resolve("R-ESRGAN 8x", field="hr_upscaler")
    assert info.value.field == "hr_upscaler"
    assert library.resolve("realesr-general-x4v3.safetensors").name == "compact/realesr-general-x4v3"
    with pytest.raises(InvalidRequest):
        library.resolve("Latent", latent=False)


@pytest.mark.parametrize(
    "name, scale", [("4x-Tiny", 4), ("2x-Tiny", 2), ("RealESRGAN_x4plus", 4), ("compact/realesr-general-x4v3", 4)]
)
def test_each_family_loads_and_upscales_as_the_network_does_on_the_whole_image(library, name, scale):
    record = library.resolve(name).record
    descriptor = load_upscaler(record.path, torch.device("cpu"))
    assert descriptor.scale == scale
    image = picture(40, 24)
    out = library.upscale(image, 40 * scale, 24 * scale, name)
    with torch.inference_mode():
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        expected = descriptor(tensor)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    assert_images_equal(out, (expected * 255.0).round().astype(np.uint8))  # one tile covers it: the same call


def test_the_upscaler_runs_until_big_enough_then_lanczos_to_the_exact_size(library):
    image = picture(20, 20)
    loads = library.loader.loads
    assert library.upscale(image, 30, 30, "2x-Tiny").size == (30, 30)  # one 2x pass, then down to 30
    assert library.upscale(image, 70, 50, "2x-Tiny").size == (70, 50)  # two passes (80x80), then down
    assert library.loader.loads - loads <= 1  # loaded once at most, then kept
    assert np.array_equal(
        np.asarray(library.upscale(image, 40, 40, "Nearest")), np.asarray(image.resize((40, 40), Image.NEAREST))
    )


def test_tiled_upscaling_matches_untiled_within_a_tolerance_at_the_seams(library):
    image = picture(96, 80, seed=5)
    whole = np.asarray(library.upscale(image, 384, 320, "4x-Tiny")).astype(int)
    library.tile, library.tile_overlap = 48, 24
    try:
        tiled = np.asarray(library.upscale(image, 384, 320, "4x-Tiny")).astype(int)
    finally:
        library.tile, library.tile_overlap = 512, 32
    diff = np.abs(tiled - whole)
    # The tiles overlap by 24 input pixels; each tile's cut edge, where it lacks context, gets almost no weight.
    # Stated tolerance: on average under 2 levels, at most 1% of the values over 16 levels.
    assert diff.mean() < 2.0 and (diff > 16).mean() < 0.01
    assert (diff == 0).mean() > 0.3  # tile interiors far from every seam are the untiled result
