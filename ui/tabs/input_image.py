"""The Input Image panel (Fooocus's): a checkbox under the prompt opens it; drop or paste an image, pick what
to do with it ("Upscale or Variation": the engine's input modes), or send a result there with the Vary and
Upscale buttons under the gallery and in History. Beside it, "Inpaint or Outpaint" (tabs/inpaint.py); the tab
shown when Generate is pressed is the one the job uses (the `input_tab` field)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from pipelines import InputModes
from ui.form.image_parts import PART_DEFAULTS
from ui.form.inpaint_parts import INPAINT_TAB, UOV_TAB
from ui.tabs import inpaint
from ui.tabs.inpaint import InpaintTab


@dataclass
class InputPanel:
    enabled: gr.Checkbox
    panel: gr.Group
    image: gr.Image  # the picture, as a file path (stored in the engine's input store on Generate)
    mode: gr.Radio
    source: gr.State  # the result it was sent from (its file), None for an upload
    tabs: gr.Tabs
    tab: gr.Textbox  # hidden: "uov" or "inpaint", the tab shown
    inpaint: InpaintTab

    def fields(self) -> dict[str, Any]:
        return {"input_enabled": self.enabled, "input_mode": self.mode, "input_tab": self.tab, **self.inpaint.fields()}

    def shown(self) -> dict[str, Any]:
        return {"input_panel": self.panel, "input_tabs": self.tabs}


def mode_choices() -> list[tuple[str, str]]:
    """The modes of "Upscale or Variation": those that take no mask, and A1111's img2img."""
    return [(mode.label, mode.key) for mode in InputModes().all() if mode.mask != "required"]


def build_toggle(initial: dict[str, Any]) -> gr.Checkbox:
    return gr.Checkbox(bool(initial.get("input_enabled")), label="Input Image", elem_id="input-enabled", container=False)


def build_panel(ctx, enabled: gr.Checkbox, initial: dict[str, Any]) -> InputPanel:
    tab_now = initial.get("input_tab") or UOV_TAB
    with gr.Group(visible=bool(initial.get("input_enabled")), elem_id="input-panel") as panel:
        tab = gr.Textbox(tab_now, visible=False, elem_id="input-tab")
        with gr.Tabs(selected=tab_now, elem_id="input-tabs") as tabs:
            with gr.Tab("Upscale or Variation", id=UOV_TAB, elem_id="tab-uov") as uov_tab:
                with gr.Row():
                    image = gr.Image(
                        label="Image",
                        type="filepath",
                        sources=["upload", "clipboard"],
                        elem_id="input-image",
                        height=260,
                        image_mode=None,
                    )
                    mode = gr.Radio(
                        mode_choices(),
                        value=initial.get("input_mode", PART_DEFAULTS["input_mode"]),
                        label="Upscale or Variation",
                        elem_id="input-mode",
                        info="Vary re-makes part of the image (Subtle 0.5, Strong 0.85); Upscale enlarges it with the "
                        "upscaler model, then adds detail (Fast: the upscaler only). Prompt, styles, LoRAs and seed apply.",
                    )
            with gr.Tab("Inpaint or Outpaint", id=INPAINT_TAB, elem_id="tab-inpaint") as inpaint_tab:
                inpaint_part = inpaint.build(ctx, initial)
    uov_tab.select(lambda: UOV_TAB, None, tab, show_progress="hidden", api_visibility="private")
    inpaint_tab.select(lambda: INPAINT_TAB, None, tab, show_progress="hidden", api_visibility="private")
    source = gr.State(None)
    enabled.change(lambda on: gr.update(visible=bool(on)), enabled, panel, show_progress="hidden", api_visibility="private")
    # a new upload is not a sent result: forget where the previous picture came from
    image.upload(lambda _: None, image, source, show_progress="hidden", api_visibility="private")
    return InputPanel(enabled, panel, image, mode, source, tabs, tab, inpaint_part)
