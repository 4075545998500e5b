"""The SDXL refiner through the real pipeline manager, against plain diffusers doing the same two calls.

The reference is diffusers' own recipe: the base with `denoising_end=switch, output_type="latent"`, then a
StableDiffusionXLImg2ImgPipeline with `denoising_start=switch`, one `torch.Generator().manual_seed(seed)`
passed to both, built from the in-memory pipelines the files on disk were written from.
"""

from __future__ import annotations

import hashlib

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.config import AppConfig
from pipelines.errors import ImageSkipped, InvalidRequest, JobInterrupted
from pipelines.generation.refiner import refiner_name, split_steps
from pipelines.jobs.events import ImageReady, JobProgress
from pipelines.outputs.metadata import infotext
from pipelines.outputs.reading import read_metadata
from pipelines.samplers import SamplerTable
from pipelines.services import build_services
from pipelines.types import GenerationRequest, GenerationResult, ImageParams, JobState
from tests.support.compare import assert_images_equal
from tests.support.engine import SIZE, run

PROMPT, NEGATIVE = "a red fox in snow", "blurry"


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def plain_base_and_refiner(base_ref, refiner_pipe, scheduler, seed, steps, cfg, switch) -> np.ndarray:
    """diffusers' ensemble-of-experts recipe, nothing of ours."""
    base = diffusers.StableDiffusionXLPipeline(**{**base_ref.components, "scheduler": scheduler(base_ref.scheduler.config)})
    refiner = diffusers.StableDiffusionXLImg2ImgPipeline(
        **{**refiner_pipe.components, "scheduler": scheduler(refiner_pipe.scheduler.config)},
        requires_aesthetics_score=refiner_pipe.config.requires_aesthetics_score,
        force_zeros_for_empty_prompt=refiner_pipe.config.force_zeros_for_empty_prompt,
    )
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    common = dict(negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=cfg, generator=generator)
    latents = base(PROMPT, denoising_end=switch, output_type="latent", **SIZE, **common).images
    return np.asarray(refiner(PROMPT, image=latents, denoising_start=switch, **common).images[0])


def test_base_plus_refiner_checkpoint_equals_plain_diffusers(
    engine, tiny_sdxl_reference, tiny_sdxl_refiner_reference, tiny_sdxl_refiner_file
):
    info = run(
        engine,
        model="tiny-sdxl",
        refiner="tiny-sdxl-refiner",
        refiner_switch=0.6,
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        seed=321,
        steps=5,
        cfg_scale=5.0,
        sampler="Euler a",
        scheduler="Automatic",
    )
    assert info.state is JobState.FINISHED, info.error
    [item] = info.result.images
    expected = plain_base_and_refiner(
        tiny_sdxl_reference, tiny_sdxl_refiner_reference, diffusers.EulerAncestralDiscreteScheduler.from_config, 321, 5, 5.0, 0.6
    )
    assert_images_equal(np.asarray(item.image), expected)
    assert_images_equal(pixels(item.path), expected)
    # the base alone gives another image: the refiner did work
    alone = run(
        engine,
        model="tiny-sdxl",
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        seed=321,
        steps=5,
        cfg_scale=5.0,
        sampler="Euler a",
        scheduler="Automatic",
    )
    assert not np.array_equal(np.asarray(alone.result.images[0].image), expected)
    # metadata: name, hash and switch, as A1111 writes them
    digest = hashlib.sha256(tiny_sdxl_refiner_file.read_bytes()).hexdigest()[:10]
    params = item.params
    assert (params.refiner, params.refiner_hash, params.refiner_switch) == ("tiny-sdxl-refiner", digest, 0.6)
    assert f"Refiner: tiny-sdxl-refiner [{digest}], Refiner switch at: 0.6" in item.infotext
    meta = read_metadata(item.path)
    assert ImageParams.from_dict(meta.image_params) == params
    assert meta.params["Refiner"] == f"tiny-sdxl-refiner [{digest}]" and meta.params["Refiner switch at"] == 0.6
    assert meta.request["refiner"] == "tiny-sdxl-refiner"
    fields = meta.request_fields()
    assert (fields["refiner"], fields["refiner_switch"]) == ("tiny-sdxl-refiner", 0.6)
    # the alone image carries no refiner
    assert alone.result.images[0].params.refiner is None and "Refiner" not in alone.result.images[0].infotext


