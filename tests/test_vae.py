"""VAE override: a file from models/vae decodes the job's images, and the checkpoint's own VAE comes back.

The reference is plain diffusers with the VAE the file was written from swapped into the pipeline; that VAE
has the configuration of the checkpoint it decodes for (A1111's rule: weights from the file, config from the model).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pipelines.config import AppConfig
from pipelines.errors import InvalidRequest, JobInterrupted
from pipelines.jobs.events import JobFailed
from pipelines.loading.optimize import optimize_module
from pipelines.loading.vae import find_vae, swapped_vae, vae_name
from pipelines.outputs.reading import read_metadata
from pipelines.services import build_services
from pipelines.types import Architecture, GenerationRequest, GenerationResult, JobState, ModelFormat, ModelKind
from tests.support.ckpt_export import save_vae_file
from tests.support.compare import assert_images_equal
from tests.support.engine import run, running_engine
from tests.support.paths import link_or_copy
from tests.support.random_models import build_model
from tests.support.tiny_models import tiny_vae, tiny_vae_config

SIZE = dict(width=64, height=64)
VAE_SEED = 11  # not the seed of any tiny model's own VAE


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_sd15_file, tiny_sdxl_file) -> Path:
    """checkpoints/ with the tiny SD1.5 and SDXL files; vae/ with VAE files in every layout and some impostors."""
    root = tmp_path_factory.mktemp("vae-models")
    for ckpt in (tiny_sd15_file, tiny_sdxl_file):
        link_or_copy(ckpt, root / "checkpoints" / ckpt.name)
        link_or_copy(ckpt.with_name(ckpt.stem + ".config.json"), root / "checkpoints" / (ckpt.stem + ".config.json"))
    vae = tiny_vae(VAE_SEED)
    vae_dir = root / "vae"
    save_vae_file(vae, vae_dir / "tiny-vae.safetensors")  # the original layout, no prefix (vae-ft-mse, sdxl_vae)
    save_vae_file(vae, vae_dir / "sub" / "prefixed.ckpt", prefix="first_stage_model.")
    save_vae_file(vae, vae_dir / "diffusers-layout.safetensors", layout="diffusers")
    # an unpruned VAE as trainers publish it: the discriminator, loss weights and EMA counters beside the VAE
    leftovers = {
        "loss.logvar": torch.zeros(()),
        "loss.discriminator.main.0.weight": torch.ones(4, 3, 4, 4),
        "model_ema.decay": torch.tensor(0.9999),
        "model_ema.num_updates": torch.tensor(840000),
    }
    save_file({**load_file(str(vae_dir / "tiny-vae.safetensors")), **leftovers}, str(vae_dir / "unpruned.safetensors"))
    # half-precision files, as most VAEs are shared (sdxl-vae-fp16-fix in the diffusers layout, LDM ones pruned to fp16)
    for source, half in (("tiny-vae", "ldm-fp16"), ("diffusers-layout", "diffusers-fp16")):
        state = load_file(str(vae_dir / f"{source}.safetensors"))
        save_file({k: v.half() for k, v in state.items()}, str(vae_dir / f"{half}.safetensors"))
    vae.save_pretrained(str(vae_dir / "folder-vae"))  # config.json + diffusion_pytorch_model.safetensors
    narrow = build_model(
        "vae", {**tiny_vae_config(), "block_out_channels": [8, 8, 16, 16]}, seed=3, dtype=torch.float32, device="cpu"
    )
    save_vae_file(narrow, vae_dir / "wrong-shape.safetensors")
    save_file({"emb_params": torch.zeros(2, 768)}, str(vae_dir / "not-a-vae.safetensors"))
    (vae_dir / "broken.safetensors").write_bytes(b"this is not a model")
    return root


@pytest.fixture(scope="module")
def engine(models, tmp_path_factory):
    with running_engine(models, tmp_path_factory.mktemp("outputs")) as services:
        yield services


def plain(pipe, vae, seed: int, steps: int = 3) -> np.ndarray:
    """Plain diffusers: the reference weights, Euler, and `vae` swapped in (None: the model's own)."""
    components = {**pipe.components, "scheduler": diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)}
    if vae is not None:
        components["vae"] = vae
    reference = type(pipe)(**components)
    reference.set_progress_bar_config(disable=True)
    out = reference(
        "a lighthouse",
        negative_prompt="fog",
        num_inference_steps=steps,
        guidance_scale=6.0,
        generator=torch.Generator().manual_seed(seed),
        **SIZE,
    )
    return np.asarray(out.images[0])


