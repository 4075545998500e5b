"""The main column: prompt, Generate/Stop/Skip, progress, live preview, the job's gallery and its parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ui.context import UIContext
from ui.page.streaming import idle_html
from ui.tabs.input_image import InputPanel, build_panel, build_toggle


@dataclass
class GenerateColumn:
    notice: gr.Markdown
    prompt: gr.Textbox
    generate: gr.Button
    stop: gr.Button
    skip: gr.Button
    status: gr.HTML
    speed: gr.HTML  # about how long the form's job takes here (ui/page/speed.py)
    optimizing: gr.HTML  # the one-time compile while it runs
    preview: gr.HTML
    gallery: gr.Gallery
    parameters: gr.Textbox
    restore: gr.Button
    job_id: gr.State  # this tab's running job
    shown: gr.State  # the gallery's images as dicts (path, seed, infotext)
    selected: gr.State  # index of the image whose parameters are shown
    inputs: InputPanel
    to_vary: gr.Button  # send the selected result to Input Image
    to_upscale: gr.Button
    to_inpaint: gr.Button

    def fields(self) -> dict[str, Any]:
        return {"prompt": self.prompt, **self.inputs.fields()}

    def shown_widgets(self) -> dict[str, Any]:
        return self.inputs.shown()


def build(ctx: UIContext, initial: dict[str, Any]) -> GenerateColumn:
    notice_text = ctx.notice()
    notice = gr.Markdown(notice_text, elem_id="model-notice", visible=bool(notice_text))
    prompt = gr.Textbox(
        initial["prompt"],
        label="Prompt",
        lines=3,
        max_lines=12,
        elem_id="prompt",
        autofocus=True,
        placeholder="Describe the image… (Ctrl+Enter generates)",
    )
    with gr.Row(elem_id="actions"):
        generate = gr.Button("Generate", variant="primary", elem_id="generate", scale=3, min_width=110)
        stop = gr.Button("Stop", variant="stop", elem_id="stop", scale=1, min_width=64)
        skip = gr.Button("Skip", elem_id="skip", scale=1, min_width=64)
    toggle = build_toggle(initial)
    inputs = build_panel(ctx, toggle, initial)
    status = gr.HTML(idle_html(), elem_id="status")
    speed = gr.HTML("", elem_id="estimate")
    optimizing = gr.HTML("", elem_id="optimizing")
    with gr.Row(elem_id="results"):
        preview = gr.HTML("", elem_id="preview", min_height=0)
        gallery = gr.Gallery(
            label="Images",
            columns=2,
            height="auto",
            object_fit="contain",
            elem_id="gallery",
            preview=False,
            allow_preview=True,
            buttons=["download", "fullscreen"],
            interactive=False,
        )
    with gr.Accordion("Image parameters", open=False, elem_id="parameters-box") as box:
        parameters = gr.Textbox(
            label="Parameters of the selected image",
            lines=6,
            max_lines=16,
            interactive=False,
            elem_id="parameters",
            buttons=["copy"],
            placeholder="Click an image in the gallery to see how it was made.",
        )
        with gr.Row():
            restore = gr.Button("Use these settings", elem_id="restore-selected", size="sm", interactive=False)
            to_vary = gr.Button("Vary", elem_id="to-vary", size="sm", interactive=False)
            to_upscale = gr.Button("Upscale", elem_id="to-upscale", size="sm", interactive=False)
            to_inpaint = gr.Button("Inpaint", elem_id="to-inpaint", size="sm", interactive=False)
    shown = gr.State([])
    selected = gr.State(None)
    job_id = gr.State(None)

    def on_select(images: list[dict], evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else None
        if index is None or not 0 <= index < len(images):
            off = gr.update(interactive=False)
            return gr.skip(), None, off, gr.skip(), off, off, off
        on = gr.update(interactive=True)
        return images[index]["infotext"], index, on, gr.update(open=True), on, on, on

    gallery.select(
        on_select,
        shown,
        [parameters, selected, restore, box, to_vary, to_upscale, to_inpaint],
        show_progress="hidden",
        api_visibility="private",
    )
    return GenerateColumn(
        notice,
        prompt,
        generate,
        stop,
        skip,
        status,
        speed,
        optimizing,
        preview,
        gallery,
        parameters,
        restore,
        job_id,
        shown,
        selected,
        inputs,
        to_vary,
        to_upscale,
        to_inpaint,
    )