def test_an_sdxl_checkpoint_as_refiner_equals_plain_diffusers(engine, tiny_sdxl_reference):
    """Any SDXL checkpoint can refine: its pipeline is reused through from_pipe (micro-conditioning of a base)."""
    info = run(
        engine,
        model="tiny-sdxl",
        refiner="tiny-sdxl-diffusers",
        refiner_switch=0.5,
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        seed=8,
        steps=4,
        cfg_scale=6.0,
        sampler="DPM++ 2M",
        scheduler="Karras",
    )
    assert info.state is JobState.FINISHED, info.error

    def dpm(config):
        return diffusers.DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", use_karras_sigmas=True)

    img2img = diffusers.StableDiffusionXLImg2ImgPipeline.from_pipe(tiny_sdxl_reference)
    expected = plain_base_and_refiner(tiny_sdxl_reference, img2img, dpm, 8, 4, 6.0, 0.5)
    assert_images_equal(np.asarray(info.result.images[0].image), expected)


def test_prompt_editing_goes_on_in_the_refiners_stage(engine, tiny_sdxl_reference, tiny_sdxl_refiner_reference):
    """[red:blue:3] of 5 Euler steps: steps 0-3 see red (base 0-2, refiner 3), step 4 (the refiner's) sees blue."""
    info = run(
        engine,
        model="tiny-sdxl",
        refiner="tiny-sdxl-refiner",
        refiner_switch=0.6,
        prompt="a [red:blue:3] fox",
        negative_prompt=NEGATIVE,
        seed=12,
        steps=5,
        cfg_scale=5.0,
        sampler="Euler",
        scheduler="Automatic",
    )
    assert info.state is JobState.FINISHED, info.error
    euler = diffusers.EulerDiscreteScheduler.from_config
    base = diffusers.StableDiffusionXLPipeline(
        **{**tiny_sdxl_reference.components, "scheduler": euler(tiny_sdxl_reference.scheduler.config)}
    )
    ref = tiny_sdxl_refiner_reference
    refiner = diffusers.StableDiffusionXLImg2ImgPipeline(
        **{**ref.components, "scheduler": euler(ref.scheduler.config)},
        requires_aesthetics_score=ref.config.requires_aesthetics_score,
        force_zeros_for_empty_prompt=ref.config.force_zeros_for_empty_prompt,
    )
    generator = torch.Generator().manual_seed(12)
    common = dict(num_inference_steps=5, guidance_scale=5.0, generator=generator)
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)
    latents = base("a red fox", negative_prompt=NEGATIVE, denoising_end=0.6, output_type="latent", **SIZE, **common).images
    with torch.no_grad():
        red = refiner.encode_prompt("a red fox", negative_prompt=NEGATIVE, device="cpu")
        blue = refiner.encode_prompt("a blue fox", negative_prompt=NEGATIVE, device="cpu")

    def to_blue_after_first(_pipe, i, _t, tensors):
        if i != 0:
            return {}
        return {"prompt_embeds": torch.cat([blue[1], blue[0]]), "add_text_embeds": torch.cat([blue[3], blue[2]])}

    expected = refiner(
        prompt_embeds=red[0],
        negative_prompt_embeds=red[1],
        pooled_prompt_embeds=red[2],
        negative_pooled_prompt_embeds=red[3],
        image=latents,
        denoising_start=0.6,
        **common,
        callback_on_step_end=to_blue_after_first,
        callback_on_step_end_tensor_inputs=["prompt_embeds", "add_text_embeds"],
    ).images[0]
    assert_images_equal(np.asarray(info.result.images[0].image), np.asarray(expected))


class ScriptedControl:
    """The queue's JobControl, recording every event and raising skip/stop at chosen (image, step)s."""

    def __init__(self, request: GenerationRequest, skip_at=None, stop_at=None):
        self.job_id = "direct"
        self.request = request
        self.result = GenerationResult("direct")
        self.events: list = []
        self.skip_at, self.stop_at = skip_at, stop_at

    def emit(self, event) -> None:
        self.events.append(event)

    def check(self) -> None:
        progress = [e for e in self.events if isinstance(e, JobProgress)]
        where = (progress[-1].image_index, progress[-1].step) if progress else None
        if where is not None and where == self.stop_at:
            raise JobInterrupted(self.job_id)
        if where is not None and where == self.skip_at:
            self.skip_at = None
            raise ImageSkipped(self.job_id)


