"""The page's model questions, whole-form rendering and the History listing, on a real registry and history."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from pipelines.config import AppConfig
from pipelines.image_store import ImageStore
from pipelines.services import build_services
from pipelines.types import Architecture, GenerationRequest, ImageParams
from tests.test_metadata import A1111_110, png_with_text
from ui.context import UIContext
from ui.performance import CUSTOM
from ui.render import render_form
from ui.tabs.history import dropped_details, entry_details, load_page
from ui.tabs.models import unusable_markdown


@pytest.fixture(scope="module")
def ctx(tiny_models_dir, tmp_path_factory):
    models = tmp_path_factory.mktemp("ctx-models")
    shutil.copytree(tiny_models_dir, models, dirs_exist_ok=True)
    (models / "checkpoints" / "notes.safetensors").write_bytes(b"not a model")
    out = tmp_path_factory.mktemp("ctx-out")
    services = build_services(AppConfig(models_dir=models, output_dir=out, device="cpu", precision="fp32"),
                              start_worker=False)
    yield UIContext.build(services)
    services.close()


def test_models_are_offered_with_their_architecture(ctx):
    assert ctx.model_choices()[0] == ("tiny-sd15  ·  SD 1.x", "tiny-sd15")
    assert ("tiny-sdxl  ·  SDXL", "tiny-sdxl") in ctx.model_choices()
    assert ctx.architecture("tiny-sdxl") is Architecture.SDXL and ctx.architecture(None) is Architecture.SD1
    assert ctx.lookup("tiny-sdxl.safetensors") == ("tiny-sdxl", Architecture.SDXL)
    assert ctx.lookup("juggernautXL") is None and ctx.lookup("stabilityai/sdxl-turbo") is None
    assert "notes.safetensors" in unusable_markdown(ctx) and "not a safetensors file" in unusable_markdown(ctx)
    assert ctx.notice() == ""


def test_initial_form_follows_the_launch_preset_and_model(ctx):
    form = ctx.initial_form()
    assert form["model"] == "tiny-sd15" and form["preset"] == "default"
    assert form["aspect_ratio"] == "512x512"  # the default preset's 1152x896 does not suit SD 1.5
    assert (form["performance"], form["steps"], form["sampler"], form["cfg_scale"]) == ("Speed", 30, "DPM++ 2M SDE", 4.0)


def test_render_keeps_every_widget_consistent(ctx):
    form = {**ctx.initial_form(), "model": "tiny-sdxl", "aspect_ratio": "512x512", "sampler": "DDIM",
            "scheduler": "Karras", "performance": "Lightning", "random_seed": False, "seed": 7, "custom_size": True}
    shown = render_form(form, ctx)
    assert shown["aspect_ratio"]["value"] == "1152x896" and ("1728×576  ∣  3:1", "1728x576") in shown["aspect_ratio"]["choices"]
    assert shown["aspect_ratio"]["interactive"] is False and "custom size" in shown["aspect_ratio"]["label"]
    assert shown["scheduler"]["choices"] == ctx.tables.samplers.supported_schedules("DDIM")
    assert "Karras" not in shown["scheduler"]["choices"] and shown["scheduler"]["value"] == "Automatic"
    assert shown["performance"]["value"] == CUSTOM
    assert shown["seed"] == {"value": 7, "visible": True} and shown["width"]["visible"] is True
    assert shown["model_info"]["value"].startswith("SDXL · single file")
    gone = render_form({**form, "model": "deleted-model", "sampler": "Nope"}, ctx)
    assert gone["model"]["value"] == "tiny-sd15" and gone["sampler"]["value"] == ctx.tables.samplers.samplers[0]


def test_no_checkpoint_offers_the_hub_model_and_says_what_to_do(tmp_path):
    services = build_services(AppConfig(models_dir=tmp_path / "models", output_dir=tmp_path / "out", device="cpu",
                                        precision="fp32"), start_worker=False)
    try:
        ctx = UIContext.build(services)
        assert ctx.model_choices() == [("stabilityai/sdxl-turbo  ·  download from the hub", "stabilityai/sdxl-turbo")]
        assert "No checkpoint found" in ctx.notice() and "press Refresh" in ctx.notice()
        assert ctx.initial_form()["aspect_ratio"] == "1152x896"  # unknown architecture: the SDXL list
    finally:
        services.close()


def saved_image(ctx, prompt: str, seed: int) -> int:
    params = ImageParams(prompt=prompt, negative_prompt="", steps=3, sampler="Euler", scheduler="Automatic",
                         cfg_scale=5, seed=seed, width=64, height=64, model="tiny-sd15", model_hash="abc")
    request = GenerationRequest(prompt=prompt, steps=3, width=64, height=64, seed=-1, sampler="Euler",
                                scheduler="Automatic", model="tiny-sd15")
    path = ImageStore(ctx.services.config.output_dir).save(Image.new("RGB", (64, 64), (seed % 255, 0, 0)), params, request)
    return ctx.services.history.add(path, params, request, "job")


def test_history_pages_newest_first_with_search_and_details(ctx):
    ids = [saved_image(ctx, f"{'cat' if i % 2 else 'dog'} number {i}", 100 + i) for i in range(7)]
    page = load_page(ctx, "", 0, per_page=3)
    assert page.entry_ids == ids[::-1][:3] and page.info == "Page 1 of 3 · 7 images"
    assert page.items[0][1] == "cat number 5" or page.items[0][1] == "dog number 6"
    assert all(item[0].endswith(".jpg") and "thumbnails" in item[0] for item in page.items)
    with Image.open(page.items[0][0]) as thumb:
        assert thumb.size == (64, 64)  # never enlarged
    last = load_page(ctx, "", 99, per_page=3)
    assert last.page == 2 and last.entry_ids == [ids[0]]
    cats = load_page(ctx, "CAT number", 0, per_page=10)
    assert cats.entry_ids == [ids[5], ids[3], ids[1]] and cats.info == "Page 1 of 1 · 3 images"
    assert load_page(ctx, "zebra", 0).info == "No images match."
    text, found = entry_details(ctx, ids[3])
    assert text.startswith("cat number 3\nSteps: 3") and "Saved 20" in text
    assert found["fields"]["seed"] == 103 and found["fields"]["prompt"] == "cat number 3"
    assert entry_details(ctx, 10**6) == ("This entry is no longer in the history.", None)


def test_dropped_files_are_read_or_explained(tmp_path):
    a1111 = tmp_path / "a.png"
    a1111.write_bytes(png_with_text(parameters=A1111_110))
    text, found = dropped_details(a1111)
    assert text.startswith("Made with A1111 (a.png):\nmasterpiece") and found["source"] == "A1111"
    assert found["fields"]["seed"] == 3456789012
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    assert dropped_details(plain) == ("No generation settings found in plain.png.", None)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"hello")
    text, found = dropped_details(junk)
    assert found is None and "is not an image Easel can read" in text


def test_handler_errors_become_plain_messages():
    import gradio as gr

    from pipelines.errors import ModelNotFound
    from ui.errors import readable_errors

    @readable_errors
    def fails(exc):
        raise exc

    with pytest.raises(gr.Error) as shown:
        fails(ModelNotFound("No checkpoint named 'x' <here>."))
    assert shown.value.message == "No checkpoint named &#x27;x&#x27; &lt;here&gt;."  # text, never markup
    with pytest.raises(gr.Error) as shown:
        fails(ZeroDivisionError("division by zero"))
    assert shown.value.message == "Something went wrong: ZeroDivisionError: division by zero"
    assert shown.value.print_exception is False


def test_thumbnails_are_small_cached_and_renewed(tmp_path):
    from ui.thumbnails import thumbnail

    source = tmp_path / "big.png"
    Image.new("RGB", (1152, 896), (10, 200, 30)).save(source)
    first = thumbnail(source, tmp_path / "cache")
    with Image.open(first) as thumb:
        assert thumb.size == (320, 249) and thumb.getpixel((100, 100))[1] > 180
    assert thumbnail(source, tmp_path / "cache") == first  # made once
    Image.new("RGB", (640, 640), (200, 0, 0)).save(source)
    renewed = thumbnail(source, tmp_path / "cache")
    assert renewed != first and Image.open(renewed).size == (320, 320)
    assert thumbnail(tmp_path / "gone.png", tmp_path / "cache") is None
