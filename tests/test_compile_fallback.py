"""Where compiling fails, the reason is logged and shown, and images go on being made uncompiled (quick: the
compiler process is a stand-in that fails at once, as it does on a machine without a C++ compiler)."""

from __future__ import annotations

import logging
import sys
import time

from pipelines import services as services_module
from pipelines.speed.compiler import UNetCompiler
from pipelines.speed.runner import unet_module
from tests.support.engine import run, running_engine

FAILS = [sys.executable, "-c", "import sys; print('RuntimeError: no C++ compiler (stand-in)', file=sys.stderr); sys.exit(1)"]


def test_a_failed_compile_is_explained_and_images_stay_eager(tiny_models_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(services_module, "UNetCompiler", lambda cache_dir: UNetCompiler(cache_dir, command=FAILS))
    caplog.set_level(logging.WARNING, logger="pipelines.speed.compiler")
    with running_engine(tiny_models_dir, tmp_path, compile=True) as services:
        assert run(services, model="tiny-sd15", steps=2, seed=1).error is None
        deadline = time.monotonic() + 60
        while services.compiler.status().phase != "failed":
            assert time.monotonic() < deadline, services.compiler.status()
            time.sleep(0.1)
        status = services.compiler.status()
        assert "no C++ compiler (stand-in)" in status.message and "uncompiled" in status.message
        assert any("no C++ compiler (stand-in)" in r.getMessage() for r in caplog.records)
        assert run(services, model="tiny-sd15", steps=2, seed=1).error is None
        [model] = services.cache.loaded()
        runner = unet_module(model.pipe.unet).forward
        assert runner.calls == {"compiled": 0, "eager": 4, "shallow": 0}
        assert not services.compiler.manifest(), "nothing recorded as compiled"


def test_no_compile_leaves_the_unet_as_diffusers_made_it(tiny_models_dir, tmp_path):
    with running_engine(tiny_models_dir, tmp_path, compile=False) as services:
        assert services.compiler is None and "UNet eager (--compile compiles it)" in services.optimizations()
        assert run(services, model="tiny-sd15", steps=2, seed=1).error is None
        [model] = services.cache.loaded()
        assert "forward" not in vars(unet_module(model.pipe.unet))
