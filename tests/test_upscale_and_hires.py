"""Upscale modes and the hires fix through the real manager: sizes, the upscaler model found in the models
folder, exact equality with diffusers where the pass is diffusers' own, and the metadata in A1111's words."""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.errors import InvalidRequest
from pipelines.outputs.reading import read_metadata, request_fields_from_infotext
from pipelines.types import GenerationRequest, HiresFix, ImageInput, JobState
from tests.support.compare import assert_images_equal
from tests.support.engine import SIZE, running_engine
from tests.support.live_app import link_checkpoints
from tests.support.upscaler_files import write_esrgan

PROMPT = "a red barn"


@pytest.fixture(scope="module")
def engine(tiny_models_dir, tmp_path_factory):
    models = tmp_path_factory.mktemp("upscale-models")
    link_checkpoints(tiny_models_dir, models, ("tiny-sd15", "tiny-sdxl"))
    write_esrgan(models / "upscale_models" / "4x-Tiny.pth", scale=4, seed=7)
    with running_engine(models, tmp_path_factory.mktemp("outputs")) as services:
        yield services


def submit(services, **fields):
    job = services.queue.submit(
        GenerationRequest(
            **{**SIZE, "prompt": PROMPT, "steps": 4, "sampler": "Euler", "scheduler": "Automatic", "cfg_scale": 5.0, **fields}
        )
    )
    return services.queue.wait(job, timeout=600)


def picture(seed=0, size=(48, 40)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1] // 4, size[0] // 4, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)


def euler(reference):
    return diffusers.EulerDiscreteScheduler.from_config(reference.scheduler.config)


def test_upscale_2x_runs_the_model_then_a_diffusion_pass_equal_to_diffusers(engine, tiny_sd15_reference):
    image = picture(1)
    stored = engine.inputs.put_image(image)
    info = submit(engine, model="tiny-sd15", seed=4, input=ImageInput(stored.sha256, mode="upscale_2"))
    assert info.state is JobState.FINISHED, info.error
    [item] = info.result.images
    assert item.image.size == (96, 80)
    # the reference: the same upscaler model, then diffusers' img2img at Fooocus's 0.382
    upscaled = engine.upscalers.upscale(image, 96, 80, "4x-Tiny")
    pipe = diffusers.StableDiffusionImg2ImgPipeline(**{**tiny_sd15_reference.components, "scheduler": euler(tiny_sd15_reference)})
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        PROMPT,
        image=upscaled,
        strength=0.382,
        num_inference_steps=4,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(4),
    ).images[0]
    assert_images_equal(item.image, expected)
    assert "Denoising strength: 0.382, " in item.infotext
    assert "Postprocess upscale by: 2, Postprocess upscaler: 4x-Tiny" in item.infotext
    assert item.params.input_mode == "Upscale (2x)"


def test_upscale_fast_needs_no_model_and_performance_sets_the_steps(engine):
    image = picture(2)
    stored = engine.inputs.put_image(image)
    info = submit(engine, model="no-such-model-needed", input=ImageInput(stored.sha256, mode="upscale_fast_2"))
    assert info.state is JobState.FINISHED, info.error
    [item] = info.result.images
    assert_images_equal(item.image, engine.upscalers.upscale(image, 96, 80, "4x-Tiny"))
    assert item.params.model == "" and "Postprocess upscaler: 4x-Tiny" in item.infotext
    # an exact size (A1111's extras round theirs): the model's passes, then Lanczos to that size, even a smaller one
    for size in ((72, 40), (24, 16)):
        info = submit(engine, model="no-such-model-needed", input=ImageInput(stored.sha256, mode="upscale_fast_2", size=size))
        assert info.state is JobState.FINISHED, info.error
        assert_images_equal(info.result.images[0].image, engine.upscalers.upscale(image, *size, "4x-Tiny"))
    # Vary (Subtle) in Speed: the steps run are the mode's input_steps (18), the schedule twice that
    plan = engine.manager.input_plan(
        GenerationRequest(performance="Speed", steps=30, input=ImageInput(stored.sha256, mode="vary_subtle"))
    )
    assert (plan.steps, int(plan.steps * plan.denoise)) == (36, 18)
    plan = engine.manager.input_plan(GenerationRequest(performance="Quality", input=ImageInput(stored.sha256, mode="upscale_2")))
    assert int(plan.steps * plan.denoise) == 36


