"""CPU Turbo and its switches: step caching (DeepCache), the TAESD final decode, the mode, the metadata.

Eager and on the tiny models, so quick. The step cache's shallow pass is checked against the full UNet
exactly: fed the deep feature of the same call, it must give the same output bit for bit (it runs the
same modules on the same tensors); on later steps it is an approximation, which is why it is a switch.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from pipelines import read_metadata
from pipelines.loading.configs import sidecar_path
from pipelines.speed.runner import UNetRunner
from pipelines.speed.step_cache import StepCache, shallow_forward
from pipelines.types import Architecture, GenerationRequest
from tests.support.compare import assert_images_equal
from tests.support.engine import run, running_engine
from tests.support.lora_files import kohya_lora
from tests.test_preview_decoder import expected_image, random_taesd, write_original_decoder
from ui.form.fields import FormTables, fields_from_metadata, request_from_form, restore

JOB = dict(model="tiny-sd15", prompt="a red boat", steps=4, seed=5, sampler="Euler", scheduler="Automatic")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_sd15_file, tiny_sdxl_file, tiny_sd15_reference):
    """The tiny checkpoints, TAESD in vae_approx, and a stand-in for the LCM LoRA CPU Turbo uses (random factors:
    a mode's LoRA is patched into the weights like any other, so its values do not matter here)."""
    root = tmp_path_factory.mktemp("turbo-models")
    (root / "checkpoints").mkdir()
    for checkpoint in (tiny_sd15_file, tiny_sdxl_file):
        for file in (checkpoint, sidecar_path(checkpoint)):
            (root / "checkpoints" / file.name).symlink_to(file)
    write_original_decoder(random_taesd(3), root / "vae_approx" / "taesd_decoder.safetensors")
    kohya_lora(tiny_sd15_reference, Architecture.SD1, root / "loras" / "lcm-lora-sdv1-5.safetensors", seed=9)
    return root


@pytest.fixture(scope="module")
def engine(models, tmp_path_factory):
    with running_engine(models, tmp_path_factory.mktemp("out")) as services:
        yield services


@pytest.mark.parametrize("reference", ["tiny_sd15_reference", "tiny_sdxl_reference"])
def test_the_shallow_pass_with_the_same_calls_deep_feature_is_the_full_unet(request, reference):
    pipe = request.getfixturevalue(reference)
    unet = pipe.unet
    runner = UNetRunner(unet)
    try:
        gen = torch.Generator().manual_seed(0)
        kwargs = dict(
            sample=torch.randn(2, 4, 8, 8, generator=gen),
            timestep=torch.tensor(300.0),
            encoder_hidden_states=torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen),
            return_dict=False,
        )
        if unet.config.addition_embed_type == "text_time":
            pooled = pipe.text_encoder_2.config.projection_dim
            kwargs["added_cond_kwargs"] = {
                "text_embeds": torch.randn(2, pooled, generator=gen),
                "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2),
            }
        with torch.inference_mode():
            full = runner.eager(**kwargs)[0]
            shallow = shallow_forward(unet, runner.deep, **kwargs)[0]
        assert torch.equal(full, shallow)
    finally:
        runner.detach()


def test_step_caching_runs_the_deep_blocks_on_every_other_step(engine):
    info = run(engine, **JOB)
    [model] = [m for m in engine.cache.loaded() if m.name == "tiny-sd15"]
    deep_calls = []
    hook = model.pipe.unet.mid_block.register_forward_hook(lambda *_: deep_calls.append(1))
    try:
        plain = run(engine, **JOB)
        full_steps = len(deep_calls)
        deep_calls.clear()
        cached = run(engine, **JOB, step_cache=2)
    finally:
        hook.remove()
    assert full_steps == 4 and len(deep_calls) == 2, "with interval 2, two of four steps reuse the deep features"
    assert info.error is None and plain.error is None and cached.error is None
    a, b = np.asarray(plain.result.images[0].image), np.asarray(cached.result.images[0].image)
    assert not np.array_equal(a, b), "an approximation: the image changes a little"
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 64
    assert cached.result.images[0].params.step_cache == 2


