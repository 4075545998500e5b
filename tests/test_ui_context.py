"""The page's model questions, whole-form rendering and the History listing, on a real registry and history."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from pipelines.config import AppConfig
from pipelines.outputs.store import ImageStore
from pipelines.prompts.styles import Style
from pipelines.services import build_services
from pipelines.types import Architecture, GenerationRequest, ImageParams, ModelKind
from tests.support.ckpt_export import save_vae_file
from tests.support.lora_files import kohya_lora
from tests.test_metadata import A1111_110, png_with_text
from ui.context import UIContext
from ui.form.modes import CUSTOM
from ui.page.render import render_form
from ui.tabs import styles as styles_view
from ui.tabs.history import dropped_details, entry_details, load_page
from ui.tabs.models import lora_markdown, prompt_with_triggers, unusable_markdown

SD1, SDXL = Architecture.SD1, Architecture.SDXL


@pytest.fixture(scope="module")
def ctx(tiny_models_dir, tiny_sd15_reference, tiny_sdxl_reference, tmp_path_factory):
    models = tmp_path_factory.mktemp("ctx-models")
    shutil.copytree(tiny_models_dir, models, dirs_exist_ok=True)
    (models / "checkpoints" / "notes.safetensors").write_bytes(b"not a model")
    kohya_lora(
        tiny_sd15_reference,
        SD1,
        models / "loras" / "paper-cut.safetensors",
        metadata={
            "modelspec.trigger_phrase": "papercut, layered paper",
            "ss_tag_frequency": '{"img": {"paper": 5, "shadow": 2}}',
        },
    )
    kohya_lora(tiny_sdxl_reference, SDXL, models / "loras" / "xl-detail.safetensors")
    save_vae_file(tiny_sd15_reference.vae, models / "vae" / "tiny-vae.safetensors")
    out = tmp_path_factory.mktemp("ctx-out")
    services = build_services(AppConfig(models_dir=models, output_dir=out, device="cpu", precision="fp32"), start_worker=False)
    yield UIContext.build(services)
    services.close()


def test_models_are_offered_with_their_architecture(ctx):
    assert ctx.model_choices()[0] == ("tiny-sd15  ·  SD 1.x", "tiny-sd15")
    assert ("tiny-sdxl  ·  SDXL", "tiny-sdxl") in ctx.model_choices()
    assert all("refiner" not in name for _, name in ctx.model_choices())  # a refiner cannot start an image
    assert ctx.architecture("tiny-sdxl") is Architecture.SDXL and ctx.architecture(None) is Architecture.SD1
    assert ctx.lookup("tiny-sdxl.safetensors") == ("tiny-sdxl", Architecture.SDXL)
    assert ctx.lookup("juggernautXL") is None and ctx.lookup("stabilityai/sdxl-turbo") is None
    assert "notes.safetensors" in unusable_markdown(ctx) and "not a safetensors file" in unusable_markdown(ctx)
    assert ctx.notice() == ""
    # refiners: None, then SDXL refiners and SDXL models; LoRAs and VAEs with their architecture
    refiners = ctx.refiner_choices()
    assert refiners[0] == ("None", "None") and ("tiny-sdxl-refiner  ·  SDXL refiner", "tiny-sdxl-refiner") in refiners
    assert {name for _, name in refiners[1:]} == {"tiny-sdxl", "tiny-sdxl-diffusers", "tiny-sdxl-refiner"}
    assert ctx.lora_choices(SD1) == [
        ("None", "None"),
        ("paper-cut  ·  SD 1.x", "paper-cut"),
        ("xl-detail  ·  SDXL  ·  not for SD 1.x", "xl-detail"),
    ]
    assert ("paper-cut  ·  SD 1.x  ·  not for SDXL", "paper-cut") in ctx.lora_choices(SDXL)
    assert ctx.vae_choices()[0][1] == "Automatic" and "tiny-vae" in [v for _, v in ctx.vae_choices()]
    assert ctx.lookup("paper-cut.safetensors", kind=ModelKind.LORA) == ("paper-cut", SD1)
    assert ctx.lookup("tiny-vae.safetensors", kind=ModelKind.VAE)[0] == "tiny-vae"


def test_initial_form_follows_the_launch_preset_and_model(ctx):
    form = ctx.initial_form()
    assert form["model"] == "tiny-sd15" and form["preset"] == "default"
    assert form["aspect_ratio"] == "512x512"  # the default preset's 1152x896 does not suit SD 1.5
    assert (form["performance"], form["steps"], form["sampler"], form["cfg_scale"]) == ("Speed", 30, "DPM++ 2M SDE", 4.0)
    assert (form["refiner"], form["vae"], form["lora_1_name"], form["styles"]) == ("None", "Automatic", "None", [])


def test_default_model_follows_the_engine_not_the_config(ctx):
    """The HTTP API can switch the engine's default model; a new page (and /generate) starts with it."""
    assert ctx.services.config.default_model is None
    try:
        ctx.services.manager.set_default_model("tiny-sdxl")
        assert ctx.record(None).name == "tiny-sdxl"
        form = ctx.initial_form()
        assert form["model"] == "tiny-sdxl" and form["aspect_ratio"] == "1152x896"
    finally:
        ctx.services.manager.set_default_model(None)
    assert ctx.initial_form()["model"] == "tiny-sd15"


