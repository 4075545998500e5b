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

from pipelines.outputs.metadata import read_metadata
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


def assert_inpainted(result: Image.Image, expected: Image.Image, image: Image.Image, mask: Image.Image) -> None:
    """Diffusers' pixels inside the mask, the input's outside (which diffusers' own output does not keep)."""
    inside, outside = split(result, mask)
    assert_images_equal(inside, split(expected, mask)[0])
    assert_images_equal(outside, split(image, mask)[1])
    assert (inside != split(image, mask)[0]).mean() > 0.9  # the masked area was re-made
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
