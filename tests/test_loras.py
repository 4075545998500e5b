"""LoRAs through the real engine: exact weights, no drift, switching without reloads, errors, metadata.

Models are the session's tiny checkpoints (linked into a models folder of this module's own, so the LoRA
files written here are seen by no other test). References: the in-memory pipelines the checkpoint files were
written from, and plain diffusers with the same LoRA loaded by `load_lora_weights`.
"""

from __future__ import annotations

import copy
import hashlib
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipelines.config import AppConfig
from pipelines.errors import InvalidRequest, LoraError
from pipelines.jobs.events import JobProgress, JobStatus
from pipelines.loading.configs import sidecar_path
from pipelines.loras.patching import LoraManager
from pipelines.outputs.reading import read_metadata
from pipelines.services import build_services
from pipelines.types import Architecture, GenerationRequest, ImageParams, JobState, LoraRef
from tests.support.compare import assert_images_equal, assert_images_match
from tests.support.engine import SIZE, running_engine
from tests.support.engine import run as run_job
from tests.support.lora_files import kohya_lora, peft_lora
from tests.test_engine import pixels, reference

SD15_LORAS = {  # name -> (writer, kwargs)
    "style-a": ("kohya", dict(rank=4, alpha=2.0, seed=1, conv=True)),
    "style-b": ("kohya", dict(rank=2, alpha=None, seed=2)),
    "peft-c": ("peft", dict(rank=4, alpha=8.0, seed=3)),
    "style-d": ("kohya", dict(rank=8, alpha=4.0, seed=4, text_encoders=False)),
    "style-e": ("kohya", dict(rank=1, alpha=1.0, seed=5)),
    "style-f": ("kohya", dict(rank=2, alpha=1.0, seed=6)),
}
SDXL_LORAS = {
    "xl-a": ("kohya", dict(rank=4, alpha=2.0, seed=7, conv=True)),
    "xl-peft": ("peft", dict(rank=2, alpha=4.0, seed=8)),
}


@pytest.fixture(scope="module")
def lora_models(tmp_path_factory, tiny_sd15_file, tiny_sdxl_file, tiny_sd15_reference, tiny_sdxl_reference):
    """A models folder: the tiny checkpoints (linked) and LoRAs written for them; returns (root, written tensors)."""
    root = tmp_path_factory.mktemp("lora-models")
    (root / "checkpoints").mkdir()
    for checkpoint in (tiny_sd15_file, tiny_sdxl_file):
        for file in (checkpoint, sidecar_path(checkpoint)):
            (root / "checkpoints" / file.name).symlink_to(file)
    written = {}
    for table, pipe, arch in (
        (SD15_LORAS, tiny_sd15_reference, Architecture.SD1),
        (SDXL_LORAS, tiny_sdxl_reference, Architecture.SDXL),
    ):
        for name, (kind, kwargs) in table.items():
            writer = kohya_lora if kind == "kohya" else peft_lora
            written[name] = writer(pipe, arch, root / "loras" / f"{name}.safetensors", **kwargs)
    # a file with no LoRA (or any model) layout, and a LoRA layout this app does not apply
    save_file({"foo.bar": torch.ones(3)}, str(root / "loras" / "junk.safetensors"))
    save_file(
        {"lora_unet_x.oft_blocks": torch.ones(4, 2, 2), "lora_unet_x.alpha": torch.tensor(1.0)},
        str(root / "loras" / "broken.safetensors"),
    )
    return root, written


@pytest.fixture(scope="module")
def engine(lora_models, tmp_path_factory):
    with running_engine(lora_models[0], tmp_path_factory.mktemp("out")) as services:
        yield services


JOB = dict(steps=3, seed=11, prompt="a lighthouse at dusk", negative_prompt="blurry", sampler="Euler", scheduler="Automatic")


def run(services, **fields):
    """The module's usual job, with `fields` on top."""
    return run_job(services, **{**JOB, **fields})


def image_of(info) -> np.ndarray:
    assert info.state is JobState.FINISHED, info.error
    return pixels(info.result.images[0].path)


def loaded(services, name):
    run(services, model=name, steps=1)
    [model] = [m for m in services.cache.loaded() if m.name == name]
    return model


def expected_weights(reference_pipe, written, refs):
    """base + Σ weight · alpha/rank · (up @ down), from the tensors the files were written with."""
    out = {}
    for ref in refs:
        for (component, path), (down, up, alpha) in written[ref.name].items():
            key = (component, path)
            if key not in out:
                out[key] = getattr(reference_pipe, component).get_submodule(path).weight.detach().float().clone()
            scale = 1.0 if alpha is None else alpha / down.shape[0]
            product = (up.float().flatten(1) @ down.float().flatten(1)).reshape(out[key].shape)
            out[key] += ref.weight * scale * product
    return out


