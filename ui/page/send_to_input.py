"""Sending a result to the Input Image panel: the Vary and Upscale buttons under the gallery and in History
open the panel with that image, the mode picked, and remember which result it came from (for History's
click-through); Inpaint puts it in the Inpaint tab's editor, for another round. Called once by
gradio_app.build_ui inside the Blocks being built."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ui.form.inpaint_parts import INPAINT_TAB
from ui.tabs.inpaint import with_picture

QUIET = dict(show_progress="hidden", api_visibility="private")
MODES = {"vary": "vary_subtle", "upscale": "upscale_2"}


def send(path: str | None, mode: str) -> tuple:
    if not path or not Path(path).is_file():
        raise gr.Error("That image is no longer on disk.", print_exception=False)
    return True, gr.update(visible=True), path, path, MODES[mode]


def send_to_inpaint(path: str | None) -> tuple:
    if not path or not Path(path).is_file():
        raise gr.Error("That image is no longer on disk.", print_exception=False)
    return True, gr.update(visible=True), with_picture(path), path, INPAINT_TAB, gr.Tabs(selected=INPAINT_TAB)


def connect(main, history_tab) -> None:
    panel = main.inputs
    outputs = [panel.enabled, panel.panel, panel.image, panel.source, panel.mode]
    to_inpaint = [panel.enabled, panel.panel, panel.inpaint.editor, panel.source, panel.tab, panel.tabs]

    def gallery_path(images: list[dict], index: int | None) -> str:
        if index is None or not 0 <= index < len(images or []):
            raise gr.Error("Pick an image in the gallery first.", print_exception=False)
        return images[index]["path"]

    main.to_inpaint.click(
        lambda images, index: send_to_inpaint(gallery_path(images, index)), [main.shown, main.selected], to_inpaint, **QUIET
    )
    history_tab.to_inpaint.click(
        lambda found: send_to_inpaint((found or {}).get("path")), history_tab.pending, to_inpaint, **QUIET
    )

    def from_gallery(mode: str):
        def handler(images: list[dict], index: int | None) -> tuple:
            if index is None or not 0 <= index < len(images or []):
                raise gr.Error("Pick an image in the gallery first.", print_exception=False)
            return send(images[index]["path"], mode)

        return handler

    def from_history(mode: str):
        def handler(found: dict | None) -> tuple:
            return send((found or {}).get("path"), mode)

        return handler

    for mode, button in (("vary", main.to_vary), ("upscale", main.to_upscale)):
        button.click(from_gallery(mode), [main.shown, main.selected], outputs, **QUIET)
    for mode, button in (("vary", history_tab.to_vary), ("upscale", history_tab.to_upscale)):
        button.click(from_history(mode), history_tab.pending, outputs, **QUIET)