def loaded(services, name: str):
    return next(m for m in services.cache.loaded() if m.name == name)


@pytest.mark.parametrize(
    "model, ref_fixture, arch",
    [("tiny-sdxl", "tiny_sdxl_reference", Architecture.SDXL), ("tiny-sd15", "tiny_sd15_reference", Architecture.SD1)],
)
def test_override_equals_plain_diffusers_with_that_vae_then_the_own_vae_is_back(
    engine, models, request, model, ref_fixture, arch
):
    reference = request.getfixturevalue(ref_fixture)
    job = dict(
        model=model,
        prompt="a lighthouse",
        negative_prompt="fog",
        steps=3,
        cfg_scale=6.0,
        seed=5,
        sampler="Euler",
        scheduler="Automatic",
    )
    info = run(engine, vae="tiny-vae", **job)
    assert info.state is JobState.FINISHED, info.error
    [item] = info.result.images
    # the file's weights with the checkpoint's config (SD1.5: scaling 0.18215; SDXL: 0.13025 and force_upcast)
    file_vae = tiny_vae(VAE_SEED, arch)
    optimize_module("vae", file_vae, torch.device("cpu"))  # frozen and laid out as the app loads a VAE
    expected = plain(reference, file_vae, seed=5)
    assert_images_equal(np.asarray(item.image), expected)
    assert not np.array_equal(expected, plain(reference, None, seed=5))
    # the next job without an override decodes with the checkpoint's own VAE again
    after = run(engine, **job)
    assert_images_equal(np.asarray(after.result.images[0].image), plain(reference, None, seed=5))
    own = loaded(engine, model).pipe.vae
    assert all(torch.equal(v, reference.vae.state_dict()[k]) for k, v in own.state_dict().items())
    # metadata as A1111 writes it: `VAE hash: sha256[:10], VAE: file name`
    digest = hashlib.sha256((models / "vae" / "tiny-vae.safetensors").read_bytes()).hexdigest()[:10]
    assert (item.params.vae, item.params.vae_hash) == ("tiny-vae.safetensors", digest)
    assert f"VAE hash: {digest}, VAE: tiny-vae.safetensors" in item.infotext
    meta = read_metadata(item.path)
    assert meta.params["VAE"] == "tiny-vae.safetensors" and meta.params["VAE hash"] == digest
    assert after.result.images[0].params.vae is None and "VAE" not in after.result.images[0].infotext


def test_every_layout_loads_the_weights_written_and_is_cached(engine, models):
    assert run(engine, model="tiny-sdxl", prompt="x", steps=1, seed=1).state is JobState.FINISHED
    model = loaded(engine, "tiny-sdxl")
    written = tiny_vae(VAE_SEED).state_dict()
    records = {r.name: r for r in engine.registry.list(ModelKind.VAE)}
    assert set(records) == {
        "tiny-vae",
        "sub/prefixed",
        "diffusers-layout",
        "folder-vae",
        "wrong-shape",
        "unpruned",
        "ldm-fp16",
        "diffusers-fp16",
    }
    assert records["folder-vae"].format is ModelFormat.DIFFUSERS  # one model, not its inner file
    halves = {k: v.half().float() for k, v in written.items()}
    for name in ("tiny-vae", "prefixed.ckpt", "diffusers-layout", "unpruned", "ldm-fp16", "diffusers-fp16", "folder-vae"):
        vae = engine.manager.vaes.load(find_vae(engine.registry, name), model)
        state = vae.module.state_dict()
        expected = halves if name.endswith("fp16") else written
        assert state.keys() == expected.keys(), name
        assert all(torch.equal(state[k], expected[k]) for k in expected), name
        assert vae.module.config.scaling_factor == model.pipe.vae.config.scaling_factor or name == "folder-vae"
    loads = engine.manager.vaes.loads
    engine.manager.vaes.load(find_vae(engine.registry, "folder-vae"), model)  # the last one is still loaded
    assert engine.manager.vaes.loads == loads


