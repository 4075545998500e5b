"""The settings tabs in headless Chromium, through the real engine: the performance modes in Setting, LoRA slots,
VAE and refiner in Models, the engine's default model and Refresh, Fooocus's controls in Advanced. The app and
the browser are test_browser.py's (its models folder, modes and presets)."""

from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import expect

from pipelines.types import Architecture, ModelKind
from tests.support.page_helpers import open_tab, pick_option, pick_radio, set_number, shot, textbox, wait_state, wait_value
from tests.test_browser import TRIGGERS, app, browser, open_page  # noqa: F401 - the same app and browser fixtures

pytestmark = pytest.mark.browser


def test_setting_tab_lists_the_engines_modes_and_explains_the_unavailable_one(app, open_page):  # noqa: F811
    services, _url = app
    page = open_page()
    expect(page.locator("#performance label")).to_have_text(["Quick", "Long", "Turbo", "Lightning (unavailable)", "Custom"])
    expect(page.locator("#performance input[value=Lightning]")).to_be_disabled()
    expect(page.locator("#performance input[value=Turbo]")).not_to_be_disabled()
    reason = services.performance.availability("Lightning", Architecture.SD1)
    assert reason in page.inner_text("#performance-notes")
    shot(page, "15-setting-modes-one-unavailable")

    # Turbo: the engine's mode path adds its acceleration LoRA; Advanced shows what the mode sets
    pick_radio(page, "performance", "Turbo")
    page.wait_for_function("document.querySelector('#performance-notes').innerText.includes('tiny acceleration')")
    open_tab(page, "Advanced")
    page.wait_for_function("document.querySelector('#steps input[type=number]').value === '2'")
    expect(page.locator("#cfg-scale input[type=number]")).to_have_value("1")
    textbox(page, "prompt").fill("a turbo fox")
    page.click("#generate")
    assert wait_state(page, "done", "failed").startswith("Done")
    [entry] = services.history.list("turbo fox")
    assert entry.params.performance == "Turbo" and entry.params.steps == 2 and entry.params.cfg_scale == 1.0
    assert [(lo.name, lo.weight) for lo in entry.params.loras] == [("tiny-turbo", 0.5)]
    # editing a field the mode sets switches to Custom; a mode that cannot run on SDXL falls back with a warning
    set_number(page, "#steps", 5)
    open_tab(page, "Setting")
    page.wait_for_function("document.querySelector('#performance input:checked').value === 'Custom'")
    pick_radio(page, "performance", "Turbo")
    open_tab(page, "Models")
    pick_option(page, "model", "tiny-sdxl  ·  SDXL")
    page.wait_for_selector("[data-testid='toast-body']:has-text('Turbo needs an SD 1.x model')")
    open_tab(page, "Setting")
    page.wait_for_function("document.querySelector('#performance input:checked').value === 'Custom'")
    assert "Turbo (unavailable)" in page.inner_text("#performance")


def test_lora_slots_vae_and_refiner_in_the_models_tab(app, open_page):  # noqa: F811
    services, _url = app
    page = open_page()
    open_tab(page, "Models")
    # SD 1.5 base: the refiner is locked at None, with the engine's reason
    expect(page.locator("#refiner input")).to_be_disabled()
    assert "A refiner works only with an SDXL base model; tiny-sd15 is SD 1.x" in page.inner_text("#refiner-info")
    # LoRA slot 1: the SD 1.5 LoRA, its trigger words shown and added to the prompt; slot 2: an SDXL LoRA, marked
    textbox(page, "prompt").fill("a paper fox")
    pick_option(page, "lora-1-name", "paper-cut  ·  SD 1.x")
    page.wait_for_function("document.querySelector('#lora-notes').innerText.includes('trigger words')")
    assert "papercut" in page.inner_text("#lora-notes")
    set_number(page, "#lora-1-weight", 0.8)
    pick_option(page, "lora-2-name", "xl-detail  ·  SDXL  ·  not for SD 1.x")
    page.wait_for_function("document.querySelector('#lora-notes').innerText.includes('is a LoRA for SDXL')")
    page.click("#lora-triggers")
    wait_value(page, "prompt", f"v === 'a paper fox, {TRIGGERS}'")
    page.locator("#skip-invalid-loras input").check()
    shot(page, "16-models-tab-lora-slots")
    open_tab(page, "Advanced")
    pick_option(page, "vae", "tiny-vae")  # VAE files do not tell SD 1.x from SDXL: listed by name only
    page.click("#generate")
    assert wait_state(page, "done", "failed").startswith("Done")
    [entry] = services.history.list("paper fox")
    assert [(lo.name, lo.weight) for lo in entry.params.loras] == [("paper-cut", 0.8)]  # the SDXL one left out
    assert entry.params.vae == "tiny-vae.safetensors"
    assert [(lo.name, lo.weight, lo.enabled) for lo in entry.request.loras] == [
        ("paper-cut", 0.8, True),
        ("xl-detail", 1.0, True),
    ]
    assert entry.request.skip_invalid_loras is True and entry.request.prompt == f"a paper fox, {TRIGGERS}"

    # SDXL base: the refiner list opens; the SD 1.5 LoRA is the one marked now
    open_tab(page, "Models")
    pick_option(page, "model", "tiny-sdxl  ·  SDXL")
    page.wait_for_function("!document.querySelector('#refiner input').disabled")
    pick_option(page, "refiner", "tiny-sdxl-refiner  ·  SDXL refiner")
    page.wait_for_function("document.querySelector('#lora-notes').innerText.includes('is a LoRA for SD 1.x')")
    shot(page, "17-models-tab-sdxl-with-refiner")


