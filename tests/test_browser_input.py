"""The Input Image panel in headless Chromium, through the real engine: drop an image, Vary it, send the
result on to Upscale with the button under the gallery, and follow History from the upscale to its source."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.support.page_helpers import open_tab, pick_radio, shot, textbox, wait_state, wait_value
from tests.test_browser import app, browser, open_page  # noqa: F401 - the same app and browser fixtures

pytestmark = pytest.mark.browser


def test_drop_an_image_vary_it_then_upscale_the_result(app, open_page, tmp_path):  # noqa: F811
    services, _url = app
    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).resize((96, 80)).convert("RGBA")
    dropped = tmp_path / "photo.png"
    picture.save(dropped)

    page = open_page()
    expect(page.locator("#input-image")).to_be_hidden()
    page.locator("#input-enabled input").check()
    expect(page.locator("#input-image")).to_be_visible()
    page.locator("#input-image input[type=file]").set_input_files(str(dropped))
    page.wait_for_selector("#input-image img")
    pick_radio(page, "input-mode", "Vary (Subtle)")
    textbox(page, "prompt").fill("a quiet harbour")
    pick_radio(page, "performance", "Quick")
    shot(page, "20-input-image-vary")
    page.click("#generate")
    assert wait_state(page, "done", "failed").startswith("Done"), page.locator("#status").inner_text()
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 1")
    shot(page, "21-vary-done")

    [vary] = services.history.list("quiet harbour")
    assert vary.params.input_mode == "Vary (Subtle)" and vary.params.denoising_strength == 0.5
    assert (vary.params.width, vary.params.height) == (96, 80)  # the input's own size
    assert vary.request.input.mode == "vary_subtle" and vary.params.input_source is None
    stored = services.inputs.get(vary.params.input_image)
    assert np.array_equal(np.asarray(stored), np.asarray(picture.convert("RGB")))  # the drop, stored by its hash

    # the result goes on to Upscale (2x) with the button under the gallery
    page.locator("#gallery img").first.click()
    page.keyboard.press("Escape")
    page.click("#to-upscale")
    expect(page.locator("#input-mode input[value=upscale_2]")).to_be_checked()
    page.click("#generate")
    deadline = time.monotonic() + 300
    while services.history.count("quiet harbour") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    wait_state(page, "done")
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 1")
    shot(page, "22-upscale-done")
    upscale = next(e for e in services.history.list("quiet harbour") if e.id != vary.id)
    assert upscale.params.input_mode == "Upscale (2x)" and (upscale.params.width, upscale.params.height) == (192, 160)
    assert upscale.params.input_source == str(vary.path)

    # History: the upscale says what it was made from, and one click shows that image
    open_tab(page, "History")
    page.wait_for_function("document.querySelectorAll('#history-gallery img').length >= 2")
    page.locator("#history-gallery img").first.click()
    wait_value(page, "history-details", "v.includes('Upscale (2x) of')")
    page.click("#history-source")
    wait_value(page, "history-details", f"v.includes('Seed: {vary.params.seed}') && !v.includes('Upscale (2x) of')")
    assert re.search(r"Denoising strength: 0\.5", textbox(page, "history-details").input_value())
    shot(page, "23-history-source")