def test_progress_counts_both_stages_as_one_run_of_steps(engine, monkeypatch):
    monkeypatch.setattr(engine.manager, "preview_interval", 0.0)
    request = GenerationRequest(
        model="tiny-sdxl",
        refiner="tiny-sdxl-refiner",
        refiner_switch=0.6,
        prompt="p",
        steps=5,
        image_count=2,
        seed=3,
        sampler="Euler",
        scheduler="Automatic",
        **SIZE,
    )
    control = ScriptedControl(request)
    result = engine.manager.run(control)
    assert len(result.images) == 2
    progress = [e for e in control.events if isinstance(e, JobProgress)]
    # 5 Euler steps at switch 0.6: timesteps 801, 601, 401 go to the base, 201 and 1 to the refiner
    assert [(p.image_index, p.step) for p in progress] == [(i, s) for i in range(2) for s in range(6)]
    assert all(p.total_steps == 5 and p.image_count == 2 for p in progress)
    assert progress[-1].eta_seconds == 0 and progress[6].eta_seconds > 0
    assert progress[4].fraction == pytest.approx(0.4)  # image 0, step 4 of 5: in the refiner's stage
    assert all(p.preview is not None for p in progress if 0 < p.step < 5)  # previews from both stages


def test_skip_and_stop_work_in_both_stages(engine):
    request = GenerationRequest(
        model="tiny-sdxl",
        refiner="tiny-sdxl-refiner",
        refiner_switch=0.6,
        prompt="p",
        steps=5,
        image_count=3,
        seed=3,
        sampler="Euler",
        scheduler="Automatic",
        **SIZE,
    )
    # skip image 0 in the refiner's stage (step 4), stop image 1 in the base's stage (step 2)
    control = ScriptedControl(request, skip_at=(0, 4), stop_at=(1, 2))
    with pytest.raises(JobInterrupted):
        engine.manager.run(control)
    steps = [(p.image_index, p.step) for p in control.events if isinstance(p, JobProgress)]
    assert steps[-1] == (1, 2) and (0, 5) not in steps
    assert control.result.skipped == 1 and not [e for e in control.events if isinstance(e, ImageReady)]
    # the next job still works and both models stay in the cache
    assert run(engine, model="tiny-sdxl", refiner="tiny-sdxl-refiner", prompt="x", steps=2, seed=1).state is JobState.FINISHED


@pytest.mark.parametrize(
    "fields, field, words",
    [
        (dict(model="tiny-sd15", refiner="tiny-sdxl-refiner"), "refiner", ["SDXL base", "tiny-sd15", "SD 1.x"]),
        (dict(model="tiny-sdxl", refiner="tiny-sd15"), "refiner", ["must be an SDXL model", "tiny-sd15", "SD 1.x"]),
        (dict(model="tiny-sdxl", refiner="tiny-sdxl-refinr"), "refiner", ["Did you mean", "tiny-sdxl-refiner"]),
        (dict(model="tiny-sdxl-refiner"), "model", ["is an SDXL refiner", "base model"]),
        (dict(model="tiny-sdxl", refiner="tiny-sdxl-refiner", refiner_switch=0.0), "refiner_switch", ["above 0"]),
    ],
)
def test_bad_combinations_are_refused_at_submit(engine, fields, field, words):
    request = GenerationRequest(prompt="x", steps=2, **SIZE, **fields)
    known = engine.queue.counts()["known"]
    with pytest.raises(InvalidRequest) as err:
        engine.queue.submit(request)
    assert err.value.field == field
    assert all(w in str(err.value) for w in words), str(err.value)
    assert engine.queue.counts()["known"] == known  # never queued


def test_no_refiner_and_switch_at_one_mean_the_base_alone(engine):
    assert refiner_name(GenerationRequest(refiner=None)) is None
    assert refiner_name(GenerationRequest(refiner="None")) is None
    assert refiner_name(GenerationRequest(refiner="tiny-sdxl-refiner", refiner_switch=1.0)) is None
    assert refiner_name(GenerationRequest(refiner=" tiny-sdxl-refiner ")) == "tiny-sdxl-refiner"
    common = dict(model="tiny-sdxl", prompt="x", steps=3, seed=4)
    plain = run(engine, **common).result.images[0]
    at_one = run(engine, refiner="tiny-sdxl-refiner", refiner_switch=1.0, **common).result.images[0]
    assert_images_equal(np.asarray(plain.image), np.asarray(at_one.image))
    assert at_one.params.refiner is None and "Refiner" not in infotext(at_one.params)