def assert_same_weights(pipe, reference_pipe):
    for component in ("unet", "text_encoder", "text_encoder_2", "vae"):
        ours, theirs = getattr(pipe, component, None), getattr(reference_pipe, component, None)
        if theirs is None:
            continue
        a, b = ours.state_dict(), theirs.state_dict()
        for key in b:
            assert torch.equal(a[key], b[key]), f"{component}.{key} drifted"


@pytest.mark.parametrize(
    "model,ref_fixture,refs",
    [
        ("tiny-sd15", "tiny_sd15_reference", [LoraRef("style-a", 0.8), LoraRef("style-b", -0.5), LoraRef("peft-c", 1.3)]),
        ("tiny-sdxl", "tiny_sdxl_reference", [LoraRef("xl-a", 1.0), LoraRef("xl-peft", -2.0)]),
    ],
)
def test_weights_in_effect_are_base_plus_the_weighted_sum(engine, lora_models, request, model, ref_fixture, refs):
    reference_pipe = request.getfixturevalue(ref_fixture)
    written = lora_models[1]
    target = loaded(engine, model)
    expected = expected_weights(reference_pipe, written, refs)
    with engine.loras.activate(target, refs) as activation:
        assert [(a.name, a.weight) for a in activation.applied] == [(r.name, r.weight) for r in refs]
        touched = set()
        for (component, path), weight in expected.items():
            module = getattr(target.pipe, component).get_submodule(path)
            torch.testing.assert_close(module.weight, weight, rtol=1e-6, atol=1e-6)
            touched.add(f"{component}.{path}.weight")
        assert {c for c, _ in expected} >= {"unet", "text_encoder"}
        assert any(getattr(target.pipe, c).get_submodule(p).weight.ndim == 4 for c, p in expected)  # a LoCon conv
        for component in ("unet", "text_encoder", "text_encoder_2"):  # nothing else moved
            if getattr(reference_pipe, component, None) is None:
                continue
            ours = getattr(target.pipe, component).state_dict()
            for key, value in getattr(reference_pipe, component).state_dict().items():
                if f"{component}.{key}" not in touched:
                    assert torch.equal(ours[key], value), key
    assert_same_weights(target.pipe, reference_pipe)


@pytest.mark.parametrize(
    "model,ref_fixture,lora",
    [("tiny-sd15", "tiny_sd15_reference", "style-a"), ("tiny-sdxl", "tiny_sdxl_reference", "xl-a")],
)
def test_image_equals_plain_diffusers_with_load_lora_weights(engine, lora_models, request, model, ref_fixture, lora):
    import diffusers

    reference_pipe = request.getfixturevalue(ref_fixture)
    ours = image_of(run(engine, model=model, loras=(LoraRef(lora, 0.7),), cfg_scale=6.0))
    plain = type(reference_pipe)(**{name: copy.deepcopy(c) for name, c in reference_pipe.components.items()})
    plain.load_lora_weights(str(lora_models[0] / "loras" / f"{lora}.safetensors"), adapter_name="x")
    plain.fuse_lora(lora_scale=0.7)
    scheduler = diffusers.EulerDiscreteScheduler.from_config(reference_pipe.scheduler.config)
    expected = reference(plain, scheduler, "a lighthouse at dusk", "blurry", 11, 3, 6.0)
    # the same weights in effect as diffusers' fused LoRA (float32 rounding apart: the sum is done in another order)
    target = [m for m in engine.cache.loaded() if m.name == model][0]
    with engine.loras.activate(target, [LoraRef(lora, 0.7)]):
        for component in ("unet", "text_encoder", "text_encoder_2"):
            if getattr(plain, component, None) is None:
                continue
            fused = {
                k.replace(".base_layer", ""): v for k, v in getattr(plain, component).state_dict().items() if "lora_" not in k
            }
            for key, value in getattr(target.pipe, component).state_dict().items():
                torch.testing.assert_close(value, fused[key], rtol=1e-6, atol=1e-6, msg=f"{component}.{key}")
    assert_images_match(ours, expected, why="we add the LoRA to the weights in another order than diffusers' fuse_lora")
    without = image_of(run(engine, model=model, cfg_scale=6.0))
    assert np.abs(ours.astype(int) - without.astype(int)).mean() > 5  # the LoRA really changed the picture


