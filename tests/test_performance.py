"""Performance modes: the YAML table, availability (offline, no connection, wrong architecture), refusal at
submit, CFG 1 skipping the negative prompt, and modes with their acceleration LoRA end to end."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch

from pipelines.errors import InvalidRequest
from pipelines.jobs.events import JobStatus
from pipelines.loading.configs import sidecar_path
from pipelines.outputs.reading import read_metadata
from pipelines.performance import PerformanceTable
from pipelines.samplers import SamplerTable
from pipelines.types import Architecture, GenerationRequest, JobState, ModelKind
from tests.support.compare import assert_images_match
from tests.support.engine import SIZE, running_engine
from tests.support.engine import run as run_job
from tests.support.lora_files import kohya_lora
from tests.test_engine import pixels, reference

SD1, SDXL = Architecture.SD1, Architecture.SDXL


@pytest.fixture(scope="module")
def table():
    return PerformanceTable.load(samplers=SamplerTable.load())


@pytest.fixture(scope="module")
def perf_models(tmp_path_factory, tiny_sd15_file, tiny_sdxl_file):
    root = tmp_path_factory.mktemp("perf-models")
    (root / "checkpoints").mkdir()
    (root / "loras").mkdir()
    for checkpoint in (tiny_sd15_file, tiny_sdxl_file):
        for file in (checkpoint, sidecar_path(checkpoint)):
            (root / "checkpoints" / file.name).symlink_to(file)
    return root


@pytest.fixture(scope="module")
def engine(perf_models, tmp_path_factory):
    with running_engine(perf_models, tmp_path_factory.mktemp("out")) as services:
        yield services


@pytest.fixture
def lora_file(engine, perf_models):
    """Write a tiny LoRA under a mode's file name in models/loras; removed after the test."""
    written = []

    def write(pipe, arch, name):
        path = perf_models / "loras" / name
        kohya_lora(pipe, arch, path, rank=4, alpha=4.0, seed=3)
        written.append(path)
        engine.registry.refresh()
        return path

    yield write
    for path in written:
        path.unlink(missing_ok=True)
    engine.registry.refresh()


def run(services, **fields):
    return run_job(services, **{"seed": 5, "prompt": "a red boat", **fields})


def test_the_table_holds_fooocus_modes(table):
    assert {"Quality", "Speed", "Extreme Speed", "Lightning", "Hyper-SD"} <= set(table.names())
    assert table.get("Quality").steps == 60 and table.get("Speed").steps == 30
    assert table.get("Quality").cfg_scale is None and not table.get("Speed").loras
    fast = table.get("extreme speed")  # names are matched without case
    assert (fast.steps, fast.cfg_scale, fast.sampler) == (8, 1.0, "LCM")
    assert fast.loras[SD1].repo == "latent-consistency/lcm-lora-sdv1-5"
    assert fast.loras[SDXL].repo == "latent-consistency/lcm-lora-sdxl"
    lightning = table.get("Lightning")
    assert (lightning.steps, lightning.cfg_scale, lightning.sampler, lightning.scheduler) == (4, 1.0, "Euler", "SGM Uniform")
    assert list(lightning.loras) == [SDXL]
    assert lightning.loras[SDXL].repo == "ByteDance/SDXL-Lightning"
    assert lightning.loras[SDXL].filename == "sdxl_lightning_4step_lora.safetensors"
    hyper = table.get("Hyper-SD")
    assert {a: m.filename for a, m in hyper.loras.items()} == {
        SD1: "Hyper-SD15-8steps-lora.safetensors",
        SDXL: "Hyper-SDXL-8steps-lora.safetensors",
    }
    with pytest.raises(InvalidRequest) as err:
        table.get("Turbo")
    assert err.value.field == "performance" and "Quality" in str(err.value)


def test_settings_replace_steps_guidance_and_sampler(table):
    mine = GenerationRequest(steps=20, cfg_scale=6.5, sampler="DPM++ 2M", scheduler="Karras")
    assert table.settings(mine) == mine
    quality = table.settings(mine.replace(performance="quality"))
    assert (quality.steps, quality.cfg_scale, quality.sampler, quality.scheduler, quality.performance) == (
        60,
        6.5,
        "DPM++ 2M",
        "Karras",
        "Quality",
    )
    fast = table.settings(mine.replace(performance="Extreme Speed"))
    assert (fast.steps, fast.cfg_scale, fast.sampler, fast.scheduler) == (8, 1.0, "LCM", "Automatic")
    assert fast.loras == ()  # the LoRA is added once the model's architecture is known (apply)


def test_modes_are_data(tmp_path):
    good = tmp_path / "modes.yaml"
    good.write_text("modes:\n  Turbo:\n    steps: 2\n    cfg_scale: 0\n    sampler: Euler a\n")
    turbo = PerformanceTable.load(samplers=SamplerTable.load(), path=good)
    assert turbo.settings(GenerationRequest(performance="Turbo")).steps == 2
    for body, error in (
        ("modes:\n  Bad:\n    steps: 0\n", "steps"),
        ("modes:\n  Bad:\n    sampler: Nope\n", "Nope"),
        ("modes:\n  Bad:\n    stepz: 3\n", "stepz"),
    ):
        good.write_text(body)
        with pytest.raises((ValueError, InvalidRequest)) as err:
            PerformanceTable.load(samplers=SamplerTable.load(), path=good)
        assert error in str(err.value)


