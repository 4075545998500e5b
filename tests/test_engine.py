"""The pipeline manager end to end, on tiny real-architecture models loaded from disk offline.

The reference for every image is a plain diffusers pipeline built from the same in-memory weights the
files were written from, called with `generator=torch.Generator().manual_seed(seed)`.
"""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.config import AppConfig
from pipelines.errors import InvalidRequest, ModelNotFound
from pipelines.jobs.events import ImageReady, JobProgress, JobStatus
from pipelines.outputs.reading import read_metadata
from pipelines.services import build_services
from pipelines.types import GenerationRequest, ImageParams, JobState, SeedBehavior
from tests.support.compare import assert_images_equal
from tests.support.engine import SIZE, run


def reference(pipe, scheduler, prompt, negative, seed, steps, cfg, **extra):
    """Plain diffusers, nothing of ours: the pipeline class with the reference weights."""
    plain = type(pipe)(**{**pipe.components, "scheduler": scheduler})
    plain.set_progress_bar_config(disable=True)
    out = plain(
        prompt,
        negative_prompt=negative,
        num_inference_steps=steps,
        guidance_scale=cfg,
        generator=torch.Generator().manual_seed(seed),
        **SIZE,
        **extra,
    )
    return np.asarray(out.images[0])


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize(
    "model,ref_fixture,sampler,schedule,make_scheduler",
    [
        ("tiny-sd15", "tiny_sd15_reference", "Euler", "Automatic", lambda c: diffusers.EulerDiscreteScheduler.from_config(c)),
        (
            "tiny-sd15",
            "tiny_sd15_reference",
            "DPM++ 2M",
            "Karras",
            lambda c: diffusers.DPMSolverMultistepScheduler.from_config(c, algorithm_type="dpmsolver++", use_karras_sigmas=True),
        ),
        (
            "tiny-sd15-diffusers",
            "tiny_sd15_reference",
            "Euler a",
            "Automatic",
            lambda c: diffusers.EulerAncestralDiscreteScheduler.from_config(c),
        ),
        ("tiny-sdxl", "tiny_sdxl_reference", "Euler", "Automatic", lambda c: diffusers.EulerDiscreteScheduler.from_config(c)),
        ("tiny-sdxl-diffusers", "tiny_sdxl_reference", "DDIM", "Automatic", lambda c: diffusers.DDIMScheduler.from_config(c)),
    ],
)
def test_image_equals_plain_diffusers(engine, request, tiny_models_dir, model, ref_fixture, sampler, schedule, make_scheduler):
    ref_pipe = request.getfixturevalue(ref_fixture)
    info = run(
        engine,
        model=model,
        prompt="a red fox in snow",
        negative_prompt="blurry",
        seed=1234,
        steps=5,
        cfg_scale=6.5,
        sampler=sampler,
        scheduler=schedule,
    )
    assert info.state is JobState.FINISHED, info.error
    [item] = info.result.images
    # A diffusers user swaps samplers on the scheduler config of the files they loaded: for a folder, its
    # own scheduler_config.json; for a single file, the bundled one the reference pipeline was built with.
    folder = tiny_models_dir / "checkpoints" / model
    base = diffusers.DDIMScheduler.load_config(folder / "scheduler") if folder.is_dir() else ref_pipe.scheduler.config
    expected = reference(ref_pipe, make_scheduler(base), "a red fox in snow", "blurry", 1234, 5, 6.5)
    assert_images_equal(pixels(item.path), expected)
    assert_images_equal(np.asarray(item.image), expected)


def test_loaded_weights_equal_written_weights(engine, tiny_sdxl_reference):
    run(engine, model="tiny-sdxl", prompt="x", steps=1, seed=1)
    [loaded] = [m for m in engine.cache.loaded() if m.name == "tiny-sdxl"]
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        ours = getattr(loaded.pipe, component).state_dict()
        theirs = getattr(tiny_sdxl_reference, component).state_dict()
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert torch.equal(ours[key], theirs[key]), f"{component}.{key}"