def test_no_drift_after_any_sequence_of_lora_jobs(engine, monkeypatch, tiny_sd15_reference, lora_models, tmp_path):
    before = image_of(run(engine, model="tiny-sd15"))
    a, b, c = LoraRef("style-a", 1.2), LoraRef("style-b", -0.7), LoraRef("peft-c", 2.0)
    assert run(engine, model="tiny-sd15", loras=(a,)).state is JobState.FINISHED
    assert run(engine, model="tiny-sd15", loras=(a, b, c)).state is JobState.FINISHED
    # cancelled mid-step, with three LoRAs patched in
    job = engine.queue.submit(GenerationRequest(model="tiny-sd15", prompt="x", steps=40, image_count=2, loras=(b, c), **SIZE))
    for event in engine.queue.events(job, timeout=60):
        if isinstance(event, JobProgress) and event.step >= 2:
            engine.queue.cancel(job)
    assert engine.queue.status(job).state is JobState.CANCELLED
    # failed mid-job (after the first image was made), and failed before any patching (a bad LoRA in the set)
    with monkeypatch.context() as patch:
        patch.setattr(engine.manager.keeper, "keep", lambda *args, **kwargs: 1 / 0)
        failed = run(engine, model="tiny-sd15", loras=(a, c))
    assert failed.state is JobState.FAILED and "ZeroDivisionError" in failed.error
    assert run(engine, model="tiny-sd15", loras=(a, LoraRef("xl-a", 1.0))).state is JobState.FAILED

    after = image_of(run(engine, model="tiny-sd15"))  # a job without LoRAs runs on the loaded weights, exactly
    [model] = [m for m in engine.cache.loaded() if m.name == "tiny-sd15"]
    assert_same_weights(model.pipe, tiny_sd15_reference)
    assert np.array_equal(before, after)
    # and the same as a freshly loaded model in a new app
    fresh = build_services(AppConfig(models_dir=lora_models[0], output_dir=tmp_path, device="cpu", precision="fp32"))
    try:
        assert np.array_equal(after, image_of(run(fresh, model="tiny-sd15")))
    finally:
        fresh.close()


def test_the_same_request_gives_the_same_bytes_after_lora_jobs_and_model_switches(engine, monkeypatch):
    """The engine's own reproducibility is exact, on any CPU: nothing a job leaves behind (weights patched and
    restored, another model used, this one pushed out and loaded again) changes the next picture by a bit."""
    request = dict(model="tiny-sdxl", cfg_scale=6.0)
    first = run(engine, **request)
    assert run(engine, model="tiny-sdxl", loras=(LoraRef("xl-a", 0.9), LoraRef("xl-peft", -1.5))).state is JobState.FINISHED
    assert run(engine, model="tiny-sd15", loras=(LoraRef("style-a", 0.8),)).state is JobState.FINISHED
    again = run(engine, **request)
    # with room for one model only, switching loads each from disk again
    monkeypatch.setattr(engine.cache, "device_budget", 1)
    engine.cache.clear()
    loads = engine.cache.loads
    assert run(engine, model="tiny-sd15").state is JobState.FINISHED
    reloaded = run(engine, **request)
    assert engine.cache.loads - loads == 2
    for info in (again, reloaded):
        assert_images_equal(image_of(info), image_of(first))
        assert info.result.images[0].path.read_bytes() == first.result.images[0].path.read_bytes()


def test_a_set_used_by_consecutive_jobs_stays_patched_and_each_job_gets_exactly_its_own(engine, lora_models, tiny_sd15_reference):
    """As in A1111: the same LoRA set job after job is patched in once; any other set (or none) restores the
    loaded weights first, so what a job gets never depends on what ran before it."""
    a, b = (LoraRef("style-a", 0.9),), (LoraRef("style-b", -0.6), LoraRef("peft-c", 1.1))
    fresh = {}
    for name, refs in (("a", a), ("b", b), ("none", ())):  # each set from the loaded weights
        run(engine, model="tiny-sd15")
        fresh[name] = image_of(run(engine, model="tiny-sd15", loras=refs))
    patches = engine.loras.patches
    first, again = run(engine, model="tiny-sd15", loras=a), run(engine, model="tiny-sd15", loras=a)
    assert engine.loras.patches == patches + 1  # the second job found the set patched in
    assert np.array_equal(image_of(first), fresh["a"]) and np.array_equal(image_of(again), fresh["a"])
    assert np.array_equal(image_of(run(engine, model="tiny-sd15", loras=b)), fresh["b"])  # b right after a
    half = (LoraRef("style-a", 0.5),)
    assert np.array_equal(
        image_of(run(engine, model="tiny-sd15", loras=half)), image_of(run(engine, model="tiny-sd15", loras=half))
    )
    assert engine.loras.patches == patches + 3  # another weight is another set (patched once for its two jobs)
    assert np.array_equal(image_of(run(engine, model="tiny-sd15")), fresh["none"])
    # a LoRA file replaced on disk (same name, other tensors) is another set too
    path = lora_models[0] / "loras" / "style-a.safetensors"
    original = path.read_bytes()
    try:
        run(engine, model="tiny-sd15", loras=a)
        kohya_lora(tiny_sd15_reference, Architecture.SD1, path, rank=4, seed=99)
        changed = image_of(run(engine, model="tiny-sd15", loras=a))
        assert not np.array_equal(changed, fresh["a"])
    finally:
        path.write_bytes(original)
    assert np.array_equal(image_of(run(engine, model="tiny-sd15", loras=a)), fresh["a"])


