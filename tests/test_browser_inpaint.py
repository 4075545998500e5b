"""The Inpaint or Outpaint tab in headless Chromium, through the real engine: drop a picture in the editor, paint a
stroke over part of it with the mouse, run Inpaint, and check the result keeps every unmasked pixel of the input;
then send the result back in for another round with the Inpaint button under the gallery."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from pipelines.outputs.metadata import infotext
from tests.support.page_helpers import open_tab, pick_radio, set_number, shot, textbox, wait_state
from tests.test_browser import app, browser, open_page  # noqa: F401 - the same app and browser fixtures

pytestmark = pytest.mark.browser


def paint_stroke(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Pick the brush, then drag the mouse across the editor's canvas, from and to fractions of its width and height."""
    page.locator("#inpaint-editor button[aria-label=Brush]").click()
    canvas = page.locator("#inpaint-editor canvas").first
    box = canvas.bounding_box()
    x0, y0 = box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"]
    x1, y1 = box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x0 + (x1 - x0) * i / 10, y0 + (y1 - y0) * i / 10)
    page.mouse.up()


def drop_into_editor(page, path) -> None:
    """Give the editor a picture through its file input, again if the editor was not listening yet (it is laid out
    when its tab is first shown)."""
    placeholder = page.locator("#inpaint-editor").get_by_text("Upload an image")
    expect(page.locator("#inpaint-editor button[aria-label=Brush]")).to_be_visible()
    for _ in range(3):
        page.locator("#inpaint-editor input[type=file]").first.set_input_files(str(path))
        try:
            expect(placeholder).to_be_hidden(timeout=15_000)
            break
        except AssertionError:
            continue
    expect(placeholder).to_be_hidden()
    page.wait_for_timeout(500)  # and laid out on the canvas


def test_paint_a_mask_inpaint_and_the_rest_of_the_picture_is_kept(app, open_page, tmp_path):  # noqa: F811
    services, _url = app
    rng = np.random.default_rng(7)
    picture = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((128, 128))
    dropped = tmp_path / "photo.png"
    picture.save(dropped)

    page = open_page()
    page.locator("#input-enabled input").check()
    open_tab(page, "Inpaint or Outpaint")
    drop_into_editor(page, dropped)
    paint_stroke(page, (0.3, 0.5), (0.7, 0.5))
    shot(page, "30-inpaint-painted")
    page.locator("#inpaint-settings").click()  # More inpaint settings: no blur, so the mask's edge is exact
    expect(page.locator("#mask-blur input[type=number]")).to_be_visible()
    set_number(page, "#mask-blur", 0)
    expect(page.locator("#mask-blur input[type=number]")).to_have_value("0")
    textbox(page, "prompt").fill("a stone bridge")
    pick_radio(page, "performance", "Quick")
    page.click("#generate")
    assert wait_state(page, "done", "failed").startswith("Done"), page.locator("#status").inner_text()
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 1")
    shot(page, "31-inpaint-done")

    [entry] = services.history.list("stone bridge")
    params = entry.params
    assert params.input_mode == "Inpaint or Outpaint (default)" and params.mask_image and params.mask_blur_x == 0
    assert entry.request.input.mode == "inpaint" and entry.request.input.mask == params.mask_image
    mask = np.asarray(services.inputs.get_mask(params.mask_image)) > 0
    assert 0.05 < mask.mean() < 0.6 and mask[64, 48:80].all() and not mask[:16].any()  # a band across the middle
    with Image.open(entry.path) as saved:
        result = np.asarray(saved.convert("RGB"))
    assert result.shape == (128, 128, 3)
    assert np.array_equal(result[~mask], np.asarray(picture)[~mask])  # every unmasked pixel is the input's
    assert (result[mask] != np.asarray(picture)[mask]).mean() > 0.5

    # another round: the result goes back into the editor with the button under the gallery
    page.locator("#gallery img").first.click()
    page.keyboard.press("Escape")
    page.click("#to-inpaint")
    expect(page.get_by_role("tab", name="Inpaint or Outpaint")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#inpaint-editor").get_by_text("Upload an image")).to_be_hidden()
    page.wait_for_timeout(500)
    paint_stroke(page, (0.5, 0.15), (0.5, 0.35))
    page.locator("#invert-mask input").check()  # now everything but the stroke is changed
    shot(page, "32-inpaint-again-inverted")
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('#status .easel-progress')?.dataset.state !== 'done'")
    assert wait_state(page, "done", "failed").startswith("Done"), page.locator("#status").inner_text()
    second = next(e for e in services.history.list("stone bridge") if e.id != entry.id)
    assert second.params.input_source == str(entry.path) and second.params.mask_inverted
    stroke = np.asarray(services.inputs.get_mask(second.params.mask_image)) > 0
    assert stroke.mean() < 0.4 and stroke[32, 64]  # the stroke (at the top, in the middle) is what is kept
    with Image.open(second.path) as saved:
        again = np.asarray(saved.convert("RGB"))
    assert np.array_equal(again[stroke], result[stroke])  # the second round keeps the first round's pixels there
    assert (again[~stroke] != result[~stroke]).mean() > 0.5  # and re-makes the rest
    assert "Mask mode: Inpaint not masked" in infotext(second.params)