def test_same_request_same_seed_same_image_and_batch_seeds(engine):
    first = run(engine, model="tiny-sd15", prompt="lighthouse", seed=77, steps=3, image_count=3, sampler="Euler a")
    again = run(engine, model="tiny-sd15", prompt="lighthouse", seed=77, steps=3, image_count=3, sampler="Euler a")
    assert [i.params.seed for i in first.result.images] == [77, 78, 79]
    for a, b in zip(first.result.images, again.result.images):
        assert_images_equal(pixels(a.path), pixels(b.path))
    # image i of a batch is the image a single run with seed+i gives
    single = run(engine, model="tiny-sd15", prompt="lighthouse", seed=79, steps=3, sampler="Euler a")
    assert_images_equal(pixels(single.result.images[0].path), pixels(first.result.images[2].path))
    assert not np.array_equal(pixels(first.result.images[0].path), pixels(first.result.images[1].path))


def test_seed_behaviours_and_random_seed(engine):
    fixed = run(engine, model="tiny-sd15", prompt="a", seed=5, steps=1, image_count=2, seed_behavior=SeedBehavior.FIXED)
    assert [i.params.seed for i in fixed.result.images] == [5, 5]
    randoms = run(engine, model="tiny-sd15", prompt="a", seed=-1, steps=1, image_count=2)
    seeds = [i.params.seed for i in randoms.result.images]
    assert seeds[0] >= 0 and seeds[1] == seeds[0] + 1


def test_saved_files_carry_metadata_that_recreates_the_image(engine):
    info = run(
        engine,
        model="tiny-sd15",
        prompt="a cabin, (snow:1.2)",
        negative_prompt="people",
        seed=9,
        steps=3,
        output_format="webp",
        cfg_scale=5,
    )
    [item] = info.result.images
    assert item.path.suffix == ".webp" and item.path.parent.name.count("-") == 2  # outputs/YYYY-MM-DD/
    meta = read_metadata(item.path)
    assert meta.source_app == "easel"
    assert ImageParams.from_dict(meta.image_params) == item.params
    assert meta.params["Seed"] == 9 and meta.params["Model"] == "tiny-sd15" and meta.params["Sampler"] == "DPM++ 2M"
    assert len(meta.params["Model hash"]) == 10
    # re-run from what the file says: same pixels (webp is lossy, so compare against a png re-run)
    again_request = GenerationRequest.from_dict({**meta.request, "output_format": "png"})
    again = engine.queue.wait(engine.queue.submit(again_request), timeout=60)
    first_png = run(engine, **{**meta.request, "output_format": "png"})
    assert_images_equal(pixels(again.result.images[0].path), pixels(first_png.result.images[0].path))
    # the history index lists it
    entries = engine.history.list("cabin")
    assert any(e.path == item.path for e in entries)


class RecordingControl:
    """Stands in for the queue's JobControl to see every event the manager emits, none coalesced."""

    def __init__(self, request: GenerationRequest):
        from pipelines.types import GenerationResult

        self.job_id = "direct"
        self.request = request
        self.result = GenerationResult("direct")
        self.events: list = []

    def emit(self, event) -> None:
        self.events.append(event)

    def check(self) -> None:
        pass


def test_progress_events_carry_steps_eta_and_previews(engine, monkeypatch):
    monkeypatch.setattr(engine.manager, "preview_interval", 0.0)  # a preview at every step
    control = RecordingControl(GenerationRequest(model="tiny-sd15", prompt="p", steps=4, image_count=2, seed=3, **SIZE))
    result = engine.manager.run(control)
    assert len(result.images) == 2
    progress = [e for e in control.events if isinstance(e, JobProgress)]
    # one "starting" event per image, then one per step
    assert [(p.image_index, p.step) for p in progress] == [(i, s) for i in range(2) for s in range(5)]
    assert all(p.total_steps == 4 and p.image_count == 2 for p in progress)
    assert progress[0].eta_seconds is None and progress[-1].eta_seconds == 0
    assert progress[5].eta_seconds > 0  # image 2 starting: 4 steps still to go
    assert progress[-2].fraction == pytest.approx(0.875)
    previews = [p.preview for p in progress if p.preview is not None]
    assert len(previews) == 2 * 3  # every step but the last of each image
    assert all(im.size == (8, 8) and im.mode == "RGB" for im in previews)
    assert [e.index for e in control.events if isinstance(e, ImageReady)] == [0, 1]


