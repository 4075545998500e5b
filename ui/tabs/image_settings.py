"""Advanced settings of image input and the hires fix: Fooocus's forced overwrites of the Vary/Upscale
strength and factor (-1: the mode's own), the upscaler, and A1111's hires fix for text to image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ui.context import UIContext
from ui.form.image_parts import AUTOMATIC, PART_DEFAULTS, SAME_SAMPLER


def upscaler_choices(ctx: UIContext, latent: bool) -> list[str]:
    library = ctx.services.upscalers
    return [*(library.latent_names() if latent else [AUTOMATIC]), *library.pixel_names()]


def widgets(ctx: UIContext, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The upscaler lists as they are now (models may have been added), keeping the picks still offered."""
    out = {}
    for name, latent in (("input_upscaler", False), ("hires_upscaler", True)):
        choices = upscaler_choices(ctx, latent)
        value = values.get(name)
        out[name] = {"choices": choices, "value": value if value in choices else PART_DEFAULTS[name]}
    return out


@dataclass
class ImageSettings:
    input_denoise: gr.Slider
    input_scale: gr.Slider
    input_upscaler: gr.Dropdown
    hires_enabled: gr.Checkbox
    hires_upscaler: gr.Dropdown
    hires_scale: gr.Slider
    hires_steps: gr.Slider
    hires_denoise: gr.Slider
    hires_prompt: gr.Textbox
    hires_sampler: gr.Dropdown

    def fields(self) -> dict[str, Any]:
        return dict(vars(self))


def build(ctx: UIContext, initial: dict[str, Any]) -> ImageSettings:
    value = {**PART_DEFAULTS, **initial}
    with gr.Accordion("Input image: Vary and Upscale", open=False, elem_id="input-settings"):
        input_denoise = gr.Slider(
            -1,
            1,
            value["input_denoise"],
            step=0.001,
            label="Forced denoising strength",
            elem_id="input-denoise",
            info="-1: the mode's own (Vary Subtle 0.5, Strong 0.85, Upscale 0.382).",
        )
        input_scale = gr.Slider(
            -1,
            8,
            value["input_scale"],
            step=0.05,
            label="Forced upscale factor",
            elem_id="input-scale",
            info="-1: the mode's own (1.5 or 2).",
        )
        input_upscaler = gr.Dropdown(
            upscaler_choices(ctx, latent=False),
            value=value["input_upscaler"],
            label="Upscaler",
            elem_id="input-upscaler",
            info="Automatic: the first model in models/upscale_models, else Lanczos.",
        )
    with gr.Accordion("Hires fix (text to image)", open=False, elem_id="hires-settings"):
        hires_enabled = gr.Checkbox(
            value["hires_enabled"],
            label="Hires fix",
            elem_id="hires-enabled",
            info="Make the image at the chosen size, upscale it, then denoise it again at the new size.",
        )
        with gr.Row():
            hires_upscaler = gr.Dropdown(
                upscaler_choices(ctx, latent=True), value=value["hires_upscaler"], label="Upscaler", elem_id="hires-upscaler"
            )
            hires_scale = gr.Slider(1, 4, value["hires_scale"], step=0.05, label="Upscale by", elem_id="hires-scale")
        with gr.Row():
            hires_steps = gr.Slider(
                0, 150, value["hires_steps"], step=1, label="Hires steps (0: the same)", elem_id="hires-steps"
            )
            hires_denoise = gr.Slider(
                0.01, 1, value["hires_denoise"], step=0.01, label="Denoising strength", elem_id="hires-denoise"
            )
        hires_prompt = gr.Textbox(value["hires_prompt"], label="Hires prompt (empty: the same)", lines=1, elem_id="hires-prompt")
        hires_sampler = gr.Dropdown(
            [SAME_SAMPLER, *ctx.tables.samplers.samplers],
            value=value["hires_sampler"],
            label="Hires sampler",
            elem_id="hires-sampler",
        )
    return ImageSettings(
        input_denoise,
        input_scale,
        input_upscaler,
        hires_enabled,
        hires_upscaler,
        hires_scale,
        hires_steps,
        hires_denoise,
        hires_prompt,
        hires_sampler,
    )
