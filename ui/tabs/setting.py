"""The Setting tab: preset, performance mode, aspect ratio, image number, negative prompt, seed, file format.

The modes are the engine's (pipelines/tables/performance.yaml); those that cannot run with the chosen
model are marked "(unavailable)" (page.js greys them out) and the reason is shown under the list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from pipelines import EXTENSIONS as OUTPUT_FORMATS
from ui.context import UIContext
from ui.page.render import aspect_state, mode_widgets


@dataclass
class SettingTab:
    preset: gr.Dropdown
    performance: gr.Radio
    performance_notes: gr.Markdown
    aspect_ratio: gr.Radio
    image_count: gr.Slider
    negative_prompt: gr.Textbox
    random_seed: gr.Checkbox
    seed: gr.Number
    output_format: gr.Radio

    def fields(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in (
                "preset",
                "performance",
                "aspect_ratio",
                "image_count",
                "negative_prompt",
                "random_seed",
                "seed",
                "output_format",
            )
        }

    def shown(self) -> dict[str, Any]:
        return {"performance_notes": self.performance_notes}


def build(ctx: UIContext, initial: dict[str, Any]) -> SettingTab:
    tables = ctx.tables
    architecture = ctx.architecture(initial.get("model"))
    preset = gr.Dropdown(
        ctx.presets.choices(),
        value=initial["preset"],
        label="Preset",
        elem_id="preset",
        info="Sets model, performance, styles, guidance, sampler and size at once.",
    )
    modes = mode_widgets(ctx, initial.get("model"), initial["performance"])
    performance = gr.Radio(
        modes["performance"]["choices"],
        value=modes["performance"]["value"],
        label="Performance",
        elem_id="performance",
        elem_classes=["easel-modes"],
        info="Sets steps, guidance and sampler; Custom keeps those set in Advanced.",
    )
    performance_notes = gr.Markdown(modes["performance_notes"]["value"], elem_id="performance-notes")
    aspect_ratio = gr.Radio(
        tables.sizes.choices(architecture),
        value=initial["aspect_ratio"],
        elem_id="aspect-ratio",
        **aspect_state(initial["custom_size"]),
    )
    image_count = gr.Slider(1, 32, initial["image_count"], step=1, label="Image number", elem_id="image-count")
    negative_prompt = gr.Textbox(
        initial["negative_prompt"],
        label="Negative prompt",
        lines=2,
        elem_id="negative-prompt",
        placeholder="What the image should not show",
    )
    with gr.Row(equal_height=True):
        random_seed = gr.Checkbox(initial["random_seed"], label="Random seed", elem_id="random-seed", scale=1)
        seed = gr.Number(
            initial["seed"], label="Seed", precision=0, minimum=0, elem_id="seed", scale=2, visible=not initial["random_seed"]
        )
    output_format = gr.Radio(list(OUTPUT_FORMATS), value=initial["output_format"], label="Output format", elem_id="output-format")
    random_seed.input(lambda on: gr.update(visible=not on), random_seed, seed, show_progress="hidden", api_visibility="private")
    return SettingTab(
        preset, performance, performance_notes, aspect_ratio, image_count, negative_prompt, random_seed, seed, output_format
    )
