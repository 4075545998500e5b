"""The Models tab: the base checkpoint with its architecture, a refresh, and the files that cannot be used.

LoRA slots, the refiner and the VAE override join this tab when the engine supports them.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from pipelines.types import ModelKind

from ..context import UIContext, describe_record


@dataclass
class ModelsTab:
    model: gr.Dropdown
    model_info: gr.Markdown
    refresh: gr.Button
    unusable: gr.Markdown

    def fields(self) -> dict[str, Any]:
        return {"model": self.model}


def unusable_markdown(ctx: UIContext) -> str:
    """The files the registry found but cannot use, each with its reason; empty when there are none."""
    rows = ctx.unusable_models()
    if not rows:
        return ""
    lines = ["**Files that cannot be used:**", ""]
    lines += [f"- `{html.escape(name)}`: {html.escape(reason)}" for name, reason in rows]
    return "\n".join(lines)


def model_info(ctx: UIContext, model: str | None) -> str:
    record = ctx.record(model)
    return describe_record(record) if record is not None else ctx.notice()


def build(ctx: UIContext, initial: dict[str, Any]) -> ModelsTab:
    with gr.Row(elem_id="model-row"):
        model = gr.Dropdown(ctx.model_choices(), value=initial["model"], label="Base model (checkpoint)",
                            elem_id="model", scale=4)
        refresh = gr.Button("Refresh", elem_id="refresh-models", size="sm", scale=1, min_width=90)
    info = gr.Markdown(model_info(ctx, initial["model"]), elem_id="model-info")
    folder = ctx.services.registry.folder(ModelKind.CHECKPOINT)
    gr.Markdown(f"Put checkpoints (SD 1.x, SDXL; `.safetensors` or diffusers folders) in `{folder}`, then press "
                "Refresh. Each file's architecture is read from its tensors.", elem_classes=["easel-hint"])
    unusable = gr.Markdown(unusable_markdown(ctx), elem_id="unusable-models")
    model.change(lambda name: model_info(ctx, name), model, info, show_progress="hidden", api_visibility="private")
    return ModelsTab(model, info, refresh, unusable)