def test_render_keeps_every_widget_consistent(ctx):
    form = {
        **ctx.initial_form(),
        "model": "tiny-sdxl",
        "aspect_ratio": "512x512",
        "sampler": "DDIM",
        "scheduler": "Karras",
        "performance": "Quality",
        "random_seed": False,
        "seed": 7,
        "custom_size": True,
    }
    shown = render_form(form, ctx)
    assert shown["aspect_ratio"]["value"] == "1152x896" and ("1728×576  ∣  3:1", "1728x576") in shown["aspect_ratio"]["choices"]
    assert shown["aspect_ratio"]["interactive"] is False and "custom size" in shown["aspect_ratio"]["label"]
    assert shown["scheduler"]["choices"] == ctx.tables.samplers.supported_schedules("DDIM")
    assert "Karras" not in shown["scheduler"]["choices"] and shown["scheduler"]["value"] == "Automatic"
    assert shown["performance"]["value"] == "Quality"
    assert shown["seed"] == {"value": 7, "visible": True} and shown["width"]["visible"] is True
    assert shown["model_info"]["value"].startswith("SDXL · single file")
    assert shown["refiner"]["interactive"] is True and "finishes the last steps" in shown["refiner_info"]["value"]
    gone = render_form(
        {
            **form,
            "model": "deleted-model",
            "sampler": "Nope",
            "lora_1_name": "deleted-lora",
            "vae": "gone",
            "styles": ["Nope", "Anime - Chibi"],
        },
        ctx,
    )
    assert gone["model"]["value"] == "tiny-sd15" and gone["sampler"]["value"] == ctx.tables.samplers.samplers[0]
    assert (gone["lora_1_name"]["value"], gone["vae"]["value"], gone["styles"]["value"]) == (
        "None",
        "Automatic",
        ["Anime - Chibi"],
    )
    assert gone["styles"]["choices"][0] == ("Anime - Chibi", "Anime - Chibi")


def test_modes_that_cannot_run_are_marked_and_settled_with_the_engines_reason(ctx):
    shown = render_form({**ctx.initial_form(), "performance": "Lightning"}, ctx)  # SD 1.5: no Lightning LoRA
    assert ("Lightning (unavailable)", "Lightning") in shown["performance"]["choices"]
    assert ("Speed", "Speed") in shown["performance"]["choices"] and shown["performance"]["choices"][-1][0] == CUSTOM
    reason = ctx.services.performance.availability("Lightning", SD1)
    assert reason.startswith("Lightning needs an SDXL model") and reason in shown["performance_notes"]["value"]
    # offline, a mode whose LoRA is not in models/loras cannot run either, with the engine's explanation
    xl = ctx.mode_reasons("tiny-sdxl")
    assert "cannot be downloaded" in xl["Lightning"] and "sdxl_lightning_4step_lora.safetensors" in xl["Lightning"]
    assert "Quality" not in xl and "Speed" not in xl
    form, notes = ctx.settle(
        {
            **ctx.initial_form(),
            "performance": "Lightning",
            "steps": 4,
            "cfg_scale": 1.0,
            "sampler": "Euler",
            "scheduler": "SGM Uniform",
        }
    )
    # the launch preset's mode, with its guidance and sampler rather than the fast mode's
    assert (form["performance"], form["steps"], form["cfg_scale"], form["sampler"]) == ("Speed", 30, 4.0, "DPM++ 2M SDE")
    assert notes == [f"{reason} Speed is used instead."]


def test_the_lightning_preset_on_an_sd15_install_starts_with_a_mode_that_runs(ctx):
    lightning = UIContext.build(ctx.services, preset="lightning")
    form = lightning.initial_form()
    assert form["model"] == "tiny-sd15" and form["performance"] == "Speed"  # the default preset's mode
    assert (form["steps"], form["cfg_scale"], form["sampler"], form["scheduler"]) == (30, 4.0, "DPM++ 2M SDE", "Karras")