def test_stop_skip_and_failures_through_the_real_pipeline(engine):
    queue = engine.queue
    # a job that fails to load its model does not stop the next
    bad = queue.submit(GenerationRequest(model="no-such-model", prompt="x", **SIZE))
    slow = queue.submit(GenerationRequest(model="tiny-sd15", prompt="slow", steps=40, image_count=3, seed=1, **SIZE))
    after = queue.submit(GenerationRequest(model="tiny-sd15", prompt="after", steps=2, seed=2, **SIZE))
    failed = queue.wait(bad, timeout=60)
    assert failed.state is JobState.FAILED and "no-such-model" in failed.error
    # the failure keeps its type and field (what the API's status code is chosen by)
    assert failed.failure.error_type == "ModelNotFound" and isinstance(failed.failure.exception, ModelNotFound)
    events = queue.events(slow, timeout=60)
    skipped = stopped = False
    for event in events:
        if isinstance(event, JobProgress) and event.image_index == 0 and event.step >= 2 and not skipped:
            assert queue.skip(slow)
            skipped = True
        if isinstance(event, JobProgress) and event.image_index == 1 and event.step >= 2 and not stopped:
            assert queue.cancel(slow)
            stopped = True
    info = queue.status(slow)
    assert info.state is JobState.CANCELLED
    assert info.result.skipped == 1 and info.result.images == []
    assert queue.wait(after, timeout=60).state is JobState.FINISHED


def test_bad_requests_are_refused_with_the_field_named(engine):
    with pytest.raises(InvalidRequest) as err:
        engine.manager.validate(GenerationRequest(width=100))
    assert err.value.field == "width"
    with pytest.raises(InvalidRequest) as err:
        engine.manager.validate(GenerationRequest(sampler="Nope"))
    assert err.value.field == "sampler"
    with pytest.raises(InvalidRequest) as err:
        engine.manager.validate(GenerationRequest(output_format="gif"))
    assert err.value.field == "output_format"
    # the queue's submit is the one way in: it checks before queueing, so nothing bad waits in the line
    waiting = engine.queue.counts()["known"]
    with pytest.raises(InvalidRequest) as err:
        engine.queue.submit(GenerationRequest(model="tiny-sd15", prompt="x", steps=0, **SIZE))
    assert err.value.field == "steps"
    assert engine.queue.counts()["known"] == waiting


def test_switching_back_to_a_model_does_not_reload_it(engine, monkeypatch):
    engine.cache.clear()
    loads = engine.cache.loads
    for model in ("tiny-sd15", "tiny-sdxl", "tiny-sd15", "tiny-sdxl"):
        assert run(engine, model=model, prompt="x", steps=1, seed=1).state is JobState.FINISHED
    assert engine.cache.loads - loads == 2
    # with room for only one model, loading another pushes the least recently used one out
    engine.cache.clear()
    monkeypatch.setattr(engine.cache, "device_budget", 1)
    for model in ("tiny-sd15", "tiny-sdxl"):
        assert run(engine, model=model, prompt="x", steps=1, seed=1).state is JobState.FINISHED
    assert [m.name for m in engine.cache.loaded()] == ["tiny-sdxl"]


def test_loading_status_is_reported(engine):
    engine.cache.clear()
    job_id = engine.queue.submit(GenerationRequest(model="tiny-sdxl-diffusers", prompt="x", steps=1, **SIZE))
    messages = [e.message for e in engine.queue.events(job_id, timeout=60) if isinstance(e, JobStatus)]
    assert any(m.startswith("Loading tiny-sdxl-diffusers") for m in messages)


def test_bf16_on_cpu_is_deterministic_and_finite(tiny_models_dir, tmp_path):
    services = build_services(AppConfig(models_dir=tiny_models_dir, output_dir=tmp_path, device="cpu", precision="bf16"))
    try:
        a = services.queue.wait(
            services.queue.submit(GenerationRequest(model="tiny-sdxl", prompt="x", seed=3, steps=3, **SIZE)), 120
        )
        b = services.queue.wait(
            services.queue.submit(GenerationRequest(model="tiny-sdxl", prompt="x", seed=3, steps=3, **SIZE)), 120
        )
        assert a.state is JobState.FINISHED, a.error
        [loaded] = services.cache.loaded()
        assert loaded.pipe.unet.dtype == torch.bfloat16
        pa, pb = pixels(a.result.images[0].path), pixels(b.result.images[0].path)
        assert np.array_equal(pa, pb) and pa.std() > 0
    finally:
        services.close()