def test_a_model_kept_with_loras_refines_another_model_without_them(engine, lora_models, tiny_sdxl_file):
    """A checkpoint left with a LoRA set by a job of its own serves the next job as its refiner: the refiner stage
    runs on its loaded weights, as the LoRAs are the base's."""
    folder = lora_models[0] / "checkpoints"
    for file in (tiny_sdxl_file, sidecar_path(tiny_sdxl_file)):  # the same file under a second name: another model
        shutil.copyfile(file, folder / file.name.replace("tiny-sdxl", "tiny-sdxl-second"))
    engine.registry.refresh()
    try:
        refined = dict(model="tiny-sdxl", refiner="tiny-sdxl-second", refiner_switch=0.5, steps=4)
        expected = image_of(run(engine, **refined))
        assert run(engine, model="tiny-sdxl-second", loras=(LoraRef("xl-a", 1.5),)).state is JobState.FINISHED
        assert np.array_equal(image_of(run(engine, **refined)), expected)
    finally:
        for copy_ in folder.glob("tiny-sdxl-second*"):
            copy_.unlink()
        engine.registry.refresh()


def test_five_loras_at_once_and_limits(engine):
    five = tuple(LoraRef(n, w) for n, w in zip(["style-a", "style-b", "peft-c", "style-d", "style-e"], [1, -1, 0.5, 2, -2]))
    info = run(engine, model="tiny-sd15", loras=five)
    assert info.state is JobState.FINISHED, info.error
    assert [(lo.name, lo.weight) for lo in info.result.images[0].params.loras] == [(r.name, r.weight) for r in five]
    with pytest.raises(InvalidRequest) as err:
        engine.manager.validate(GenerationRequest(loras=five + (LoraRef("style-f", 1.0),)))
    assert err.value.field == "loras"
    with pytest.raises(InvalidRequest) as err:
        engine.manager.validate(GenerationRequest(loras=(LoraRef("style-a", 2.5),)))
    assert err.value.field == "loras" and "style-a" in str(err.value)
    # a disabled sixth does not count
    assert engine.manager.validate(GenerationRequest(loras=five + (LoraRef("style-f", 1.0, enabled=False),)))


def test_weight_zero_or_disabled_has_no_effect_and_is_not_read(engine):
    before = image_of(run(engine, model="tiny-sd15"))
    reads = engine.loras.reads
    info = run(
        engine, model="tiny-sd15", loras=(LoraRef("broken", 0.0), LoraRef("junk", 1.0, enabled=False), LoraRef("style-a", 0))
    )
    assert np.array_equal(image_of(info), before)
    assert engine.loras.reads == reads
    assert info.result.images[0].params.loras == ()
    assert "Lora hashes" not in read_metadata(info.result.images[0].path).params


def test_unusable_loras_fail_naming_the_file_unless_skipping_was_asked_for(engine):
    cases = {
        "xl-a": ("xl-a.safetensors", "SDXL"),  # made for another architecture
        "junk": ("junk.safetensors", "cannot be used as a LoRA"),  # no LoRA layout at all
        "broken": ("broken.safetensors", "a LyCORIS OFT"),  # a layout that is not applied
        "no-such-lora": ("no-such-lora", "No lora named"),
    }
    for name, (file, reason) in cases.items():
        info = run(engine, model="tiny-sd15", loras=(LoraRef("style-a", 1.0), LoraRef(name, 1.0)))
        assert info.state is JobState.FAILED, name
        assert file in info.error and reason in info.error, info.error
    only_a = image_of(run(engine, model="tiny-sd15", loras=(LoraRef("style-a", 0.9),)))
    job = engine.queue.submit(
        GenerationRequest(
            model="tiny-sd15",
            prompt="a lighthouse at dusk",
            negative_prompt="blurry",
            steps=3,
            seed=11,
            sampler="Euler",
            scheduler="Automatic",
            skip_invalid_loras=True,
            loras=(LoraRef("xl-a", 1.0), LoraRef("style-a", 0.9), LoraRef("junk", 1.0)),
            **SIZE,
        )
    )
    messages = [e.message for e in engine.queue.events(job, timeout=60) if isinstance(e, JobStatus)]
    info = engine.queue.status(job)
    assert np.array_equal(image_of(info), only_a)
    assert any("xl-a.safetensors" in m and "Skipped" in m for m in messages)
    assert any("junk.safetensors" in m for m in messages)
    assert [lo.name for lo in info.result.images[0].params.loras] == ["style-a"]