def test_refiner_is_locked_for_a_base_that_is_not_sdxl(ctx):
    form = {**ctx.initial_form(), "refiner": "tiny-sdxl-refiner", "refiner_switch": 0.6}
    shown = render_form(form, ctx)
    assert shown["refiner"]["value"] == "None" and shown["refiner"]["interactive"] is False
    assert shown["refiner_switch"]["interactive"] is False
    assert "A refiner works only with an SDXL base model; tiny-sd15 is SD 1.x" in shown["refiner_info"]["value"]
    settled, notes = ctx.settle(form)
    assert settled["refiner"] == "None" and notes[0].startswith("The refiner is turned off. A refiner works only")
    xl = render_form({**form, "model": "tiny-sdxl"}, ctx)
    assert xl["refiner"]["value"] == "tiny-sdxl-refiner" and xl["refiner_switch"] == {"interactive": True, "value": 0.6}


def test_lora_slots_explain_architecture_and_trigger_words(ctx):
    slots = {"lora_1_name": "paper-cut", "lora_1_enabled": True, "lora_2_name": "xl-detail", "lora_2_enabled": False}
    notes = lora_markdown(ctx, slots, SD1)
    first, second = notes.splitlines()
    assert first.startswith("- **1. paper-cut** (SD 1.x)") and "`papercut`, `layered paper`" in first
    assert "trained on: paper, shadow" in first
    assert second.startswith("- **2. xl-detail** (SDXL, off)")
    assert "xl-detail is a LoRA for SDXL; the model is SD 1.x. The job refuses it" in second
    text, added = prompt_with_triggers(ctx, "a fox, Papercut", slots)
    assert (text, added) == ("a fox, Papercut, layered paper", ["layered paper"])
    shown = render_form({**ctx.initial_form(), **slots}, ctx)
    assert shown["lora_notes"]["value"] == notes
    assert ("xl-detail  ·  SDXL  ·  not for SD 1.x", "xl-detail") in shown["lora_1_name"]["choices"]


def test_styles_list_search_order_and_final_prompt(ctx):
    picked = ["Photo - Macro Detail", "Cinematic - Film Noir"]
    listed = [value for _, value in styles_view.choices(ctx, picked)]
    library = ctx.services.styles.names()
    assert listed == picked + [name for name in library if name not in picked] and len(listed) == len(library)
    assert 'value="Sci-Fi"' in styles_view.category_html(ctx)
    shown = styles_view.summary(ctx, "a __animals__ on a {red|blue} roof", "blurry", picked)
    expected = ctx.services.styles.apply(picked, "a __animals__ on a {red|blue} roof", "blurry")
    assert (shown["final_prompt"]["value"], shown["final_negative"]["value"]) == expected
    assert expected[0].startswith("film noir scene of extreme macro photograph of a __animals__ on a {red|blue} roof")
    listing = shown["styles_selected"]["value"]
    assert listing.index("Photo - Macro Detail") < listing.index("Cinematic - Film Noir")
    assert 'extreme macro photograph of <b class="easel-slot">{prompt}</b>' in listing
    assert styles_view.summary(ctx, "x", "", ["Nope"])["final_prompt"]["value"].startswith("No style named 'Nope'")


def test_style_previews_are_small_cached_copies(ctx, tmp_path):
    source = tmp_path / "preview.png"
    Image.new("RGB", (600, 400), (0, 120, 240)).save(source)
    url = styles_view.preview_url(ctx, Style("Blue", "Tests", preview=source))
    assert url.startswith("/gradio_api/file=") and str(ctx.services.config.resolved_cache_dir) in url
    with Image.open(url.removeprefix("/gradio_api/file=")) as small:
        assert small.size == (192, 128)
    assert styles_view.preview_url(ctx, Style("Plain", "Tests")) is None
    data = styles_view.data_html(ctx)
    assert data.startswith('<div id="easel-style-data" hidden data-styles="') and "Anime - Chibi" in data


def test_no_checkpoint_offers_the_hub_model_and_says_what_to_do(tmp_path):
    services = build_services(
        AppConfig(models_dir=tmp_path / "models", output_dir=tmp_path / "out", device="cpu", precision="fp32"), start_worker=False
    )
    try:
        ctx = UIContext.build(services)
        assert ctx.model_choices() == [("stabilityai/sdxl-turbo  ·  download from the hub", "stabilityai/sdxl-turbo")]
        assert "No checkpoint found" in ctx.notice() and "press Refresh" in ctx.notice()
        assert ctx.initial_form()["aspect_ratio"] == "1152x896"  # unknown architecture: the SDXL list
    finally:
        services.close()


def saved_image(ctx, prompt: str, seed: int) -> int:
    params = ImageParams(
        prompt=prompt,
        negative_prompt="",
        steps=3,
        sampler="Euler",
        scheduler="Automatic",
        cfg_scale=5,
        seed=seed,
        width=64,
        height=64,
        model="tiny-sd15",
        model_hash="abc",
    )
    request = GenerationRequest(
        prompt=prompt, steps=3, width=64, height=64, seed=-1, sampler="Euler", scheduler="Automatic", model="tiny-sd15"
    )
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
    from ui.page.thumbnails import thumbnail

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
