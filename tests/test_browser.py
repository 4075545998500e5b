"""The page end to end in headless Chromium, through the real engine on tiny SD 1.5 / SDXL checkpoints.

The app runs in-process on a free loopback port, built as app.py builds it (services -> UI -> one HTTP
server). Its models folder holds the tiny checkpoints (and the tiny SDXL refiner), three kohya LoRAs and a
VAE; its performance table is the engine's own kind of table, written for the tests: Quick (2 steps) and
Long (150 steps) so that jobs are fast or reliably long, Turbo (2 steps with an acceleration LoRA that is
installed) and the real Lightning entry (SDXL only, its LoRA not installed and the hub offline: never
available here). The style library is the shipped one plus one style with a preview image.
Screenshots of the main states go to test-artifacts/browser/.
"""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from playwright.sync_api import expect

from pipelines.config import REPO_ROOT, AppConfig
from pipelines.outputs.reading import read_metadata
from pipelines.performance import TABLE_PATH, PerformanceTable
from pipelines.services import build_services
from pipelines.types import Architecture, JobState
from tests.support.ckpt_export import save_vae_file
from tests.support.gates import StepGate, wait_until
from tests.support.live_app import free_port, link_checkpoints
from tests.support.lora_files import kohya_lora
from tests.support.page_helpers import (
    ARTIFACTS,
    RECORD_ERROR_TOASTS,
    RECORD_SAVED_SETTINGS,
    open_tab,
    pick_option,
    pick_radio,
    pick_style,
    picked_styles,
    pixels,
    record_status_changes,
    set_number,
    shot,
    status,
    textbox,
    visible_styles,
    wait_saved,
    wait_state,
    wait_value,
)
from tests.test_metadata import png_with_text
from ui.context import UIContext
from ui.form.fields import FormTables
from ui.form.presets import PresetLibrary
from ui.gradio_app import CSS, HEAD, build_ui
from ui.server import Server, build_http_app

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
WAIT = 180_000  # ms; generous because CI machines may be busy
expect.set_options(timeout=WAIT)  # assertions on the page retry until the page agrees or this passes
TEST_PRESETS = {
    "tiny": "description: Tiny test settings\nperformance: Custom\nsteps: 3\ncustom_size: true\nwidth: 64\n"
    "height: 64\nimage_count: 1\nsampler: Euler\nscheduler: Automatic\ncfg_scale: 5\n",
    "second": "description: Another look\nperformance: Long\nsampler: Euler a\ncfg_scale: 9\ncustom_size: true\n"
    "width: 64\nheight: 64\nnegative_prompt: blurry\nstyles: [Painting - Watercolor]\n",
}
TRIGGERS = "papercut, layered paper"


def modes_for_tests() -> dict:
    """The engine's table format with modes made for tests, and the shipped Lightning entry as it is."""
    shipped = yaml.safe_load(TABLE_PATH.read_text(encoding="utf-8"))["modes"]
    return {
        "modes": {
            "Quick": {"description": "Two steps (test mode).", "steps": 2},
            "Long": {"description": "150 steps (test mode).", "steps": 150},
            "Turbo": {
                "description": "Two steps with the tiny acceleration LoRA, no guidance (test mode).",
                "steps": 2,
                "cfg_scale": 1.0,
                "sampler": "Euler",
                "scheduler": "Automatic",
                "lora": {
                    "sd1": {
                        "file": "tiny-turbo.safetensors",
                        "repo": "easel-tests/tiny-turbo",
                        "filename": "tiny-turbo.safetensors",
                        "weight": 0.5,
                    }
                },
            },
            "Lightning": shipped["Lightning"],
        }
    }


