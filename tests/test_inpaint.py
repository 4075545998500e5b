"""Inpainting through the real manager against plain diffusers' StableDiffusion[XL]InpaintPipeline, with the same
seed, strength and steps, on normal checkpoints (4-channel UNet: masked latent blending) and on a tiny
inpainting checkpoint (9-channel UNet) written as sd-v1-5-inpainting.ckpt is published.

Where the mask is 255 the engine's picture is diffusers' own, bit for bit (equal by construction: the same
pipeline code, the same draws from `torch.Generator().manual_seed(seed)`); where it is 0 it is the input's,
bit for bit (A1111's overlay, which diffusers' output does not do: its VAE round trip changes every pixel).
"""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.outputs.reading import read_metadata
from pipelines.types import GenerationRequest, ImageInput, ImageParams, JobState, ModelKind
from tests.conftest import TINY_SD15_INPAINTING_NAME
from tests.support.compare import assert_images_equal
from tests.support.engine import run, running_engine
from tests.test_img2img import COMMON, NEGATIVE, PROMPT, euler_a, picture


def rectangle_mask(width: int = 64, height: int = 64, box: tuple[int, int, int, int] = (20, 16, 44, 48)) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, box)
    return mask


def split(image: Image.Image, mask: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The pixels where the mask is 255, and where it is 0."""
    values, where = np.asarray(image.convert("RGB")), np.asarray(mask) > 127
    return values[where], values[~where]


def plain_inpaint(cls, reference, image, mask, seed, steps, strength, cfg=5.0):
    extra = {"requires_safety_checker": False} if cls is diffusers.StableDiffusionInpaintPipeline else {}
    pipe = cls(**{**reference.components, "scheduler": euler_a(reference.scheduler.config)}, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        PROMPT,
        negative_prompt=NEGATIVE,
        image=image,
        mask_image=mask,
        width=image.width,
        height=image.height,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=cfg,
        generator=torch.Generator().manual_seed(seed),
    ).images[0]


def assert_inpainted(
    result: Image.Image, expected: Image.Image, image: Image.Image, mask: Image.Image, overlaid: bool = True
) -> None:
    """Diffusers' pixels inside the mask, the input's outside (which diffusers' own output does not keep)."""
    inside, outside = split(result, mask)
    assert_images_equal(inside, split(expected, mask)[0])
    assert_images_equal(outside, split(image, mask)[1])
    assert (inside != split(image, mask)[0]).mean() > 0.9  # the masked area was re-made
    if overlaid:
        assert (split(expected, mask)[1] != outside).mean() > 0.5  # and the overlay is what kept the rest


@pytest.fixture(scope="module")
def engine(inpaint_models_dir, tmp_path_factory):
    with running_engine(inpaint_models_dir, tmp_path_factory.mktemp("outputs")) as services:
        yield services


def stored(engine, image: Image.Image, mask: Image.Image) -> tuple[str, str]:
    return engine.inputs.put_image(image).sha256, engine.inputs.put_mask_image(mask).sha256


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_sd15_inpaint_equals_plain_diffusers(engine, tiny_sd15_reference, strength):
    image, mask = picture(seed=1), rectangle_mask()
    image_hash, mask_hash = stored(engine, image, mask)
    part = ImageInput(
        image_hash, mode="img2img", denoise=strength, mask=mask_hash, mask_blur_x=0, mask_blur_y=0, inpaint_fill="original"
    )
    info = run(engine, model="tiny-sd15", seed=21, input=part, **COMMON)
    assert info.state is JobState.FINISHED, info.error
    [item] = info.result.images
    expected = plain_inpaint(diffusers.StableDiffusionInpaintPipeline, tiny_sd15_reference, image, mask, 21, 6, strength)
    assert_inpainted(item.image, expected, image, mask)
    assert info.total_steps == int(6 * strength)
    params = item.params
    assert (params.mask_image, params.input_image, params.masked_content) == (mask_hash, image_hash, "original")
    assert params.denoising_strength == strength and (params.mask_blur_x, params.mask_blur_y) == (0, 0)
    assert "Mask blur: 0" in item.infotext and "Masked content: original" in item.infotext
    meta = read_metadata(item.path)
    assert ImageParams.from_dict(meta.image_params) == params
    assert GenerationRequest.from_dict(meta.request).input == part  # the mask and its settings come back


def test_sdxl_inpaint_equals_plain_diffusers(engine, tiny_sdxl_reference):
    image, mask = picture(seed=2), rectangle_mask(box=(0, 0, 40, 24))
    image_hash, mask_hash = stored(engine, image, mask)
    part = ImageInput(image_hash, mode="inpaint", mask=mask_hash, mask_blur_x=0, mask_blur_y=0, inpaint_fill="original")
    info = run(engine, model="tiny-sdxl", seed=4, input=part, **COMMON)
    assert info.state is JobState.FINISHED, info.error
    expected = plain_inpaint(diffusers.StableDiffusionXLInpaintPipeline, tiny_sdxl_reference, image, mask, 4, 6, 1.0)
    assert_inpainted(info.result.images[0].image, expected, image, mask)
    assert info.result.images[0].params.input_mode == "Inpaint or Outpaint (default)"


def test_an_inpainting_checkpoint_is_found_loaded_offline_and_inpaints_as_diffusers(
    engine, tiny_sd15_inpainting_reference, no_network
):
    record = engine.registry.find(ModelKind.CHECKPOINT, TINY_SD15_INPAINTING_NAME)
    assert record.usable and record.inpainting and record.path.suffix == ".ckpt", record.note
    image, mask = picture(seed=3), rectangle_mask(box=(8, 8, 40, 56))
    image_hash, mask_hash = stored(engine, image, mask)
    part = ImageInput(image_hash, mode="inpaint", mask=mask_hash, mask_blur_x=0, mask_blur_y=0, inpaint_fill="original")
    info = run(engine, model=TINY_SD15_INPAINTING_NAME, seed=8, input=part, **COMMON)
    assert info.state is JobState.FINISHED, info.error
    expected = plain_inpaint(diffusers.StableDiffusionInpaintPipeline, tiny_sd15_inpainting_reference, image, mask, 8, 6, 1.0)
    assert_inpainted(info.result.images[0].image, expected, image, mask)
    # picked as the inpaint model of a job on another checkpoint, it does the inpaint
    picked = ImageInput(**{**vars(part), "inpaint_model": TINY_SD15_INPAINTING_NAME})
    again = run(engine, model="tiny-sd15", seed=8, input=picked, **COMMON)
    assert again.state is JobState.FINISHED, again.error
    assert_images_equal(again.result.images[0].image, info.result.images[0].image)
    assert again.result.images[0].params.model == TINY_SD15_INPAINTING_NAME


def test_an_inpainting_checkpoint_makes_pictures_from_text_as_a1111(engine, tiny_sd15_inpainting_reference):
    """A1111 runs txt2img on an inpainting model with the whole picture masked over a blank grey one."""
    info = run(engine, model=TINY_SD15_INPAINTING_NAME, seed=5, **COMMON)
    assert info.state is JobState.FINISHED, info.error
    ref = tiny_sd15_inpainting_reference
    pipe = diffusers.StableDiffusionInpaintPipeline(
        **{**ref.components, "scheduler": euler_a(ref.scheduler.config)}, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        PROMPT,
        negative_prompt=NEGATIVE,
        image=torch.full((1, 3, 64, 64), 0.5),
        mask_image=torch.ones(1, 1, 64, 64),
        width=64,
        height=64,
        strength=1.0,
        num_inference_steps=6,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(5),
    ).images[0]
    assert_images_equal(info.result.images[0].image, expected)
    # and varies a picture with the whole of it masked
    vary = run(
        engine,
        model=TINY_SD15_INPAINTING_NAME,
        seed=5,
        input=ImageInput(stored(engine, picture(seed=4), rectangle_mask())[0], denoise=0.5),
        **COMMON,
    )
    assert vary.state is JobState.FINISHED, vary.error


def grown(mask: Image.Image, radius: int) -> np.ndarray:
    """Where the mask is, or lies within `radius` pixels along x and y: as far as a blur of sigma s (kernel
    radius int(2.5 s + 0.5)) reaches. The test picture's mask is far from the edges, so rolling is growing."""
    where = np.asarray(mask) > 0
    out = where.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= np.roll(where, (dy, dx), (0, 1))
    return out


def test_with_mask_blur_nothing_changes_outside_the_blurred_mask(engine):
    image, mask = picture(seed=5), rectangle_mask(box=(24, 24, 40, 40))
    image_hash, mask_hash = stored(engine, image, mask)
    part = ImageInput(image_hash, mode="inpaint", mask=mask_hash, mask_blur_x=4, mask_blur_y=2)
    info = run(engine, model="tiny-sd15", seed=3, save_images=False, input=part, **COMMON)
    assert info.state is JobState.FINISHED, info.error
    result = np.asarray(info.result.images[0].image)
    reach = grown(mask, int(2.5 * 4 + 0.5))
    assert np.array_equal(result[~reach], np.asarray(image)[~reach])
    assert (result[np.asarray(mask) > 0] != np.asarray(image)[np.asarray(mask) > 0]).mean() > 0.9
    assert info.result.images[0].params.mask_blur_x == 4 and "Mask blur x: 4, Mask blur y: 2" in info.result.images[0].infotext


def test_outpaint_grows_the_picture_and_keeps_the_original_area(engine):
    image = picture(64, 48, seed=6)
    image_hash = engine.inputs.put_image(image).sha256
    part = ImageInput(
        image_hash, mode="inpaint_detail", outpaint=("left", "bottom"), outpaint_fraction=0.25, mask_blur_x=0, mask_blur_y=0
    )
    info = run(engine, model="tiny-sd15", seed=2, input=part, **COMMON)
    assert info.state is JobState.FINISHED, info.error
    [item] = info.result.images
    assert item.image.size == (64 + 16, 48 + 12)  # worked at 80x64, put back at 80x60
    result = np.asarray(item.image)
    assert np.array_equal(result[:48, 16:], np.asarray(image))
    new = np.asarray(item.image)[:, :16]
    assert (new != np.repeat(np.asarray(image)[:1, :1], 16, 1)[0]).any()  # the grown area was made, not the edge
    params = item.params
    assert (params.width, params.height, params.outpaint, params.outpaint_fraction) == (80, 60, "Left, Bottom", 0.25)
    assert params.denoising_strength == 1.0  # Improve Detail's 0.5, but the new area is made at full strength
    assert 'Outpaint: "Left, Bottom"' in item.infotext  # quoted, as A1111 quotes values with commas


def test_only_masked_pastes_back_the_generation_of_the_crop(engine, tiny_sd15_reference):
    image, mask = picture(128, 128, seed=7), rectangle_mask(128, 128, box=(56, 40, 72, 56))
    image_hash, mask_hash = stored(engine, image, mask)
    part = ImageInput(
        image_hash,
        mode="inpaint",
        mask=mask_hash,
        only_masked=True,
        only_masked_padding=24,  # 16 + 2 x 24 = 64: the region is worked at its own size, the tiny model's 64x64
        mask_blur_x=0,
        mask_blur_y=0,
        inpaint_fill="original",
    )
    info = run(engine, model="tiny-sd15", seed=6, input=part, **COMMON)
    assert info.state is JobState.FINISHED, info.error
    [item] = info.result.images
    assert item.image.size == (128, 128) and item.params.inpaint_padding == 24
    region = (32, 16, 96, 80)
    crop = plain_inpaint(
        diffusers.StableDiffusionInpaintPipeline, tiny_sd15_reference, image.crop(region), mask.crop(region), 6, 6, 1.0
    )
    expected = image.copy()
    expected.paste(crop, region[:2])
    assert_inpainted(item.image, expected, image, mask, overlaid=False)
    assert (np.asarray(crop) != np.asarray(image.crop(region))).mean() > 0.5  # diffusers changed the whole crop
    assert "Inpaint area: Only masked, Masked area padding: 24" in item.infotext


@pytest.mark.parametrize("fill", ["fill", "latent_noise", "latent_nothing"])
def test_masked_content_changes_what_the_masked_area_starts_from(engine, fill):
    image, mask = picture(seed=8), rectangle_mask()
    image_hash, mask_hash = stored(engine, image, mask)
    common = dict(model="tiny-sd15", seed=9, save_images=False, **COMMON)

    def inpaint(content: str) -> np.ndarray:
        part = ImageInput(image_hash, denoise=0.5, mask=mask_hash, mask_blur_x=0, mask_blur_y=0, inpaint_fill=content)
        info = run(engine, input=part, **common)
        assert info.state is JobState.FINISHED, info.error
        return np.asarray(info.result.images[0].image)

    original, other = inpaint("original"), inpaint(fill)
    inside = np.asarray(mask) > 0
    assert (original[inside] != other[inside]).mean() > 0.5
    assert np.array_equal(original[~inside], other[~inside])


def test_bad_masks_answer_with_the_field(engine):
    image_hash = engine.inputs.put_image(picture(seed=9)).sha256
    cases = [
        (ImageInput(image_hash, mode="inpaint"), "input.mask"),  # an Inpaint method needs a mask
        (ImageInput(image_hash, mode="vary_subtle", mask=image_hash), "input.mask"),  # Vary takes none
        (ImageInput(image_hash, mode="inpaint", mask="0" * 64), "input.mask"),  # not in the store
        (ImageInput(image_hash, mode="inpaint", mask=image_hash, inpaint_model="no-such-model"), "model"),
    ]
    for part, field in cases:
        with pytest.raises(Exception) as info:
            engine.queue.submit(GenerationRequest(model="tiny-sd15", input=part))
        assert getattr(info.value, "field", None) == field or "no-such-model" in str(info.value), (part, info.value)


def test_the_initial_noise_multiplier_scales_the_start_noise_of_img2img_and_inpaint(engine):
    image, mask = picture(seed=10), rectangle_mask()
    image_hash, mask_hash = stored(engine, image, mask)
    common = dict(model="tiny-sd15", seed=11, save_images=False, **COMMON)
    for extra in ({}, {"mask": mask_hash, "mask_blur_x": 0, "mask_blur_y": 0}):
        plain, louder = (
            run(engine, input=ImageInput(image_hash, denoise=0.6, noise_multiplier=m, **extra), **common) for m in (1.0, 1.3)
        )
        assert plain.state is louder.state is JobState.FINISHED, (plain.error, louder.error)
        a, b = (np.asarray(info.result.images[0].image) for info in (plain, louder))
        changed = np.asarray(mask) > 0 if extra else np.ones(a.shape[:2], bool)
        assert (a[changed] != b[changed]).mean() > 0.5 and np.array_equal(a[~changed], b[~changed])
        assert plain.result.images[0].params.noise_multiplier is None
        assert "Noise multiplier: 1.3" in louder.result.images[0].infotext


def test_a_normal_checkpoint_encodes_the_picture_once(engine):
    """diffusers encodes the masked picture as well, which only a 9-channel UNet reads: Easel skips that encode
    (drawing the same random numbers), and still equals diffusers (the tests above use an ancestral sampler)."""
    image, mask = picture(seed=12), rectangle_mask()
    image_hash, mask_hash = stored(engine, image, mask)
    run(engine, model="tiny-sd15", seed=1, save_images=False, **{**COMMON, "steps": 1})  # loaded
    [model] = [m for m in engine.cache.loaded() if m.name == "tiny-sd15"]
    calls = []
    hook = model.pipe.vae.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        part = ImageInput(image_hash, mode="inpaint", mask=mask_hash)
        info = run(engine, model="tiny-sd15", seed=1, save_images=False, input=part, **COMMON)
    finally:
        hook.remove()
    assert info.state is JobState.FINISHED, info.error
    assert len(calls) == 1


def test_the_sdxl_refiner_finishes_an_inpaint_and_the_rest_is_still_the_input(engine):
    image, mask = picture(seed=13), rectangle_mask(box=(8, 8, 56, 32))
    image_hash, mask_hash = stored(engine, image, mask)
    part = ImageInput(image_hash, mode="inpaint", mask=mask_hash, mask_blur_x=0, mask_blur_y=0)
    info = run(engine, model="tiny-sdxl", refiner="tiny-sdxl-refiner", refiner_switch=0.5, seed=3, input=part, **COMMON)
    assert info.state is JobState.FINISHED, info.error
    alone = run(engine, model="tiny-sdxl", seed=3, save_images=False, input=part, **COMMON)
    inside, outside = split(info.result.images[0].image, mask)
    assert_images_equal(outside, split(image, mask)[1])
    assert (inside != split(alone.result.images[0].image, mask)[0]).mean() > 0.5  # the refiner did the last steps
    assert info.result.images[0].params.refiner == "tiny-sdxl-refiner"