class StopAtStep:
    def __init__(self, request, step: int):
        self.job_id, self.request, self.result = "direct", request, GenerationResult("direct")
        self.step, self.seen = step, 0

    def emit(self, event) -> None:
        self.seen = getattr(event, "step", self.seen)

    def check(self) -> None:
        if self.seen >= self.step:
            raise JobInterrupted(self.job_id)


def test_a_cancelled_or_failed_job_gives_the_own_vae_back(engine):
    assert run(engine, model="tiny-sdxl", prompt="x", steps=1, seed=1).state is JobState.FINISHED
    model = loaded(engine, "tiny-sdxl")
    own = model.pipe.vae
    request = GenerationRequest(model="tiny-sdxl", vae="tiny-vae", prompt="x", steps=3, seed=1, **SIZE)
    with pytest.raises(JobInterrupted):
        engine.manager.run(StopAtStep(request, 1))
    assert model.pipe.vae is own
    override = engine.manager.vaes.load(find_vae(engine.registry, "tiny-vae"), model)
    with pytest.raises(RuntimeError):
        with swapped_vae(override, [model.pipe, None, model.pipe]):
            assert model.pipe.vae is override.module
            raise RuntimeError("the job failed")
    assert model.pipe.vae is own


@pytest.mark.parametrize(
    "name, words",
    [
        ("not-a-vae", ["not-a-vae.safetensors", "embedding, not a VAE"]),
        ("broken.safetensors", ["broken.safetensors", "is not a VAE"]),
        ("tiny-vea", ["No vae named 'tiny-vea'", "Did you mean: tiny-vae"]),
    ],
)
def test_names_that_are_not_vaes_are_refused_naming_the_file(engine, name, words):
    with pytest.raises(InvalidRequest) as err:
        engine.queue.submit(GenerationRequest(model="tiny-sdxl", vae=name, prompt="x", steps=1, seed=1, **SIZE))
    assert err.value.field == "vae"
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_vae_of_another_shape_fails_the_job_naming_the_file(engine):
    info = run(engine, model="tiny-sdxl", vae="wrong-shape", prompt="x", steps=1, seed=1)
    assert info.state is JobState.FAILED
    assert "wrong-shape.safetensors" in info.error and "do not fit" in info.error
    last = list(engine.queue.events(info.job_id, timeout=1))[-1]
    assert isinstance(last, JobFailed) and last.error_type == "ModelLoadError"
    assert run(engine, model="tiny-sdxl", prompt="x", steps=1, seed=1).state is JobState.FINISHED


def test_automatic_means_the_checkpoint_vae():
    for value in (None, "", "Automatic", "None", "Default"):
        assert vae_name(GenerationRequest(vae=value)) is None
    assert vae_name(GenerationRequest(vae=" sdxl_vae.safetensors ")) == "sdxl_vae.safetensors"


def test_bf16_override_keeps_the_pipeline_precision(models, tmp_path):
    services = build_services(AppConfig(models_dir=models, output_dir=tmp_path, device="cpu", precision="bf16"))
    try:
        info = run(services, model="tiny-sdxl", vae="tiny-vae", prompt="x", seed=3, steps=2)
        assert info.state is JobState.FINISHED, info.error
        image = np.asarray(info.result.images[0].image)
        assert image.std() > 0
        model = loaded(services, "tiny-sdxl")
        override = services.manager.vaes.load(find_vae(services.registry, "tiny-vae"), model)
        assert override.module.dtype == torch.bfloat16 and model.pipe.vae.dtype == torch.bfloat16
        assert override.module is not model.pipe.vae
    finally:
        services.close()