def test_availability_offline_and_for_the_wrong_architecture(engine):
    table = engine.performance
    for mode in ("Quality", "Speed"):
        assert table.availability(mode, SD1) is None and table.availability(mode, SDXL) is None
    message = table.availability("Extreme Speed", SD1)
    assert "lcm-lora-sdv1-5.safetensors" in message and "latent-consistency/lcm-lora-sdv1-5" in message
    assert "HF_HUB_OFFLINE" in message and str(engine.registry.folder(ModelKind.LORA)) in message
    assert "SDXL" in table.availability("Lightning", SD1)


def test_no_connection_is_explained(engine, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # the hub's address points at a local port nothing listens on: a real refused connection
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(
        huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}"
    )
    message = engine.performance.availability("Lightning", SDXL)
    assert "sdxl_lightning_4step_lora.safetensors" in message and "no connection" in message


def test_an_unavailable_mode_is_refused_at_submit_before_any_loading(engine):
    with pytest.raises(InvalidRequest) as err:
        engine.manager.validate(GenerationRequest(model="tiny-sdxl", performance="Lightning"))
    assert err.value.field == "performance" and "sdxl_lightning_4step_lora.safetensors" in str(err.value)
    assert engine.manager.validate(GenerationRequest(model="tiny-sdxl", performance="speed")).performance == "Speed"
    engine.cache.clear()
    loads = engine.cache.loads
    with pytest.raises(InvalidRequest) as err:
        engine.queue.submit(GenerationRequest(model="tiny-sd15", performance="Lightning"))
    assert err.value.field == "performance" and "SDXL" in str(err.value)
    assert engine.cache.loads == loads


