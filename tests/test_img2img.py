"""Image to image through the real manager (Vary, A1111's img2img, the refiner after it), against plain
diffusers' StableDiffusion[XL]Img2ImgPipeline with the same seed, strength and steps.

The references are diffusers' own calls on the in-memory pipelines the files on disk were written from,
with a PIL image and `torch.Generator().manual_seed(seed)`: equal by construction (tests/conftest.py).
"""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.outputs.reading import read_metadata
from pipelines.types import GenerationRequest, ImageInput, ImageParams, JobState
from tests.support.compare import assert_images_equal
from tests.support.engine import run

PROMPT, NEGATIVE = "a lighthouse on a cliff", "blurry"


def picture(width: int = 64, height: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def euler_a(config):
    return diffusers.EulerAncestralDiscreteScheduler.from_config(config)


def plain_img2img(cls, reference, image, seed, steps, strength, cfg=5.0, **kwargs):
    pipe = cls(**{**reference.components, "scheduler": euler_a(reference.scheduler.config)})
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    return pipe(
        PROMPT,
        negative_prompt=NEGATIVE,
        image=image,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=cfg,
        generator=generator,
        **kwargs,
    )


COMMON = dict(prompt=PROMPT, negative_prompt=NEGATIVE, steps=6, cfg_scale=5.0, sampler="Euler a", scheduler="Automatic")


@pytest.mark.parametrize("mode, strength", [("img2img", 0.6), ("vary_subtle", 0.5), ("vary_strong", 0.85)])
def test_sd15_img2img_and_vary_equal_plain_diffusers(engine, tiny_sd15_reference, mode, strength):
    image = picture(seed=1)
    stored = engine.inputs.put_image(image)
    part = ImageInput(stored.sha256, mode=mode, denoise=0.6 if mode == "img2img" else None)
    info = run(engine, model="tiny-sd15", seed=77, input=part, **COMMON)
    assert info.state is JobState.FINISHED, info.error
    [item] = info.result.images
    expected = plain_img2img(diffusers.StableDiffusionImg2ImgPipeline, tiny_sd15_reference, image, 77, 6, strength).images[0]
    assert_images_equal(item.image, expected)
    with Image.open(item.path) as saved:
        assert_images_equal(saved.convert("RGB"), expected)
    # the progress bar counted the steps diffusers ran: int(6 * strength)
    assert info.total_steps == int(6 * strength)
    params = item.params
    assert params.denoising_strength == strength and params.input_image == stored.sha256
    assert f"Denoising strength: {strength:g}" in item.infotext
    meta = read_metadata(item.path)
    assert ImageParams.from_dict(meta.image_params) == params
    restored = GenerationRequest.from_dict(meta.request)
    assert restored.input == part  # the mode and strength come back with the settings


def test_sdxl_img2img_equals_plain_diffusers(engine, tiny_sdxl_reference):
    image = picture(seed=2)
    stored = engine.inputs.put_image(image)
    info = run(engine, model="tiny-sdxl", seed=5, input=ImageInput(stored.sha256, denoise=0.7), **COMMON)
    assert info.state is JobState.FINISHED, info.error
    expected = plain_img2img(diffusers.StableDiffusionXLImg2ImgPipeline, tiny_sdxl_reference, image, 5, 6, 0.7).images[0]
    assert_images_equal(info.result.images[0].image, expected)


def test_sdxl_img2img_with_the_refiner_equals_diffusers_two_calls(engine, tiny_sdxl_reference, tiny_sdxl_refiner_reference):
    image = picture(seed=3)
    stored = engine.inputs.put_image(image)
    info = run(
        engine,
        model="tiny-sdxl",
        refiner="tiny-sdxl-refiner",
        refiner_switch=0.8,
        seed=9,
        input=ImageInput(stored.sha256, denoise=0.7),
        **COMMON,
    )
    assert info.state is JobState.FINISHED, info.error
    ref = tiny_sdxl_refiner_reference
    refiner = diffusers.StableDiffusionXLImg2ImgPipeline(
        **{**ref.components, "scheduler": euler_a(ref.scheduler.config)},
        requires_aesthetics_score=ref.config.requires_aesthetics_score,
        force_zeros_for_empty_prompt=ref.config.force_zeros_for_empty_prompt,
    )
    refiner.set_progress_bar_config(disable=True)
    # the generator goes on from where the base left it, as in one diffusers script
    generator = torch.Generator().manual_seed(9)
    base = diffusers.StableDiffusionXLImg2ImgPipeline(
        **{**tiny_sdxl_reference.components, "scheduler": euler_a(tiny_sdxl_reference.scheduler.config)}
    )
    base.set_progress_bar_config(disable=True)
    latents = base(
        PROMPT,
        negative_prompt=NEGATIVE,
        image=image,
        strength=0.7,
        num_inference_steps=6,
        guidance_scale=5.0,
        generator=generator,
        denoising_end=0.8,
        output_type="latent",
    ).images
    expected = refiner(
        PROMPT,
        negative_prompt=NEGATIVE,
        image=latents,
        num_inference_steps=6,
        denoising_start=0.8,
        guidance_scale=5.0,
        generator=generator,
    ).images[0]
    assert_images_equal(info.result.images[0].image, expected)
    assert info.result.images[0].params.refiner == "tiny-sdxl-refiner"


def test_a1111_resize_modes_and_sizes(engine):
    wide = picture(96, 48, seed=4)
    stored = engine.inputs.put_image(wide)
    for resize in ("just_resize", "crop_and_resize", "resize_and_fill", "latent_upscale"):
        info = run(
            engine,
            model="tiny-sd15",
            seed=1,
            width=64,
            height=64,
            save_images=False,
            input=ImageInput(stored.sha256, resize_mode=resize, denoise=0.5),
            **{**COMMON, "steps": 2},
        )
        assert info.state is JobState.FINISHED, (resize, info.error)
        assert info.result.images[0].image.size == (64, 64)
    # Vary keeps the input's own size, in multiples of 8
    odd = engine.inputs.put_image(picture(90, 75, seed=5))
    info = run(
        engine,
        model="tiny-sd15",
        seed=1,
        save_images=False,
        input=ImageInput(odd.sha256, mode="vary_subtle"),
        **{**COMMON, "steps": 2},
    )
    assert info.result.images[0].image.size == (88, 72)