def test_switching_lora_sets_never_reloads_the_checkpoint_or_rereads_files(engine):
    run(engine, model="tiny-sd15")
    loads = engine.cache.loads
    seen_before = engine.loras.reads
    sets = [("style-a",), ("style-b",), ("style-a", "style-b"), (), ("style-a",), ("style-e", "style-b")]
    for names in sets:
        assert run(engine, model="tiny-sd15", loras=tuple(LoraRef(n, 0.6) for n in names)).state is JobState.FINISHED
    assert engine.cache.loads == loads
    assert engine.loras.reads - seen_before <= 3  # each file at most once, even when switching back
    again = engine.loras.reads
    run(engine, model="tiny-sd15", loras=(LoraRef("style-a", 1.0), LoraRef("style-e", 1.0)))
    assert engine.loras.reads == again


def test_lora_file_cache_is_bounded(engine, lora_models):
    manager = LoraManager(engine.registry, engine.manager.loader.hashes, cache_bytes=1)
    for name in ("style-a", "style-b", "style-a"):
        manager.read(manager.record(name))
    assert manager.reads == 3  # only the last file stays when one is already over the budget
    roomy = LoraManager(engine.registry, engine.manager.loader.hashes)
    for name in ("style-a", "style-b", "style-a"):
        roomy.read(roomy.record(name))
    assert roomy.reads == 2 and roomy.cached_bytes() > 0


def autov3(path) -> str:
    """sha256 of a safetensors file's bytes after its header, as A1111 computes a LoRA's short hash."""
    data = path.read_bytes()
    start = 8 + int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[start:]).hexdigest()[:12]


def test_lora_names_weights_and_hashes_in_the_saved_png(engine, lora_models):
    loras = (LoraRef("style-a", 0.8), LoraRef("peft-c", -0.5))
    info = run(engine, model="tiny-sd15", loras=loras)
    [item] = info.result.images
    meta = read_metadata(item.path)
    folder = lora_models[0] / "loras"
    assert meta.params["Lora hashes"] == (
        f"style-a: {autov3(folder / 'style-a.safetensors')}, peft-c: {autov3(folder / 'peft-c.safetensors')}"
    )
    assert meta.params["Lora weights"] == "style-a: 0.8, peft-c: -0.5"
    assert ImageParams.from_dict(meta.image_params).loras == item.params.loras
    assert GenerationRequest.from_dict(meta.request).loras == loras  # re-running the file asks for the same LoRAs


def test_lora_training_metadata_is_available(engine):
    info = engine.lora_info("style-a")
    assert info.name == "style-a" and info.architecture == "SD 1.x"
    with pytest.raises(LoraError) as err:
        engine.lora_info("junk")
    assert "junk.safetensors" in str(err.value)


def test_bf16_model_is_restored_bit_for_bit(lora_models, tmp_path, tiny_sd15_reference):
    """The precision real use runs in: patched weights round once, and the originals come back exactly."""
    services = build_services(AppConfig(models_dir=lora_models[0], output_dir=tmp_path, device="cpu", precision="bf16"))
    try:
        before = image_of(run(services, model="tiny-sd15"))
        [model] = services.cache.loaded()
        originals = {k: v.clone() for k, v in model.pipe.unet.state_dict().items()}
        refs = [LoraRef("style-a", 1.5), LoraRef("peft-c", -0.8)]
        expected = expected_weights(tiny_sd15_reference, lora_models[1], refs)
        with services.loras.activate(model, refs):
            for (component, path), weight in expected.items():
                module = getattr(model.pipe, component).get_submodule(path)
                assert module.weight.dtype == torch.bfloat16
                torch.testing.assert_close(module.weight.float(), weight, rtol=2**-7, atol=1e-3)
        assert run(services, model="tiny-sd15", loras=tuple(refs)).state is JobState.FINISHED
        assert np.array_equal(image_of(run(services, model="tiny-sd15")), before)
        assert all(torch.equal(v, originals[k]) for k, v in model.pipe.unet.state_dict().items())
    finally:
        services.close()
