"""Fooocus's sampling controls and prompt expansion in the page's form: defaults, rendering, presets, restoring,
and the expanded prompt shown with the finished image."""

from __future__ import annotations

import shutil

import pytest

from pipelines.config import AppConfig
from pipelines.outputs.reading import read_metadata
from pipelines.services import build_services
from pipelines.types import Architecture, GenerationRequest, JobState
from tests.support.expansion_model import TINY_EXPANSION, add_expansion_models
from tests.test_metadata import A1111_110, png_with_text
from ui.context import UIContext
from ui.form.fields import default_form, fields_from_metadata, form_from_request, request_from_form, restore
from ui.form.presets import apply_preset, parse_preset
from ui.page.render import render_form
from ui.page.streaming import follow
from ui.tabs import quality

FOOOCUS = dict(
    sharpness=2.0, adaptive_cfg=7.0, adm_positive=1.5, adm_negative=0.8, adm_end=0.3, refiner_swap="joint", freeu=False
)


@pytest.fixture(scope="module")
def ctx(tiny_models_dir, tmp_path_factory):
    models = tmp_path_factory.mktemp("quality-models")
    shutil.copytree(tiny_models_dir, models, dirs_exist_ok=True)
    add_expansion_models(models)
    services = build_services(AppConfig(models_dir=models, output_dir=tmp_path_factory.mktemp("quality-out"), device="cpu"))
    yield UIContext.build(services)
    services.close()


@pytest.fixture(scope="module")
def bare_ctx(tiny_models_dir, tmp_path_factory):
    """No prompt-expansion model installed."""
    out = tmp_path_factory.mktemp("bare-out")
    services = build_services(AppConfig(models_dir=tiny_models_dir, output_dir=out, device="cpu"), start_worker=False)
    yield UIContext.build(services)
    services.close()


def test_the_page_starts_from_fooocus_values_and_requests_default_to_off(ctx):
    form = default_form(ctx.tables, Architecture.SDXL)
    assert {k: form[k] for k in FOOOCUS} == FOOOCUS and form["prompt_expansion"] == ""
    request = request_from_form(form, ctx.tables)
    assert (request.sharpness, request.adaptive_cfg, request.adm_positive, request.refiner_swap) == (2.0, 7.0, 1.5, "joint")
    bare = GenerationRequest()
    assert (bare.sharpness, bare.adaptive_cfg, bare.adm_positive, bare.adm_end, bare.freeu) == (0, 0, 1, 0, False)
    assert bare.refiner_swap == "separate" and bare.prompt_expansion == ""
    # the launch preset's form keeps them, and they go back and forth between form and request
    initial = ctx.initial_form()
    assert {k: initial[k] for k in FOOOCUS} == FOOOCUS
    changed = request.replace(sharpness=5.5, freeu=True, freeu_b1=1.3, refiner_swap="vae", prompt_expansion=TINY_EXPANSION)
    again = request_from_form({**form, **form_from_request(changed, ctx.tables, Architecture.SDXL)}, ctx.tables)
    assert again == changed


def test_fast_modes_grey_the_controls_they_switch_off_and_adm_is_sdxl_only(ctx):
    form = {**ctx.initial_form(), "model": "tiny-sdxl"}
    shown = render_form({**form, "performance": "Lightning"}, ctx)
    assert shown["sharpness"]["interactive"] is False and "Off in Lightning" in shown["sharpness"]["info"]
    assert shown["sharpness"]["value"] == 2.0  # the user's value is kept for the other modes
    assert shown["freeu_b1"]["interactive"] is True  # Fooocus leaves FreeU alone in the fast modes
    speed = render_form({**form, "performance": "Speed"}, ctx)
    assert speed["sharpness"]["interactive"] and speed["adm_end"]["interactive"]
    sd15 = render_form({**form, "model": "tiny-sd15", "performance": "Speed"}, ctx)
    assert sd15["adm_positive"]["interactive"] is False and sd15["adm_positive"]["info"].startswith("SDXL only")