def test_a_new_page_follows_the_engines_default_model_and_refresh_finds_new_files(app, open_page):  # noqa: F811
    """The HTTP API can switch the engine's default model: a page opened afterwards starts with it. Refresh
    rescans the folders and updates every list."""
    services, _url = app
    services.manager.set_default_model("tiny-sdxl")
    try:
        page = open_page()
        open_tab(page, "Models")
        wait_value(page, "model", "v === 'tiny-sdxl  ·  SDXL'")
        expect(page.locator("#refiner input")).not_to_be_disabled()
        open_tab(page, "Setting")
        page.wait_for_selector("#aspect-ratio label:has-text('1728×576')")
    finally:
        services.manager.set_default_model(None)
    loras = services.registry.folder(ModelKind.LORA)
    added = loras / "paper-cut-copy.safetensors"
    shutil.copy(loras / "paper-cut.safetensors", added)
    try:
        open_tab(page, "Models")
        page.click("#refresh-models")
        page.locator("#lora-4-name input").click()
        page.wait_for_selector("li[role=option][aria-label^='paper-cut-copy']")
        page.keyboard.press("Escape")
    finally:
        added.unlink()
        services.registry.refresh()


def test_fooocus_controls_in_advanced_reach_the_engine_and_the_expansion_entry_says_where_to_get_a_model(app, open_page):  # noqa: F811
    services, _url = app
    page = open_page()
    open_tab(page, "Styles")
    entry = page.locator("#prompt-expansion")
    expect(entry).to_contain_text("Fooocus V2 (prompt expansion)")
    expect(entry).to_contain_text("No prompt-expansion model installed")
    expect(page.locator("#prompt-expansion input")).to_be_disabled()  # only "Off", greyed
    open_tab(page, "Advanced")
    page.locator("#quality-controls").get_by_text("Sampling controls (Fooocus)").click()
    expect(page.locator("#sharpness input[type=number]")).to_have_value("2")
    expect(page.locator("#adaptive-cfg input[type=number]")).to_have_value("7")
    set_number(page, "#sharpness", 6)
    shot(page, "17-advanced-fooocus-controls")
    textbox(page, "prompt").fill("a sharpened fox")
    page.click("#generate")
    assert wait_state(page, "done", "failed").startswith("Done")
    [entry] = services.history.list("sharpened fox")
    assert entry.params.sharpness == 6 and entry.params.adaptive_cfg == 0  # the tiny preset's CFG 5 is below 7


def test_token_merging_in_advanced_reaches_the_engine_and_switches_the_mode_to_custom(app, open_page):  # noqa: F811
    services, _url = app
    page = open_page()
    open_tab(page, "Advanced")
    expect(page.locator("#token-merging input[type=number]")).to_have_value("0")
    set_number(page, "#token-merging", 0.5)
    open_tab(page, "Setting")
    page.wait_for_function("document.querySelector('#performance input:checked').value === 'Custom'")
    textbox(page, "prompt").fill("a merged fox")
    page.click("#generate")
    assert wait_state(page, "done", "failed").startswith("Done")
    [entry] = services.history.list("merged fox")
    assert entry.params.token_merging == 0.5 and entry.request.token_merging == 0.5
