"""What the final pass of a job is (the one the refiner joins), and what the metadata records of the passes
before it, in A1111's words: Denoising strength, Hires upscale/resize/steps/upscaler/prompt/sampler,
Postprocess upscale by/upscaler, Mask blur, Masked content, Inpaint area, plus the input image's and the mask's
hashes and the input's source for our JSON and History."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.about import APP_NAME, __version__
from pipelines.generation.hires import HiresPlan
from pipelines.generation.image_input import InputPlan
from pipelines.generation.masking import MaskPlan
from pipelines.samplers import SamplerChoice
from pipelines.types import GenerationRequest, ImageParams


@dataclass(frozen=True)
class FinalPass:
    request: GenerationRequest  # with the final pass's steps
    choice: SamplerChoice
    strength: float  # 1.0: from noise


def final_pass(
    request: GenerationRequest, choice: SamplerChoice, input_plan: InputPlan | None, hires: HiresPlan | None
) -> FinalPass:
    if input_plan is not None:
        return FinalPass(request.replace(steps=input_plan.steps), choice, input_plan.denoise)
    if hires is not None:
        return FinalPass(request.replace(steps=hires.steps), hires.choice, hires.denoise)
    return FinalPass(request, choice, 1.0)


def input_metadata(request: GenerationRequest, plan: InputPlan | None) -> dict[str, Any]:
    """ImageParams fields of an input-image job."""
    if plan is None or request.input is None:
        return {}
    out: dict[str, Any] = {
        "input_image": request.input.image,
        "input_source": request.input.source,
        "input_mode": plan.mode.label,
    }
    if plan.diffusion:
        out["denoising_strength"] = plan.denoise
    if plan.upscaler is not None:
        out["postprocess_scale"] = plan.scale
        out["postprocess_upscaler"] = plan.upscaler
    if plan.mask is not None:
        out.update(mask_metadata(plan.mask))
    if plan.diffusion and plan.noise_multiplier != 1.0:
        out["noise_multiplier"] = plan.noise_multiplier
    return out


def mask_metadata(mask: MaskPlan) -> dict[str, Any]:
    """ImageParams fields of an inpaint: the mask's hash and A1111's Mask blur, Masked content, Inpaint area ..."""
    return {
        "mask_image": mask.mask,
        "mask_blur_x": mask.blur_x,
        "mask_blur_y": mask.blur_y,
        "masked_content": mask.fill.label,
        "inpaint_padding": mask.padding if mask.only_masked else None,
        "mask_inverted": mask.invert,
        "outpaint": ", ".join(side.title() for side in mask.outpaint) or None,
        "outpaint_fraction": mask.fraction if mask.outpaint else None,
    }


def hires_metadata(request: GenerationRequest, plan: HiresPlan | None) -> dict[str, Any]:
    """ImageParams fields of a hires-fix job, as A1111 writes them (the second pass's values)."""
    hires = request.hires
    if plan is None or hires is None:
        return {}
    resized = bool(hires.resize_x or hires.resize_y)
    return {
        "denoising_strength": plan.denoise,
        "hires_scale": None if resized else hires.scale,
        "hires_resize": f"{plan.width}x{plan.height}" if resized else None,
        "hires_steps": hires.steps or None,
        "hires_upscaler": plan.upscaler.name,
        "hires_prompt": hires.prompt or None,
        "hires_negative_prompt": hires.negative_prompt or None,
        "hires_sampler": plan.choice.sampler if plan.sampler_given else None,
        "hires_scheduler": plan.choice.schedule if plan.sampler_given else None,
    }


def upscale_params(request: GenerationRequest, plan: InputPlan, seed: int, prompt: str, negative: str) -> ImageParams:
    """The record of an upscale without a diffusion pass: no model, no steps, the upscaler and factor."""
    return ImageParams(
        prompt=prompt,
        negative_prompt=negative,
        steps=0,
        sampler="",
        scheduler="",
        cfg_scale=0.0,
        seed=seed,
        width=plan.width,
        height=plan.height,
        model="",
        model_hash="",
        version=f"{APP_NAME} {__version__}",
        **input_metadata(request, plan),
    )
