"""The compiled UNet end to end, on the tiny SD1.5 model: the first job eager while a child process compiles,
then compiled images within tolerance of eager, no recompile for a LoRA or another size, and a second
engine on the same cache folder that loads the compiled graph instead of compiling it.

One compile (about a minute on two cores; more on a busy machine) serves the whole module.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from torch._dynamo.utils import counters

from pipelines import services as services_module
from pipelines.loading.configs import sidecar_path
from pipelines.speed.compiler import UNetCompiler, compiler_problem
from pipelines.speed.runner import UNetRunner, unet_module
from pipelines.types import Architecture, LoraRef
from tests.support.compare import assert_images_match
from tests.support.engine import run, running_engine
from tests.support.lora_files import kohya_lora

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(compiler_problem() is not None, reason=f"cannot compile here: {compiler_problem()}"),
]

MODEL = "tiny-sd15"
# 128x128: the tiny UNet's deepest feature map is then 2x2 (at 64x64 it is 1 pixel, which torch specializes)
JOB = dict(model=MODEL, prompt="a lighthouse", negative_prompt="fog", steps=3, seed=7, sampler="Euler", scheduler="Automatic")
JOB.update(width=128, height=128)
WHY = "inductor fuses the UNet's operations and may order float additions differently from eager"


@pytest.fixture(scope="module")
def compiling_on():
    with pytest.MonkeyPatch.context() as patch:
        # at normal priority: on a machine shared with other test runs a niced compile would wait on them
        patch.setattr(services_module, "UNetCompiler", lambda cache_dir: UNetCompiler(cache_dir, niceness=0))
        yield


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_sd15_file, tiny_sd15_reference) -> Path:
    root = tmp_path_factory.mktemp("compile-models")
    (root / "checkpoints").mkdir()
    for file in (tiny_sd15_file, sidecar_path(tiny_sd15_file)):
        (root / "checkpoints" / file.name).symlink_to(file)
    kohya_lora(tiny_sd15_reference, Architecture.SD1, root / "loras" / "style.safetensors", rank=4, seed=3)
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compile-cache")


def runner_of(services) -> UNetRunner:
    [model] = services.cache.loaded()
    runner = unet_module(model.pipe.unet).forward
    assert isinstance(runner, UNetRunner)
    return runner


def wait_until(condition, timeout: float = 1800, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def pixels(info) -> np.ndarray:
    assert info.error is None, info.error
    return np.asarray(info.result.images[0].image)


@pytest.fixture(scope="module")
def compiled(compiling_on, models, cache_dir, tmp_path_factory):
    """An engine whose first job ran eager and started the compile, waited until the compiled graph is loaded."""
    with running_engine(models, tmp_path_factory.mktemp("out"), compile=True, cache_dir=cache_dir) as services:
        eager = run(services, **JOB)
        runner = runner_of(services)
        assert runner.calls["eager"] == 3 and runner.calls["compiled"] == 0
        wait_until(lambda: services.compiler.status().phase in ("ready", "failed"), what="the background compile")
        assert services.compiler.status().phase == "ready", services.compiler.status().message
        wait_until(lambda: not services.compiler.unwarmed(runner), timeout=600, what="the idle load of the compiled graph")
        yield services, pixels(eager)


def test_while_compiling_the_first_job_ran_eager_and_the_status_said_so(compiled):
    services, _ = compiled
    assert services.compiler.manifest(), "the compiled graph is recorded for later starts"
    assert "compiled UNet" in services.optimizations()


def test_the_compiled_image_matches_the_eager_one(compiled):
    services, eager = compiled
    runner = runner_of(services)
    before = runner.calls["compiled"]
    image = pixels(run(services, **JOB))
    assert runner.calls["compiled"] == before + 3
    assert_images_match(image, eager, why=WHY, max_level=2, max_fraction=0.05)


def test_a_lora_changes_the_compiled_image_and_never_recompiles(compiled):
    services, eager = compiled
    graphs = counters["stats"]["unique_graphs"]
    with_lora = pixels(run(services, **JOB, loras=(LoraRef("style", 1.0),)))
    again = pixels(run(services, **JOB))
    assert counters["stats"]["unique_graphs"] == graphs, "a LoRA switch recompiled the UNet"
    assert np.abs(with_lora.astype(int) - eager.astype(int)).mean() > 1, "the patched weights are graph inputs"
    assert_images_match(again, eager, why=WHY, max_level=2, max_fraction=0.05)


def test_other_sizes_and_long_prompts_use_the_same_graph(compiled):
    services, _ = compiled
    runner = runner_of(services)
    graphs = counters["stats"]["unique_graphs"]
    before = runner.calls["compiled"]
    for width, height in ((128, 192), (192, 128), (256, 256)):
        assert run(services, **{**JOB, "width": width, "height": height}).error is None
    assert run(services, **{**JOB, "prompt": "a lighthouse, " * 40}).error is None  # two 77-token chunks
    assert runner.calls["compiled"] == before + 12
    assert counters["stats"]["unique_graphs"] - graphs <= 1, "dynamic height/width/prompt length: at most one re-trace"


def test_a_second_start_loads_the_compiled_graph_from_the_cache(compiled, models, cache_dir, tmp_path):
    """A fresh engine on the same cache folder (dynamo reset: nothing in memory) preloads the default model while
    idle and loads its graph from torch's caches: FX graph and AOTAutograd cache hits, no C++ compile."""
    import torch

    torch._dynamo.reset()
    hits = counters["inductor"]["fxgraph_cache_hit"] + counters["aot_autograd"]["autograd_cache_hit"]
    with running_engine(models, tmp_path, compile=True, cache_dir=cache_dir, default_model=MODEL) as services:
        wait_until(lambda: services.cache.loaded(), timeout=300, what="the idle preload of the default model")
        runner = runner_of(services)
        wait_until(lambda: not services.compiler.unwarmed(runner), timeout=600, what="the cached graph")
        assert counters["inductor"]["fxgraph_cache_hit"] + counters["aot_autograd"]["autograd_cache_hit"] > hits
        before = runner.calls["compiled"]
        assert run(services, **JOB).error is None
        assert runner.calls["compiled"] == before + 3