def test_base_and_refiner_share_the_cache_and_stay_while_in_use(engine, monkeypatch):
    engine.cache.clear()
    monkeypatch.setattr(engine.cache, "device_budget", 1)  # room for one model only
    assert run(engine, model="tiny-sdxl", refiner="tiny-sdxl-refiner", prompt="x", steps=2, seed=1).state is JobState.FINISHED
    assert sorted(m.name for m in engine.cache.loaded()) == ["tiny-sdxl", "tiny-sdxl-refiner"]
    loads = engine.cache.loads
    assert run(engine, model="tiny-sdxl", refiner="tiny-sdxl-refiner", prompt="y", steps=2, seed=1).state is JobState.FINISHED
    assert engine.cache.loads == loads  # nothing read again
    assert run(engine, model="tiny-sd15", prompt="x", steps=1, seed=1).state is JobState.FINISHED
    assert [m.name for m in engine.cache.loaded()] == ["tiny-sd15"]  # not in use any more: pushed out


SAMPLERS = SamplerTable.load()


@pytest.mark.parametrize(
    "sampler, schedule",
    [
        ("Euler", "Automatic"),
        ("Heun", "Automatic"),
        ("DPM2", "Karras"),
        ("DPM++ 2M", "Karras"),
        ("DDIM", "Automatic"),
        ("UniPC", "Automatic"),
    ],
)
@pytest.mark.parametrize("steps, switch", [(4, 0.6), (5, 0.8), (3, 0.25)])
def test_step_split_matches_what_diffusers_runs(
    tiny_sdxl_reference, tiny_sdxl_refiner_reference, sampler, schedule, steps, switch
):
    """split_steps predicts the number of step callbacks of each plain diffusers call (first and second order)."""
    choice = SAMPLERS.resolve(sampler, schedule)
    base = diffusers.StableDiffusionXLPipeline(**tiny_sdxl_reference.components)
    refiner = diffusers.StableDiffusionXLImg2ImgPipeline(**tiny_sdxl_refiner_reference.components, requires_aesthetics_score=True)
    calls = {"base": 0, "refiner": 0}

    def counter(stage):
        def callback(pipe, i, t, tensors):
            calls[stage] += 1
            return {}

        return callback

    base.scheduler = SAMPLERS.make(tiny_sdxl_reference.scheduler.config, choice)
    refiner.scheduler = SAMPLERS.make(tiny_sdxl_refiner_reference.scheduler.config, choice)
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    common = dict(num_inference_steps=steps, guidance_scale=1.0, generator=generator, output_type="latent")
    latents = base("x", denoising_end=switch, callback_on_step_end=counter("base"), **SIZE, **common).images
    refiner("x", image=latents, denoising_start=switch, callback_on_step_end=counter("refiner"), **common)
    predicted = split_steps(
        SAMPLERS.make(tiny_sdxl_reference.scheduler.config, choice),
        SAMPLERS.make(tiny_sdxl_refiner_reference.scheduler.config, choice),
        steps,
        switch,
    )
    assert predicted == (calls["base"], calls["refiner"])


def test_bf16_refiner_from_an_sdxl_checkpoint_keeps_its_precision(tiny_models_dir, tmp_path):
    """from_pipe casts shared modules to float32 unless told otherwise; the cached model must stay bf16."""
    services = build_services(AppConfig(models_dir=tiny_models_dir, output_dir=tmp_path, device="cpu", precision="bf16"))
    try:
        info = run(services, model="tiny-sdxl", refiner="tiny-sdxl-diffusers", refiner_switch=0.5, prompt="x", seed=3, steps=2)
        assert info.state is JobState.FINISHED, info.error
        loaded = {m.name: m for m in services.cache.loaded()}
        assert loaded["tiny-sdxl-diffusers"].pipe.unet.dtype == torch.bfloat16
        assert loaded["tiny-sdxl"].pipe.unet.dtype == torch.bfloat16
        assert np.asarray(info.result.images[0].image).std() > 0
    finally:
        services.close()
