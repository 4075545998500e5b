"""Fooocus's sampling controls in the Advanced tab, and its prompt expansion ("Fooocus V2") in the Styles tab.

The controls start at Fooocus's values (the engine's tables/quality.yaml, through the form's defaults and
the presets). A fast performance mode switches sharpness, adaptive CFG and ADM off in the engine, as Fooocus
does; here those sliders are then greyed, saying so, and keep the user's values for the other modes. ADM acts on SDXL only and is greyed, saying so, for other models. The expansion list offers the
models found in models/prompt_expansion; without any it is greyed and says where to get one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import gradio as gr

from pipelines import Architecture, InvalidRequest, swap_methods, where_to_get_one
from ui.context import UIContext

ADM_FIELDS = ("adm_positive", "adm_negative", "adm_end")
SLIDERS: dict[str, tuple[str, float, float, float, str]] = {  # field: (label, min, max, step, what it does)
    "sharpness": ("Sharpness", 0, 30, 0.1, "Smooths flat areas of the prediction and keeps edges; higher is sharper."),
    "adaptive_cfg": (
        "CFG mimicking from TSNR (adaptive CFG)",
        0,
        30,
        0.1,
        "Above this guidance, early steps guide as at this value, so high CFG does not burn the image; 0 = off.",
    ),
    "adm_positive": ("ADM guidance: positive scale", 0.1, 3, 0.01, "SDXL's size conditioning of the prompt (1 = off)."),
    "adm_negative": ("ADM guidance: negative scale", 0.1, 3, 0.01, "… and of the negative prompt (1 = off)."),
    "adm_end": ("ADM guidance: end at", 0, 1, 0.01, "Fraction of the denoising the ADM scales act for."),
    "freeu_b1": ("FreeU b1", 0, 2, 0.01, "Backbone scale, first up-block."),
    "freeu_b2": ("FreeU b2", 0, 2, 0.01, "Backbone scale, second up-block."),
    "freeu_s1": ("FreeU s1", 0, 4, 0.01, "Skip scale, first up-block."),
    "freeu_s2": ("FreeU s2", 0, 4, 0.01, "Skip scale, second up-block."),
}
EXPANSION_LABEL = "Fooocus V2 (prompt expansion)"


@dataclass
class ControlsPanel:
    widgets: dict[str, Any]  # field name -> widget

    def fields(self) -> dict[str, Any]:
        return dict(self.widgets)


def _slider(name: str, value: Any) -> gr.Slider:
    label, low, high, step, info = SLIDERS[name]
    return gr.Slider(low, high, value, step=step, label=label, info=info, elem_id=name.replace("_", "-"))


def build(ctx: UIContext, initial: dict[str, Any]) -> ControlsPanel:
    """The controls, in an accordion of the Advanced tab (call inside its column)."""
    widgets: dict[str, Any] = {}
    with gr.Accordion("Sampling controls (Fooocus)", open=False, elem_id="quality-controls"):
        widgets["sharpness"] = _slider("sharpness", initial["sharpness"])
        widgets["adaptive_cfg"] = _slider("adaptive_cfg", initial["adaptive_cfg"])
        with gr.Row():
            for name in ADM_FIELDS:
                widgets[name] = _slider(name, initial[name])
        widgets["freeu"] = gr.Checkbox(initial["freeu"], label="FreeU", elem_id="freeu", info="Re-weights the UNet's features.")
        with gr.Row():
            for name in ("freeu_b1", "freeu_b2", "freeu_s1", "freeu_s2"):
                widgets[name] = _slider(name, initial[name])
        methods = swap_methods()
        widgets["refiner_swap"] = gr.Dropdown(
            [(f"{name}: {what}", name) for name, what in methods.items()],
            value=initial["refiner_swap"],
            label="Refiner swap method",
            elem_id="refiner-swap",
            info="How the SDXL refiner (Models tab) takes over at its switch.",
        )
    return ControlsPanel(widgets)


def widgets(ctx: UIContext, values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Renders: what the picked mode switches off is greyed (the value kept for other modes); ADM greyed off SDXL."""
    out: dict[str, dict[str, Any]] = {}
    try:
        mode = ctx.tables.performance.get(str(values["performance"])) if values.get("performance") else None
    except InvalidRequest:
        mode = None  # Custom
    fixed = mode.controls if mode is not None else {}
    sdxl = ctx.architecture(values.get("model")) in (Architecture.SDXL, Architecture.UNKNOWN)
    for name in SLIDERS:
        if name not in values:
            continue
        label, *_, info = SLIDERS[name]
        if name in fixed:
            out[name] = {"value": values[name], "interactive": False, "info": f"Off in {mode.name}, as in Fooocus. {info}"}
        elif name in ADM_FIELDS and not sdxl:
            out[name] = {"value": values[name], "interactive": False, "info": f"SDXL only: {info}"}
        else:
            out[name] = {"value": values[name], "interactive": True, "info": info}
    if "prompt_expansion" in values:
        out["prompt_expansion"] = expansion_state(ctx, values.get("prompt_expansion"))
    return out


# -- the Styles tab's entry --------------------------------------------------------------------------------


def expansion_state(ctx: UIContext, value: Any) -> dict[str, Any]:
    """The expansion list: Off and the installed models; greyed, saying where to get one, without any."""
    names = [r.name for r in ctx.expansion_records()]
    choices = [("Off", ""), *((name, name) for name in names)]
    chosen = str(value or "")
    state: dict[str, Any] = {"choices": choices, "value": chosen if chosen in names else "", "interactive": bool(names)}
    if names:
        state["info"] = (
            "Adds words that describe the prompt, chosen by each image's seed, after the styled prompt; "
            "each image's parameters show them."
        )
    else:
        state["info"] = f"No prompt-expansion model installed. {where_to_get_one(ctx.services.registry)}"
    return state


def build_expansion(ctx: UIContext, initial: dict[str, Any]) -> gr.Radio:
    state = expansion_state(ctx, initial.get("prompt_expansion"))
    return gr.Radio(
        state["choices"],
        value=state["value"],
        label=EXPANSION_LABEL,
        info=state["info"],
        interactive=state["interactive"],
        elem_id="prompt-expansion",
    )
