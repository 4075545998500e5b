"""The page's widgets by field name, and the one way a whole form is put on the page.

Gradio hands a handler its inputs keyed by component; `form_of` turns that into {field name: value},
the form that form.py and render.py speak. `updates` renders a form (after `UIContext.settle` made it
consistent with its model) into gr.update(...) per widget, optionally only for some widgets, so that a
handler never lists components by position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection

import gradio as gr

from ui.context import UIContext
from ui.form.fields import LORA_SLOTS, slot_names
from ui.page.render import render_form
from ui.tabs.quality import ADM_FIELDS

TEXT_FIELDS = ("prompt", "negative_prompt")  # never re-set while the user may be typing (model change, refresh)
# What depends on the model: re-rendered when another model is picked.
MODEL_DEPENDENT = frozenset(
    {
        "model_info",
        "aspect_ratio",
        "performance",
        "performance_notes",
        "steps",
        "cfg_scale",
        "sampler",
        "scheduler",
        "step_cache",
        "token_merging",
        "fast_decode",
        "refiner",
        "refiner_switch",
        "refiner_info",
        "lora_notes",
        *(slot_names(n)[1] for n in range(1, LORA_SLOTS + 1)),
        *ADM_FIELDS,  # SDXL only
    }
)
# What depends on the mode; the fast modes switch Fooocus's sharpness, adaptive CFG and ADM off, CPU Turbo
# turns its approximations on.
MODE_DEPENDENT = frozenset(
    {
        "performance",
        "performance_notes",
        "steps",
        "cfg_scale",
        "sampler",
        "scheduler",
        "sharpness",
        "adaptive_cfg",
        *ADM_FIELDS,
        "step_cache",
        "token_merging",
        "fast_decode",
    }
)


@dataclass
class Page:
    ctx: UIContext
    fields: dict[str, Any]  # form field name -> the widget holding it
    shown: dict[str, Any]  # every widget a render may set (the fields and read-only views), by name
    names: dict[Any, str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = {component: name for name, component in self.fields.items()}

    @property
    def inputs(self) -> set:
        return set(self.fields.values())

    @property
    def outputs(self) -> set:
        return set(self.shown.values())

    def form_of(self, values: dict) -> dict[str, Any]:
        """The widgets' values by field name (Gradio hands them over keyed by component)."""
        return {self.names[c]: v for c, v in values.items() if c in self.names}

    def settled(self, form: dict[str, Any], warn: bool = True) -> dict[str, Any]:
        """The form made consistent with its model; what had to change is shown as a warning."""
        form, notes = self.ctx.settle(form)
        for note in notes if warn else ():
            gr.Warning(note)
        return form

    def updates(self, form: dict[str, Any], only: Collection[str] | None = None, skip: Collection[str] = ()) -> dict:
        """gr.update(...) for every widget the form sets (or only those named), with choices that fit it."""
        rendered = render_form(form, self.ctx)
        return {
            self.shown[name]: gr.update(**kwargs)
            for name, kwargs in rendered.items()
            if name in self.shown and (only is None or name in only) and name not in skip
        }