@pytest.fixture(scope="module")
def app(tiny_models_dir, tiny_sd15_reference, tiny_sdxl_reference, tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (Debian package `chromium`)")
    root = tmp_path_factory.mktemp("browser-app")
    models = root / "models"
    link_checkpoints(tiny_models_dir, models, ("tiny-sd15", "tiny-sdxl", "tiny-sdxl-refiner"))
    kohya_lora(
        tiny_sd15_reference,
        Architecture.SD1,
        models / "loras" / "paper-cut.safetensors",
        seed=11,
        metadata={"modelspec.trigger_phrase": TRIGGERS, "ss_tag_frequency": '{"img": {"paper": 9}}'},
    )
    kohya_lora(tiny_sdxl_reference, Architecture.SDXL, models / "loras" / "xl-detail.safetensors", seed=12)
    kohya_lora(tiny_sd15_reference, Architecture.SD1, models / "loras" / "tiny-turbo.safetensors", seed=13)
    save_vae_file(tiny_sd15_reference.vae, models / "vae" / "tiny-vae.safetensors")
    styles = root / "styles"
    shutil.copytree(REPO_ROOT / "styles", styles)
    (styles / "previews").mkdir()
    Image.new("RGB", (300, 200), (40, 90, 220)).save(styles / "previews" / "blue.png")
    (styles / "zz_tests.yaml").write_text(
        "category: Test Previews\nstyles:\n  - name: Test - Blue Preview\n"
        "    prompt: '{prompt}, in blue'\n    preview: previews/blue.png\n"
    )
    presets_dir = root / "presets"
    presets_dir.mkdir()
    for name, text in TEST_PRESETS.items():
        (presets_dir / f"{name}.yaml").write_text(text, encoding="utf-8")
    (root / "modes.yaml").write_text(yaml.safe_dump(modes_for_tests(), sort_keys=False), encoding="utf-8")

    cfg = AppConfig(
        models_dir=models, output_dir=root / "outputs", styles_dir=styles, device="cpu", precision="fp32", port=free_port()
    )
    services = build_services(cfg)
    table = PerformanceTable.load(services.registry, services.samplers, root / "modes.yaml")
    services.performance = services.manager.performance = table  # the engine's mode path, with the test modes
    tables = FormTables.for_services(services)
    ctx = UIContext.build(services, PresetLibrary.load(tables, [presets_dir]), preset="tiny", tables=tables)
    server = Server(build_http_app(cfg, build_ui(ctx), CSS, head=HEAD), cfg.host, cfg.port)
    server.start()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield services, server.local_url
    server.stop()
    services.close()


@pytest.fixture(scope="module")
def browser(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking"])
        yield browser
        browser.close()


@pytest.fixture
def open_page(app, browser):
    """A fresh browser context (own storage, own Gradio session) per page; closed after the test."""
    contexts = []

    def opener(**options):
        context = browser.new_context(viewport=options.pop("viewport", {"width": 1400, "height": 1000}), **options)
        context.add_init_script(RECORD_ERROR_TOASTS)
        context.add_init_script(RECORD_SAVED_SETTINGS)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT)
        page.goto(app[1])
        for rendered in ("#generate", "#status [data-state]", "#gallery", "#performance label"):
            page.wait_for_selector(rendered)  # Gradio renders the page in parts
        return page

    yield opener
    for context in contexts:
        for page in context.pages:
            assert page.evaluate("window.__errorToasts") == [], "the page showed an error"
        context.close()


# ----------------------------------------------------------------------------------------------- tests


def test_generate_then_restore_from_history(app, open_page):
    services, _url = app
    page = open_page()
    shot(page, "01-start")
    textbox(page, "prompt").fill("a red fox in the snow")
    pick_radio(page, "performance", "Quick")
    set_number(page, "#image-count", 2)
    # a two-step job may finish within one browser frame, so its progress is not awaited here (the Long
    # jobs below check the running text); its end state and images are
    page.click("#generate")
    assert wait_state(page, "done", "failed") == "Done: 2 images in " + status(page)[1].split(" in ")[1]
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 2")
    shot(page, "03-done")

    # the request that ran: Quick's 2 steps, 2 images, the preset's 64x64 and sampler
    jobs = [e for e in services.history.list("red fox")]
    assert len(jobs) == 2 and {e.params.steps for e in jobs} == {2} and jobs[0].request.performance == "Quick"
    assert (jobs[0].params.width, jobs[0].params.sampler) == (64, "Euler")

    # a finished image opens with its parameters
    page.locator("#gallery img").first.click()
    wait_value(page, "parameters", "v.includes('Seed:')")
    parameters = textbox(page, "parameters").input_value()
    assert "a red fox in the snow" in parameters and "Steps: 2, Sampler: Euler" in parameters
    shot(page, "03b-full-size-with-parameters")
    page.keyboard.press("Escape")
    shown_seed = int(re.search(r"Seed: (\d+)", parameters).group(1))
    page.click("#restore-selected")
    page.wait_for_selector("#seed input")
    expect(page.locator("#seed input")).to_have_value(str(shown_seed))
    assert page.locator("#random-seed input").is_checked() is False

    # History: newest first; pick the older image of the two, then restore it into a changed form
    open_tab(page, "History")
    page.wait_for_function("document.querySelectorAll('#history-gallery img').length >= 2")
    shot(page, "04-history")
    older = min(jobs, key=lambda e: e.id)
    page.locator("#history-gallery img").nth(1).click()
    wait_value(page, "history-details", "v.includes('Seed: ')")
    details = textbox(page, "history-details").input_value()
    assert f"Seed: {older.params.seed}" in details and str(older.path) in details
    open_tab(page, "Setting")
    pick_radio(page, "performance", "Long")
    textbox(page, "prompt").fill("something else")
    open_tab(page, "History")
    page.click("#history-restore")
    wait_value(page, "prompt", "v === 'a red fox in the snow'")
    open_tab(page, "Setting")
    assert page.locator("#random-seed input").is_checked() is False
    expect(page.locator("#seed input")).to_have_value(str(older.params.seed))
    expect(page.locator("#performance input:checked")).to_have_attribute("value", "Quick")
    shot(page, "05-restored")

    # the restored form makes the same picture again (2 images from that seed: the first is the same)
    page.click("#generate")
    wait_state(page, "done", "failed")
    again = services.history.list("red fox")[0]
    assert again.params.seed in (older.params.seed, older.params.seed + 1)
    first = [e for e in services.history.list("red fox", limit=2)]
    remade = next(e for e in first if e.params.seed == older.params.seed)
    assert np.array_equal(pixels(remade.path), pixels(older.path))


def test_stop_during_a_long_job_keeps_the_page_usable(app, open_page):
    services, _url = app
    page = open_page()
    textbox(page, "prompt").fill("a very long job")
    pick_radio(page, "performance", "Long")
    set_number(page, "#image-count", 3)
    long_job = lambda request: request.prompt == "a very long job"  # noqa: E731
    # the job waits at step 3 of image 1, then of image 2, until the page has pressed Skip, then Stop: on a busy
    # machine the page can lag the worker by a whole image, and a Skip meant for image 1 would hit image 2
    with StepGate(services.queue, long_job, step=3, image=1) as second, StepGate(services.queue, long_job, step=3) as first:
        page.click("#generate")
        first.wait()
        page.wait_for_selector("#preview img.easel-preview")
        page.wait_for_function("document.querySelector('#status').innerText.includes('Step 3/150')")
        text = status(page)[1]
        assert re.match(r"Step 3/150 · image 1/3( · ETA \d+:\d\d)?$", text), text
        shot(page, "06-running-with-preview")
        page.click("#skip")  # drop image 1, go on with image 2
        wait_until(lambda: services.queue.running().skip_requested)
        first.release()
        second.wait()
        page.wait_for_function("document.querySelector('#status').innerText.includes('image 2/3')")
        page.click("#stop")
        wait_until(lambda: services.queue.running().cancel_requested)
    assert wait_state(page, "stopped", "failed") == "Stopped (0 images kept)"
    shot(page, "07-stopped")
    expect(page.locator("#preview img")).to_have_count(0)
    assert all(info.state is not JobState.RUNNING for info in services.queue.jobs())


def test_two_pages_see_their_own_results_and_queue_position(app, open_page):
    services, _url = app
    first, second = open_page(), open_page()
    textbox(first, "prompt").fill("page one, long")
    pick_radio(first, "performance", "Long")
    with StepGate(services.queue, lambda request: request.prompt == "page one, long", step=2) as gate:
        first.click("#generate")
        gate.wait()  # the first page's job holds the worker until it is stopped
        first.wait_for_function("document.querySelector('#status').innerText.includes('Step ')")
        textbox(second, "prompt").fill("page two, quick")
        second.click("#generate")
        assert wait_state(second, "queued") == "Waiting in the queue: position 1 (1 job ahead)"
        shot(second, "08-second-page-queued")
        assert status(first)[0] == "running"  # the first page keeps showing its own job
        first.click("#stop")
        wait_until(lambda: services.queue.running().cancel_requested)
    wait_state(first, "stopped")
    wait_state(second, "done")
    second.wait_for_function("document.querySelectorAll('#gallery img').length === 1")
    expect(first.locator("#gallery img")).to_have_count(0)
    second.locator("#gallery img").first.click()
    wait_value(second, "parameters", "v.includes('page two, quick')")


def test_ctrl_enter_generates_and_errors_read_plainly(app, open_page):
    page = open_page()
    open_tab(page, "Advanced")
    set_number(page, "#width", 65)
    textbox(page, "prompt").fill("odd width")
    textbox(page, "prompt").press("Control+Enter")
    assert wait_state(page, "failed") == "width must be a multiple of 8, got 65."
    body = page.inner_text("body")
    assert "Traceback" not in body and "Error" not in status(page)[1]
    shot(page, "09-readable-error")
    set_number(page, "#width", 64)
    textbox(page, "prompt").press("Control+Enter")
    wait_state(page, "done")


def test_preset_picker_and_model_sizes(app, open_page):
    page = open_page()
    page.locator("#preset input").click()
    page.locator("li[role=option][aria-label='second']").click()
    open_tab(page, "Advanced")
    wait_value(page, "sampler", "v === 'Euler a'")
    expect(page.locator("#cfg-scale input[type=number]")).to_have_value("9")
    expect(page.locator("#steps input[type=number]")).to_have_value("150")
    open_tab(page, "Setting")
    expect(textbox(page, "negative-prompt")).to_have_value("blurry")
    expect(page.locator("#performance input:checked")).to_have_attribute("value", "Long")
    # the aspect ratio list follows the model: SD 1.5 sizes, then SDXL's after switching models
    expect(page.locator("#aspect-ratio label", has_text="512×512")).to_have_count(1)
    open_tab(page, "Models")
    assert "SD 1.x" in page.inner_text("#model-info")
    page.locator("#model input").click()
    page.locator("li[role=option][aria-label^='tiny-sdxl ']").click()
    page.wait_for_function("document.querySelector('#model-info').innerText.includes('SDXL')")
    shot(page, "10-models-tab")
    open_tab(page, "Setting")
    page.wait_for_selector("#aspect-ratio label:has-text('1728×576')")
    expect(page.locator("#aspect-ratio label", has_text="512×512")).to_have_count(0)
    # the schedule list offers only what the sampler supports
    open_tab(page, "Advanced")
    pick_option(page, "sampler", "DPM++ 2M")
    pick_option(page, "scheduler", "Karras")
    pick_option(page, "sampler", "DDIM")
    wait_value(page, "scheduler", "v === 'Automatic'")
    page.locator("#scheduler input").click()
    offered = page.locator("li[role=option]").evaluate_all("items => items.map(li => li.getAttribute('aria-label'))")
    assert offered == ["Automatic", "Uniform", "SGM Uniform"]
    page.keyboard.press("Escape")
    open_tab(page, "Setting")
    # unticking Random shows the seed box
    assert page.locator("#seed").is_hidden()
    page.locator("#random-seed input").uncheck()
    page.wait_for_selector("#seed input")


def test_settings_are_remembered_across_reloads(app, open_page):
    page = open_page()
    textbox(page, "prompt").fill("remember me")
    textbox(page, "negative-prompt").fill("not this")
    pick_radio(page, "output-format", "webp")
    set_number(page, "#image-count", 5)
    open_tab(page, "Styles")
    pick_style(page, "Painting - Cubism")
    pick_style(page, "Craft - Origami")
    open_tab(page, "Models")
    pick_option(page, "lora-3-name", "paper-cut  ·  SD 1.x")
    page.locator("body").click(position={"x": 5, "y": 5})
    # the last save holds every change (saves are coalesced, the last one wins)
    wait_saved(
        page,
        "values.prompt === 'remember me' && values.negative_prompt === 'not this' && values.output_format === 'webp'"
        " && Number(values.image_count) === 5 && String(values.lora_3_name).startsWith('paper-cut')"
        " && JSON.stringify(values.styles) === JSON.stringify(['Painting - Cubism', 'Craft - Origami'])",
    )
    page.reload()
    wait_value(page, "prompt", "v === 'remember me'")
    expect(textbox(page, "negative-prompt")).to_have_value("not this")
    expect(page.locator("#output-format input:checked")).to_have_attribute("value", "webp")
    expect(page.locator("#image-count input[type=number]")).to_have_value("5")
    open_tab(page, "Styles")
    page.wait_for_function("document.querySelectorAll('#styles input:checked').length === 2")
    assert picked_styles(page) == ["Painting - Cubism", "Craft - Origami"]
    open_tab(page, "Models")
    expect(page.locator("#lora-3-name input")).to_have_value("paper-cut  ·  SD 1.x")


A1111_TEXT = (
    "a lighthouse at dusk\nNegative prompt: fog\n"
    "Steps: 7, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 4242, Size: 448x576, Model hash: 0123456789, "
    "Model: tiny-sd15, Version: v1.7.0"
)


def test_image_dropped_on_the_page_restores_its_settings(app, open_page):
    page = open_page()
    data = base64.b64encode(png_with_text(parameters=A1111_TEXT)).decode()
    page.evaluate(
        """(data) => {
        const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'from-a1111.png', {type: 'image/png'}));
        const target = document.querySelector('#gallery');
        for (const type of ['dragenter', 'dragover', 'drop'])
            target.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""",
        data,
    )
    wait_value(page, "history-details", "v.startsWith('Made with A1111')")
    shot(page, "11-dropped-image")
    page.click("#history-restore")
    wait_value(page, "prompt", "v === 'a lighthouse at dusk'")
    open_tab(page, "Setting")
    expect(textbox(page, "negative-prompt")).to_have_value("fog")
    expect(page.locator("#seed input")).to_have_value("4242")
    expect(page.locator("#aspect-ratio input:checked")).to_have_attribute("value", "448x576")
    expect(page.locator("#performance input:checked")).to_have_attribute("value", "Custom")
    open_tab(page, "Advanced")
    expect(page.locator("#steps input[type=number]")).to_have_value("7")
    expect(page.locator("#sampler input")).to_have_value("DPM++ 2M")
    expect(page.locator("#scheduler input")).to_have_value("Karras")


def test_phone_sized_dark_page(app, open_page):
    page = open_page(viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True, has_touch=True)
    main, settings = page.locator("#main").bounding_box(), page.locator("#settings").bounding_box()
    assert settings["y"] >= main["y"] + main["height"] - 1  # stacked, not squeezed side by side
    assert page.evaluate("document.documentElement.scrollWidth") <= 391
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert sum(int(v) for v in re.findall(r"\d+", background)[:3]) < 150, background  # dark, as the browser asked
    shot(page, "12-phone-dark")
    light = open_page(viewport={"width": 390, "height": 844}, color_scheme="light", is_mobile=True)
    background = light.evaluate("getComputedStyle(document.body).backgroundColor")
    assert sum(int(v) for v in re.findall(r"\d+", background)[:3]) > 600, background


# ------------------------------------------------------------------------- styles, modes, LoRAs, refiner


def test_issue_scenario_two_styles_a_mode_generate_restore_from_history(app, open_page):
    """The issue's scenario: a prompt, two styles and a performance mode; Generate shows progress, then the image,
    whose metadata carries the styled prompt and the mode; History restores it, styles and mode included."""
    services, _url = app
    page = open_page()
    prompt = "a lighthouse keeper's cat"
    textbox(page, "prompt").fill(prompt)
    open_tab(page, "Styles")
    pick_style(page, "Photo - Macro Detail")
    pick_style(page, "Cinematic - Film Noir")
    # the search (name and category words) and the category list filter; picked styles stay in view
    assert visible_styles(page) == ["Photo - Macro Detail", "Cinematic - Film Noir"]
    textbox(page, "style-search").fill("anime cyber")
    page.wait_for_function("document.querySelectorAll('#styles label:not([style*=none])').length === 3")
    assert visible_styles(page)[2:] == ["Anime - Cyberpunk City"]
    textbox(page, "style-search").fill("")
    page.select_option("#easel-style-category", "Sci-Fi")
    expected = [s.name for s in services.styles.search("", "Sci-Fi")]
    assert visible_styles(page) == ["Photo - Macro Detail", "Cinematic - Film Noir", *expected]
    page.select_option("#easel-style-category", "")
    page.wait_for_function("document.querySelectorAll('#styles label:not([style*=none])').length > 100")
    assert picked_styles(page) == ["Photo - Macro Detail", "Cinematic - Film Noir"]
    assert visible_styles(page)[:3] == ["Photo - Macro Detail", "Cinematic - Film Noir", "Anime - Key Visual"]
    styled, styled_negative = services.styles.apply(["Photo - Macro Detail", "Cinematic - Film Noir"], prompt, "")
    wait_value(page, "final-prompt", f"v === {styled!r}")
    expect(textbox(page, "final-negative")).to_have_value(styled_negative)
    order = page.locator("#styles-selected li").evaluate_all("items => items.map(li => li.dataset.style)")
    assert order == ["Photo - Macro Detail", "Cinematic - Film Noir"]
    page.locator("#styles label", has_text="Cinematic - Film Noir").hover()  # the hover card shows the template
    page.wait_for_selector("#easel-style-card:not([hidden])")
    assert "film noir scene of {prompt}" in page.inner_text("#easel-style-card")
    shot(page, "13-styles-tab-two-picked")
    textbox(page, "style-search").fill("blue preview")  # a style with a preview image: its thumbnail
    page.locator("#styles label", has_text="Test - Blue Preview").hover()
    page.wait_for_function("""() => { const img = document.querySelector('#easel-style-card img');
        return img && img.complete && img.naturalWidth === 192; }""")
    shot(page, "14-style-hover-preview")

    open_tab(page, "Setting")
    pick_radio(page, "performance", "Quick")
    page.click("#generate")
    assert wait_state(page, "done", "failed").startswith("Done: 1 image in ")
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 1")
    [entry] = services.history.list("lighthouse keeper")
    meta = read_metadata(entry.path)
    assert meta.infotext.startswith(styled + "\nNegative prompt: " + styled_negative)
    assert meta.params["Performance"] == "Quick" and meta.params["Steps"] == 2
    assert meta.params["Styles"] == ["Photo - Macro Detail", "Cinematic - Film Noir"]
    assert meta.request["styles"] == ["Photo - Macro Detail", "Cinematic - Film Noir"]
    assert meta.request["performance"] == "Quick" and meta.request["prompt"] == prompt

    # change the form, then restore the image from History: styles (in order) and mode come back
    open_tab(page, "Styles")
    page.click("#styles-clear")
    page.wait_for_function("[...document.querySelectorAll('#styles input')].every(i => !i.checked)")
    open_tab(page, "Setting")
    pick_radio(page, "performance", "Long")
    open_tab(page, "History")
    page.wait_for_function("document.querySelectorAll('#history-gallery img').length >= 1")
    page.locator("#history-gallery img").first.click()
    wait_value(page, "history-details", "v.includes('Performance: Quick')")
    page.click("#history-restore")
    open_tab(page, "Styles")
    page.wait_for_function("document.querySelectorAll('#styles input:checked').length === 2")
    assert picked_styles(page) == ["Photo - Macro Detail", "Cinematic - Film Noir"]
    wait_value(page, "final-prompt", f"v === {styled!r}")
    open_tab(page, "Setting")
    expect(page.locator("#performance input:checked")).to_have_attribute("value", "Quick")
    expect(textbox(page, "prompt")).to_have_value(prompt)

    # and Stop during a long job: the page says so and keeps the images already made (none yet)
    pick_radio(page, "performance", "Long")
    record_status_changes(page)
    # held at step 2 until the Stop has reached the engine: on a busy machine the 150 steps could end first
    with StepGate(services.queue, lambda request: request.performance == "Long", step=2) as gate:
        page.click("#generate")
        gate.wait()
        page.wait_for_function("document.querySelector('#status').innerText.includes('Step ')")
        assert re.match(r"Step \d+/150", status(page)[1]), list(dict.fromkeys(page.evaluate("window.__statuses")))
        shot(page, "18-long-job-running")
        page.click("#stop")
        wait_until(lambda: services.queue.running().cancel_requested)
    assert wait_state(page, "stopped", "failed") == "Stopped (0 images kept)"
    assert services.history.count("lighthouse keeper") == 1
