"""The Advanced tab: guidance, sampler and the schedules it supports, steps, CLIP skip, VAE override, batch seeds,
size, and Fooocus's sampling controls (tabs/quality.py). Steps, guidance, sampler and schedule are set by the
performance mode; editing one switches to Custom."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from pipelines import LIMITS, SeedBehavior
from ui.context import UIContext
from ui.page.render import schedule_choices
from ui.tabs import image_settings, quality
from ui.tabs.image_settings import ImageSettings

SEED_BEHAVIOURS = [
    ("Increment: image i gets seed + i", SeedBehavior.INCREMENT.value),
    ("Random: a new seed per image", SeedBehavior.RANDOM.value),
    ("Fixed: the same seed for every image", SeedBehavior.FIXED.value),
]


@dataclass
class AdvancedTab:
    cfg_scale: gr.Slider
    sampler: gr.Dropdown
    scheduler: gr.Dropdown
    steps: gr.Slider
    clip_skip: gr.Slider
    vae: gr.Dropdown
    seed_behavior: gr.Radio
    custom_size: gr.Checkbox
    width: gr.Number
    height: gr.Number
    images: ImageSettings
    controls: quality.ControlsPanel  # Fooocus's sampling controls
    step_cache: gr.Slider
    token_merging: gr.Slider
    fast_decode: gr.Checkbox

    def fields(self) -> dict[str, Any]:
        own = {
            name: getattr(self, name)
            for name in (
                "cfg_scale",
                "sampler",
                "scheduler",
                "steps",
                "clip_skip",
                "vae",
                "seed_behavior",
                "custom_size",
                "width",
                "height",
                "step_cache",
                "token_merging",
                "fast_decode",
            )
        }
        return {**own, **self.images.fields(), **self.controls.fields()}


def build(ctx: UIContext, initial: dict[str, Any]) -> AdvancedTab:
    samplers = ctx.tables.samplers
    cfg_scale = gr.Slider(
        0,
        30,
        initial["cfg_scale"],
        step=0.1,
        label="Guidance scale (CFG)",
        elem_id="cfg-scale",
        info="How closely the image follows the prompt; 1 or less turns guidance off.",
    )
    with gr.Row():
        sampler = gr.Dropdown(samplers.samplers, value=initial["sampler"], label="Sampler", elem_id="sampler")
        choices = schedule_choices(ctx, initial["sampler"], initial["scheduler"])
        scheduler = gr.Dropdown(choices["choices"], value=choices["value"], label="Schedule type", elem_id="scheduler")
    steps = gr.Slider(
        1,
        150,
        initial["steps"],
        step=1,
        label="Steps",
        elem_id="steps",
        info="Set by the performance mode; changing it switches the mode to Custom.",
    )
    clip_skip = gr.Slider(
        1,
        12,
        initial["clip_skip"],
        step=1,
        label="CLIP skip",
        elem_id="clip-skip",
        info="Use an earlier layer of the text encoder (2 suits many anime SD 1.5 models).",
    )
    vae = gr.Dropdown(
        ctx.vae_choices(),
        value=initial["vae"],
        label="VAE",
        elem_id="vae",
        info="Decodes the image; Automatic uses the one inside the checkpoint.",
    )
    seed_behavior = gr.Radio(SEED_BEHAVIOURS, value=initial["seed_behavior"], label="Seeds of a batch", elem_id="seed-behavior")
    custom_size = gr.Checkbox(
        initial["custom_size"], label="Custom size (instead of the aspect ratio list)", elem_id="custom-size"
    )
    with gr.Row():
        width = gr.Number(
            initial["width"],
            label="Width",
            precision=0,
            step=8,
            minimum=64,
            maximum=4096,
            elem_id="width",
            visible=initial["custom_size"],
        )
        height = gr.Number(
            initial["height"],
            label="Height",
            precision=0,
            step=8,
            minimum=64,
            maximum=4096,
            elem_id="height",
            visible=initial["custom_size"],
        )

    images = image_settings.build(ctx, initial)
    with gr.Group(elem_id="approximations"):
        gr.Markdown("**Approximations for speed** (CPU Turbo turns them on; each is recorded in the image)")
        step_cache = gr.Slider(
            0,
            4,
            initial.get("step_cache", 0),
            step=1,
            label="Step caching",
            elem_id="step-cache",
            info="Reuse the UNet's deep features: only every Nth step runs the whole UNet (2: every other; 0: off).",
        )
        token_merging = gr.Slider(
            *LIMITS["token_merging"],
            initial.get("token_merging", 0.0),
            step=0.05,
            label="Token merging ratio",
            elem_id="token-merging",
            info="Merge this share of similar neighbouring tokens before the largest self-attention (ToMe; 0: off).",
        )
        fast_decode = gr.Checkbox(
            bool(initial.get("fast_decode", False)),
            label="Fast final decode (TAESD, when installed in models/vae_approx)",
            elem_id="fast-decode",
        )
    sampler.input(
        lambda name, current: gr.update(**schedule_choices(ctx, name, current)),
        [sampler, scheduler],
        scheduler,
        show_progress="hidden",
        api_visibility="private",
        preprocess=False,
    )  # see gradio_app
    controls = quality.build(ctx, initial)
    return AdvancedTab(
        cfg_scale,
        sampler,
        scheduler,
        steps,
        clip_skip,
        vae,
        seed_behavior,
        custom_size,
        width,
        height,
        images,
        controls,
        step_cache,
        token_merging,
        fast_decode,
    )