def test_latent_hires_fix_equals_diffusers_and_writes_a1111_fields(engine, tiny_sd15_reference):
    hires = HiresFix(scale=2.0, upscaler="Latent", steps=3, denoise=0.6)
    info = submit(engine, model="tiny-sd15", seed=11, hires=hires)
    assert info.state is JobState.FINISHED, info.error
    [item] = info.result.images
    assert item.image.size == (128, 128)
    components = {**tiny_sd15_reference.components, "scheduler": euler(tiny_sd15_reference)}
    base = diffusers.StableDiffusionPipeline(**components)
    task = diffusers.StableDiffusionImg2ImgPipeline(**components)
    for pipe in (base, task):
        pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(11)
    latents = base(PROMPT, num_inference_steps=4, guidance_scale=5.0, generator=generator, output_type="latent", **SIZE).images
    latents = torch.nn.functional.interpolate(latents, size=(16, 16), mode="bilinear", antialias=False)
    expected = task(PROMPT, image=latents, strength=0.6, num_inference_steps=3, guidance_scale=5.0, generator=generator).images[0]
    assert_images_equal(item.image, expected)
    assert info.total_steps == 4 + int(3 * 0.6)
    assert "Size: 64x64" in item.infotext  # A1111: the first pass's size
    assert "Denoising strength: 0.6, Hires upscale: 2, Hires steps: 3, Hires upscaler: Latent" in item.infotext
    fields = request_fields_from_infotext(item.infotext)
    assert fields["hires"] == {"upscaler": "Latent", "scale": 2, "steps": 3, "denoise": 0.6}
    assert GenerationRequest.from_dict(read_metadata(item.path).request).hires == hires


def test_hires_with_an_upscaler_model_a_size_and_its_own_prompt_and_sampler(engine):
    hires = HiresFix(
        resize_x=96, resize_y=0, upscaler="4x-Tiny", denoise=0.5, prompt="a blue barn", sampler="DPM++ 2M", scheduler="Karras"
    )
    info = submit(engine, model="tiny-sdxl", seed=3, hires=hires)
    assert info.state is JobState.FINISHED, info.error
    [item] = info.result.images
    assert item.image.size == (96, 96)
    text = item.infotext
    assert "Hires prompt: a blue barn, Hires resize: 96x96, Hires upscaler: 4x-Tiny, Hires sampler: DPM++ 2M" in text


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"hires": HiresFix(upscaler="R-ESRGAN 9x")}, "hires.upscaler"),
        ({"hires": HiresFix(denoise=1.5)}, "hires.denoise"),
        ({"hires": HiresFix(scale=8)}, "hires.scale"),
        ({"input": ImageInput("0" * 64)}, "input.image"),
        ({"input": ImageInput("nonsense")}, "input.image"),
    ],
)
def test_bad_parts_are_refused_at_submit_naming_the_field(engine, fields, field):
    with pytest.raises(InvalidRequest) as info:
        engine.queue.submit(GenerationRequest(**{**SIZE, "model": "tiny-sd15", **fields}))
    assert info.value.field == field


def test_bad_input_settings_are_refused_naming_the_field(engine):
    stored = engine.inputs.put_image(picture(3))
    for part, field in (
        (ImageInput(stored.sha256, denoise=-0.1), "input.denoise"),
        (ImageInput(stored.sha256, mode="sharpen"), "input.mode"),
        (ImageInput(stored.sha256, resize_mode="stretchy"), "input.resize_mode"),
        (ImageInput(stored.sha256, mode="upscale_2", upscaler="Nope"), "input.upscaler"),
        (ImageInput(stored.sha256, mode="upscale_2", scale=200.0), "input.scale"),
        (ImageInput(stored.sha256, mode="upscale_2", size=(64, 64)), "input.size"),  # only without a diffusion pass
        (ImageInput(stored.sha256, mode="upscale_fast_2", size=(0, 64)), "input.size"),
    ):
        with pytest.raises(InvalidRequest) as info:
            engine.queue.submit(GenerationRequest(**{**SIZE, "model": "tiny-sd15", "input": part}))
        assert info.value.field == field, part


def test_large_images_are_encoded_and_decoded_in_tiles(engine):
    """Above the threshold the VAE works in tiles for that job only (the tiny VAE's tile is 64 pixels)."""
    stored = engine.inputs.put_image(picture(8, (128, 128)))
    request = dict(model="tiny-sd15", seed=2, save_images=False, input=ImageInput(stored.sha256, mode="vary_subtle"))
    whole = submit(engine, **request).result.images[0].image
    engine.manager.vae_tile_pixels = 64 * 64
    try:
        tiled = submit(engine, **request).result.images[0].image
    finally:
        engine.manager.vae_tile_pixels = None
    vae = next(m for m in engine.cache.loaded() if m.name == "tiny-sd15").pipe.vae
    assert vae.use_tiling is False  # as it was, for the next job
    assert tiled.size == whole.size == (128, 128)
    diff = np.abs(np.asarray(tiled).astype(int) - np.asarray(whole).astype(int))
    assert diff.max() > 0  # the tiles were used: their blended seams are not the whole-image result ...
    assert diff.mean() < 20  # ... but the same picture