class RecordingEncoder:
    """The real encoder, with a record of what it was asked and what it returned."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def encode(self, model, prompt, negative, clip_skip, guidance):
        result = self.inner.encode(model, prompt, negative, clip_skip, guidance)
        self.calls.append((guidance, result))
        return result


@pytest.mark.parametrize("model,ref_fixture", [("tiny-sd15", "tiny_sd15_reference"), ("tiny-sdxl", "tiny_sdxl_reference")])
def test_cfg_1_skips_the_unconditional_pass_and_never_encodes_the_negative(engine, monkeypatch, request, model, ref_fixture):
    reference_pipe = request.getfixturevalue(ref_fixture)
    run(engine, model=model, steps=1)
    [loaded] = [m for m in engine.cache.loaded() if m.name == model]
    pipe = loaded.pipe
    tokenizer = pipe.tokenizer
    negative_ids = tokenizer("ugly watermark", padding="max_length", max_length=77, return_tensors="pt").input_ids
    seen = []
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if getattr(pipe, "text_encoder_2", None) is not None else [])
    hooks = [
        te.register_forward_pre_hook(
            lambda mod, args, kwargs: seen.append(args[0] if args else kwargs["input_ids"]), with_kwargs=True
        )
        for te in encoders
    ]
    recorder = RecordingEncoder(engine.manager.encoder)
    monkeypatch.setattr(engine.manager, "encoder", recorder)
    unet_batches = []
    unet_hook = pipe.unet.register_forward_pre_hook(lambda mod, args: unet_batches.append(args[0].shape[0]))
    try:
        info = run(
            engine, model=model, cfg_scale=1.0, negative_prompt="ugly watermark", steps=3, sampler="Euler", scheduler="Automatic"
        )
        assert info.state is JobState.FINISHED, info.error
        [(guidance, cond)] = recorder.calls
        assert guidance is False and cond.negative_prompt_embeds is None and cond.negative_pooled_prompt_embeds is None
        assert len(seen) == len(encoders)  # one pass per text encoder: the prompt only
        assert not any(torch.equal(ids.cpu(), negative_ids) for ids in seen)
        assert unet_batches == [1, 1, 1]  # no unconditional half
        # and the result is what plain diffusers gives without guidance
        expected = reference(
            reference_pipe,
            diffusers.EulerDiscreteScheduler.from_config(reference_pipe.scheduler.config),
            "a red boat",
            "ugly watermark",
            5,
            3,
            1.0,
        )
        assert np.array_equal(pixels(info.result.images[0].path), expected)
        seen.clear()
        unet_batches.clear()
        run(engine, model=model, cfg_scale=5.0, negative_prompt="ugly watermark", steps=1)
        assert recorder.calls[-1][0] is True and recorder.calls[-1][1].negative_prompt_embeds is not None
        assert any(torch.equal(ids.cpu(), negative_ids) for ids in seen) and unet_batches == [2]
    finally:
        for hook in hooks + [unet_hook]:
            hook.remove()


@pytest.mark.parametrize(
    "mode,model,ref_fixture,file,make_scheduler,steps,sampler",
    [
        (
            "Extreme Speed",
            "tiny-sd15",
            "tiny_sd15_reference",
            "lcm-lora-sdv1-5.safetensors",
            lambda c: diffusers.LCMScheduler.from_config(c),
            8,
            "LCM",
        ),
        (
            "Lightning",
            "tiny-sdxl",
            "tiny_sdxl_reference",
            "sdxl_lightning_4step_lora.safetensors",
            lambda c: diffusers.EulerDiscreteScheduler.from_config(c, timestep_spacing="trailing"),
            4,
            "Euler",
        ),
    ],
)
def test_a_mode_with_its_lora_in_models_loras_runs_end_to_end(
    engine, lora_file, request, mode, model, ref_fixture, file, make_scheduler, steps, sampler
):
    reference_pipe = request.getfixturevalue(ref_fixture)
    arch = SD1 if model == "tiny-sd15" else SDXL
    path = lora_file(reference_pipe, arch, file)
    assert engine.performance.availability(mode, arch) is None
    info = run(engine, model=model, performance=mode, steps=30, cfg_scale=7.0, sampler="DPM++ 2M", negative_prompt="ugly")
    assert info.state is JobState.FINISHED, info.error
    [item] = info.result.images
    params = item.params
    assert (params.steps, params.cfg_scale, params.sampler, params.performance) == (steps, 1.0, sampler, mode)
    assert [(lo.name, lo.weight) for lo in params.loras] == [(path.stem, 1.0)]
    meta = read_metadata(item.path)
    assert meta.params["Performance"] == mode and meta.params["Lora hashes"].startswith(path.stem + ": ")
    # plain diffusers: the mode's scheduler, steps and guidance, with the LoRA loaded the diffusers way
    plain = type(reference_pipe)(**{n: copy.deepcopy(c) for n, c in reference_pipe.components.items()})
    plain.load_lora_weights(str(path), adapter_name="speed")
    plain.fuse_lora(lora_scale=1.0)
    expected = reference(plain, make_scheduler(reference_pipe.scheduler.config), "a red boat", "ugly", 5, steps, 1.0)
    assert_images_match(pixels(item.path), expected, why="diffusers' fuse_lora adds the LoRA in another order")
    # the file's request re-applies the mode, not a second copy of its LoRA
    again = engine.queue.wait(engine.queue.submit(GenerationRequest.from_dict(meta.request)), timeout=120)
    assert [lo.name for lo in again.result.images[0].params.loras] == [path.stem]
    assert np.array_equal(pixels(again.result.images[0].path), pixels(item.path))


def test_a_fooocus_file_name_is_found_too(engine, lora_file, tiny_sdxl_reference):
    lora_file(tiny_sdxl_reference, SDXL, "sdxl_lcm_lora.safetensors")
    assert engine.performance.availability("Extreme Speed", SDXL) is None
    applied = engine.performance.apply(GenerationRequest(performance="Extreme Speed"), SDXL)
    assert [r.name for r in applied.loras] == ["sdxl_lcm_lora"]


def test_a_missing_mode_lora_is_downloaded_from_its_hub_location(engine, monkeypatch, perf_models, tiny_sd15_reference, tmp_path):
    """The hub is simulated (no network here): our code must ask for the right file and install it properly."""
    import huggingface_hub

    source = tmp_path / "hub-copy.safetensors"
    kohya_lora(tiny_sd15_reference, SD1, source, rank=2, alpha=2.0, seed=9)
    asked = []

    def fake_download(repo_id, filename, local_dir=None, tqdm_class=None, **kwargs):
        asked.append((repo_id, filename))
        bar = tqdm_class(total=source.stat().st_size, unit="B")
        bar.update(source.stat().st_size)
        bar.close()
        target = Path(local_dir) / filename
        shutil.copyfile(source, target)
        return str(target)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url, timeout=None: asked.append(url))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    installed = perf_models / "loras" / "Hyper-SD15-8steps-lora.safetensors"
    try:
        job = engine.queue.submit(GenerationRequest(model="tiny-sd15", performance="Hyper-SD", prompt="x", seed=1, **SIZE))
        messages = [e.message for e in engine.queue.events(job, timeout=120) if isinstance(e, JobStatus)]
        info = engine.queue.status(job)
        assert info.state is JobState.FINISHED, info.error
        assert ("ByteDance/Hyper-SD", "Hyper-SD15-8steps-lora.safetensors") in asked
        assert installed.read_bytes() == source.read_bytes()
        assert not [p for p in installed.parent.iterdir() if p.name.startswith(".download-")]
        assert any(m.startswith("Downloading Hyper-SD15-8steps-lora.safetensors") for m in messages)
        params = info.result.images[0].params
        assert (params.steps, params.sampler, params.scheduler) == (8, "DDIM", "SGM Uniform")
        assert [lo.name for lo in params.loras] == ["Hyper-SD15-8steps-lora"]
    finally:
        installed.unlink(missing_ok=True)
        engine.registry.refresh()