def test_taesd_decodes_the_final_image_when_installed_and_the_metadata_says_so(engine, models, tmp_path):
    taesd = run(engine, **JOB, fast_decode=True)
    image = taesd.result.images[0]
    assert image.params.fast_decode and "Decoder: TAESD" in image.infotext
    full = run(engine, **JOB).result.images[0]
    assert not np.array_equal(np.asarray(image.image), np.asarray(full.image))
    # without the file the full VAE decodes, and the metadata does not claim TAESD
    bare = tmp_path / "models"
    shutil.copytree(models, bare, symlinks=True)
    shutil.rmtree(bare / "vae_approx")
    with running_engine(bare, tmp_path / "out") as services:
        fallback = run(services, **JOB, fast_decode=True).result.images[0]
    assert not fallback.params.fast_decode and "Decoder" not in fallback.infotext
    assert_images_equal(fallback.image, full.image)


def test_taesd_final_image_is_the_tiny_decoders_output(engine, monkeypatch):
    latents = {}
    original = engine.manager.previews.final_decoder

    def spy(*args):
        decode = original(*args)

        def keep(x):
            latents["x"] = x.clone()
            return decode(x)

        return keep

    monkeypatch.setattr(engine.manager.previews, "final_decoder", spy)
    image = run(engine, **JOB, fast_decode=True).result.images[0].image
    assert np.array_equal(np.asarray(image), expected_image(random_taesd(3), latents["x"][:1].float()))


def test_cpu_turbo_sets_few_steps_no_guidance_and_the_approximations(engine):
    info = run(engine, model="tiny-sd15", prompt="a red boat", seed=5, performance="CPU Turbo")
    assert info.error is None, info.error
    params = info.result.images[0].params
    assert (params.steps, params.cfg_scale, params.sampler) == (4, 1.0, "LCM")
    assert params.step_cache == 2 and params.token_merging == 0.5 and params.fast_decode and params.performance == "CPU Turbo"
    assert [lo.name for lo in params.loras] == ["lcm-lora-sdv1-5"]


def test_turbo_images_are_made_again_exactly_from_their_metadata(engine):
    first = run(engine, **JOB, step_cache=2, fast_decode=True).result.images[0]
    fields = fields_from_metadata(read_metadata(first.path))
    assert fields["step_cache"] == 2 and fields["fast_decode"] is True
    tables = FormTables.for_services(engine)
    restored = restore(fields, tables, lambda name, kind: (name, Architecture.SD1), Architecture.SD1).values
    request = request_from_form({**restored, "random_seed": False}, tables)
    assert (request.step_cache, request.fast_decode) == (2, True)
    again = run(engine, **{k: v for k, v in request.to_dict().items() if k in ("step_cache", "fast_decode")}, **JOB)
    assert_images_equal(again.result.images[0].image, first.image)


def test_the_infotext_alone_restores_the_switches(engine):
    from pipelines.outputs.reading import request_fields_from_infotext

    image = run(engine, **JOB, step_cache=3).result.images[0]
    fields = request_fields_from_infotext(image.infotext)
    assert fields["step_cache"] == 3 and fields["fast_decode"] is False
    plain = request_fields_from_infotext("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512")
    assert (plain["step_cache"], plain["fast_decode"]) == (0, False), "an A1111 image restores with the switches off"


def test_step_cache_is_checked_at_submit(engine):
    from pipelines.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as error:
        engine.queue.submit(GenerationRequest(**JOB, step_cache=99))
    assert error.value.field == "step_cache"


def test_estimates_come_from_the_images_made_here(engine):
    run(engine, **JOB)
    seconds = engine.manager.estimate(GenerationRequest(**{**JOB, "width": 64, "height": 64, "image_count": 3}))
    assert seconds is not None and seconds > 0
    assert engine.manager.estimate(GenerationRequest(**{**JOB, "model": "tiny-sdxl"})) is None, "never measured here"


def test_a_step_cache_counts_calls_per_image():
    cache = StepCache(3)
    deep, sample = torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 8, 8)
    assert [cache.reuse_now(deep, sample) for _ in range(6)] == [False, True, True, False, True, True]
    assert not StepCache(2).reuse_now(None, sample)