def test_expansion_entry_lists_installed_models_or_says_where_to_get_one(ctx, bare_ctx):
    state = quality.expansion_state(ctx, TINY_EXPANSION)
    assert state["interactive"] and state["value"] == TINY_EXPANSION
    assert [v for _, v in state["choices"]] == ["", "free-expansion", TINY_EXPANSION]
    bare = quality.expansion_state(bare_ctx, TINY_EXPANSION)
    assert bare["interactive"] is False and bare["value"] == "" and bare["choices"] == [("Off", "")]
    assert "No prompt-expansion model installed" in bare["info"] and "prompt_expansion" in bare["info"]
    assert "fooocus_expansion" in bare["info"]


def test_presets_set_the_controls_and_fooocus_v2_means_any_installed_model(ctx, bare_ctx):
    data = {"performance": "Speed", "sharpness": 4, "adaptive_cfg": 5, "freeu": True, "prompt_expansion": "Fooocus V2"}
    preset = parse_preset("mine", data, ctx.tables)
    got = apply_preset(preset, ctx.tables, ctx.lookup, Architecture.SDXL).values
    assert (got["sharpness"], got["adaptive_cfg"], got["freeu"]) == (4, 5, True)
    assert got["prompt_expansion"] == "free-expansion"  # the first one installed
    assert apply_preset(preset, bare_ctx.tables, bare_ctx.lookup, Architecture.SDXL).values["prompt_expansion"] == ""
    with pytest.raises(ValueError, match="refiner_swap"):
        parse_preset("bad", {"refiner_swap": "sideways"}, ctx.tables)
    with pytest.raises(ValueError, match="sharpness"):
        parse_preset("bad", {"sharpness": 31}, ctx.tables)


def test_an_a1111_image_restores_with_the_controls_off(ctx):
    meta = read_metadata(png_with_text(parameters=A1111_110))
    values = restore(fields_from_metadata(meta), ctx.tables, ctx.lookup, Architecture.SDXL, "A1111").values
    assert (values["sharpness"], values["adaptive_cfg"], values["adm_end"], values["freeu"]) == (0, 0, 0, False)


def test_the_expanded_prompt_is_shown_with_the_image_and_restores(ctx):
    form = {
        **ctx.initial_form(),
        "model": "tiny-sdxl",
        "prompt": "a red fox in snow",
        "prompt_expansion": TINY_EXPANSION,
        "performance": "Custom",
        "steps": 2,
        "cfg_scale": 9.0,
        "custom_size": True,
        "width": 64,
        "height": 64,
        "random_seed": False,
        "seed": 42,
        "image_count": 1,
        "freeu": True,
    }
    job = ctx.services.queue.submit(request_from_form(form, ctx.tables))
    view = [view for view, _changed in follow(ctx.services.queue, job)][-1]
    assert view.state == "done", view.error
    [shown] = view.images
    info = ctx.services.queue.status(job)
    assert info.state is JobState.FINISHED
    params = info.result.images[0].params
    words = params.prompt_expansion.removeprefix("a red fox in snow, ")
    assert words and shown.infotext.startswith(f"a red fox in snow, {words}\n")  # the final prompt, on the page
    assert "Fooocus V2 Expansion: " in shown.infotext and "Sharpness: 2, ADM Guidance: " in shown.infotext
    assert "Adaptive CFG: 7" in shown.infotext and "FreeU: " in shown.infotext
    # Use these settings: what was typed, the model named, the controls as sent
    meta = read_metadata(shown.path)
    values = restore(fields_from_metadata(meta), ctx.tables, ctx.lookup, Architecture.SDXL, "Easel").values
    assert values["prompt"] == "a red fox in snow" and values["prompt_expansion"] == TINY_EXPANSION
    assert {k: values[k] for k in FOOOCUS} == {**FOOOCUS, "freeu": True}
    # with only the infotext (the JSON lost), the Fooocus keys still restore the controls and the expansion
    infotext_only = read_metadata(png_with_text(parameters=shown.infotext))
    values = restore(fields_from_metadata(infotext_only), ctx.tables, ctx.lookup, Architecture.SDXL, "Easel").values
    assert (values["sharpness"], values["adaptive_cfg"], values["adm_positive"], values["freeu"]) == (2, 7, 1.5, True)
    assert values["prompt_expansion"] == "free-expansion"  # "Fooocus V2": the first model installed
