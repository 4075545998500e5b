"""The page's CPU defaults: one image at a time, the estimate under Generate from measured step times, and the
one-time compile's line while it runs."""

from __future__ import annotations

import pytest

from pipelines.speed.compiler import CompileStatus
from tests.support.engine import run, running_engine
from ui.context import UIContext
from ui.page import speed


@pytest.fixture(scope="module")
def ctx(tiny_models_dir, tmp_path_factory):
    with running_engine(tiny_models_dir, tmp_path_factory.mktemp("out")) as services:
        yield UIContext.build(services)


def test_on_a_cpu_the_form_starts_with_one_image(ctx):
    assert ctx.services.plan.device.type == "cpu"
    assert ctx.presets.get("default").values["image_count"] == 2  # what the preset says, for a GPU
    assert ctx.initial_form()["image_count"] == 1
    assert ctx.preset_values("default", None).values["image_count"] == 1


def test_the_estimate_appears_once_this_machine_has_made_such_an_image(ctx):
    form = {**ctx.initial_form(), "model": "tiny-sd15", "custom_size": True, "width": 64, "height": 64}
    form.update(performance="Custom", steps=3, image_count=2)
    assert speed.estimate_html(ctx, form) == "", "nothing measured yet: no guess"
    run(ctx.services, model="tiny-sd15", steps=3, cfg_scale=form["cfg_scale"])
    shown = speed.estimate_html(ctx, form)
    assert "for 2 images on this machine" in shown and 'data-seconds="' in shown
    assert speed.estimate_html(ctx, {**form, "steps": "not a number"}) == ""


def test_the_compile_line_shows_only_while_compiling_or_after_a_failure(ctx, monkeypatch):
    assert speed.compile_html(ctx) == ""  # tests run with compiling off
    busy = CompileStatus("compiling", "Optimizing for this CPU (one time): compiling…", 0.4)
    monkeypatch.setattr(ctx.services, "compile_status", lambda: busy)
    assert 'data-phase="compiling"' in speed.compile_html(ctx) and "Optimizing for this CPU (one time)" in speed.compile_html(ctx)
    monkeypatch.setattr(ctx.services, "compile_status", lambda: CompileStatus("ready", "done", 1.0))
    assert speed.compile_html(ctx) == ""
