"""What the browser tests do on the page: pick, type, wait, read, and save screenshots.

Selectors follow the page's elem_ids (ui/); every wait is Playwright's own, so a busy machine only slows
the tests down.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"

RECORD_ERROR_TOASTS = """
window.__errorToasts = [];
new MutationObserver(() => {
    for (const toast of document.querySelectorAll('[data-testid="toast-body"].error:not([data-seen])')) {
        toast.dataset.seen = '1';
        window.__errorToasts.push(toast.innerText);
    }
}).observe(document, {subtree: true, childList: true});
"""


# The page remembers its form in localStorage, encrypted by Gradio's BrowserState. To know that a save has
# landed (rather than sleeping and hoping), record the plain settings object each time one is written.
RECORD_SAVED_SETTINGS = """
(() => {
    const stringify = JSON.stringify, setItem = Storage.prototype.setItem;
    let pending = null;
    JSON.stringify = function (value, ...rest) {
        const text = stringify.call(this, value, ...rest);
        if (value && typeof value === 'object' && 'launch_preset' in value && 'values' in value) pending = text;
        return text;
    };
    Storage.prototype.setItem = function (key, value) {
        setItem.call(this, key, value);
        if (key === 'easel-settings' && pending !== null) { window.__easelSaved = JSON.parse(pending); pending = null; }
    };
})();
"""


def wait_saved(page, check: str) -> None:
    """Wait until the form last written to localStorage satisfies `check`, a JS expression over `values`."""
    page.wait_for_function(f"() => {{ const values = (window.__easelSaved || {{}}).values; return !!values && ({check}); }}")


def shot(page, name: str) -> None:
    from playwright.sync_api import Error as PlaywrightError

    for close in page.locator("[data-testid='toast-close']").all():  # notices fade anyway; keep the shot clear
        try:
            close.click(timeout=2_000)
        except PlaywrightError:
            pass  # it faded meanwhile
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def pick_radio(page, elem_id: str, label: str) -> None:
    page.locator(f"#{elem_id} label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")).click()


def pick_option(page, elem_id: str, label: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.locator(f"li[role=option][aria-label='{label}']").click()
    wait_value(page, elem_id, f"v === '{label}'")


def set_number(page, selector: str, value) -> None:
    field = page.locator(f"{selector} input[type=number]").first
    field.fill(str(value))
    field.press("Tab")


def status(page) -> tuple[str, str]:
    bar = page.locator("#status .easel-progress")
    return bar.get_attribute("data-state"), bar.inner_text()


def wait_state(page, *states: str) -> str:
    selector = ", ".join(f'#status .easel-progress[data-state="{s}"]' for s in states)
    page.wait_for_selector(selector)
    return status(page)[1]


def record_status_changes(page) -> None:
    """Keep every progress text the page shows, so a fast job's steps can still be checked afterwards."""
    page.evaluate("""() => {
        window.__statuses = [];
        const note = () => { const bar = document.querySelector('#status .easel-progress');
            if (bar) window.__statuses.push(bar.dataset.state + '|' + bar.innerText); };
        new MutationObserver(note).observe(document.querySelector('#status'),
            {subtree: true, childList: true, characterData: true, attributes: true});
    }""")


def wait_value(page, elem_id: str, check: str) -> None:
    """Wait until the text field `elem_id` has a value for which the JS expression `check` (on `v`) holds."""
    page.wait_for_function(f"""() => {{ const el = document.querySelector('#{elem_id} textarea, #{elem_id} input');
        if (!el) return false; const v = el.value; return {check}; }}""")


def textbox(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def pick_style(page, name: str) -> None:
    """Find a style with the search box, then tick it."""
    textbox(page, "style-search").fill(name)
    label = page.locator("#styles label", has_text=re.compile(rf"^\s*{re.escape(name)}\s*$"))
    label.click()
    page.wait_for_function(
        """(name) => [...document.querySelectorAll('#styles label')]
        .some(l => l.innerText.trim() === name && l.querySelector('input').checked)""",
        arg=name,
    )


SHOWN_ORDER = """labels => labels.map((l, i) => [Number(l.style.order || 0), i, l])
    .sort((a, b) => a[0] - b[0] || a[1] - b[1]).map(item => item[2])"""


def visible_styles(page) -> list[str]:
    """The styles the list shows, in the order it shows them."""
    return page.locator("#styles label").evaluate_all(f"""labels => ({SHOWN_ORDER})(labels)
        .filter(l => l.style.display !== 'none').map(l => l.innerText.trim())""")


def picked_styles(page) -> list[str]:
    """The ticked styles in the order the list shows them (the order they apply)."""
    return page.locator("#styles label").evaluate_all(f"""labels => ({SHOWN_ORDER})(labels)
        .filter(l => l.querySelector('input').checked).map(l => l.innerText.trim())""")
