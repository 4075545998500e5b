"""One image, from noise or from an image: text to image, image to image (Vary, Upscale, A1111's img2img),
inpaint and outpaint (a mask, inpaint.py and masking.py), or text to image with the hires fix. An inpainting
checkpoint runs every pass through its inpaint pipeline (the whole picture masked where no mask is given). Each ends in one final pass, which hands over to the refiner when
there is one; every pass reports to the image's one step callback, so progress, previews, stop/skip and
prompt editing ([a:b:when] counts the steps of all passes together) work the same in all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from pipelines.generation.guidance import applied as sampling_controls
from pipelines.generation.hires import HiresPlan
from pipelines.generation.image_input import InputPlan
from pipelines.generation.img2img import TILED_VAE_PIXELS, encode, img2img_pipe, pixels, run_steps, start_noise, tiled_vae
from pipelines.generation.inpaint import blank, full_mask, inpaint_pipe, is_inpainting, latent_fill, mask_tensor
from pipelines.generation.masking import Fill, MaskedInput
from pipelines.generation.quality import QualityControls
from pipelines.generation.refiner import RefinerStage, StageCallback
from pipelines.generation.upscale import UpscalerLibrary
from pipelines.images.resize import ResizeMode
from pipelines.jobs.progress import StepCallback
from pipelines.loading.loader import LoadedModel
from pipelines.loading.vae import LoadedVae, swapped_vae
from pipelines.prompts.conditioning import Conditioning, PromptEncoder
from pipelines.prompts.switching import ConditioningSchedule, PromptSwitch, encode_schedule, tensor_inputs
from pipelines.samplers import SamplerChoice, SamplerTable
from pipelines.speed.approximations import step_caching, token_merging
from pipelines.types import GenerationRequest, ModelRecord


def initial_latents(pipe: Any, generator: torch.Generator, width: int, height: int) -> torch.Tensor:
    """Noise drawn on the CPU in fp32, so a seed gives the same picture on any device and precision.

    The same generator then feeds the sampler's own noise (ancestral/SDE samplers), in the order plain
    diffusers uses it, so results match a plain pipeline given `generator=Generator().manual_seed(seed)`.
    """
    channels = pipe.unet.config.in_channels
    scale = pipe.vae_scale_factor
    noise = torch.randn((1, channels, height // scale, width // scale), generator=generator, dtype=torch.float32)
    return noise.to(pipe.device, pipe.unet.dtype)


def total_steps(
    model: LoadedModel,
    request: GenerationRequest,
    choice: SamplerChoice,
    samplers: SamplerTable,
    refiner: RefinerStage | None,
    input_plan: InputPlan | None,
    hires: HiresPlan | None,
) -> int:
    """How many step callbacks an image makes, over all its passes (the progress bar's total)."""
    if input_plan is not None:
        if not input_plan.diffusion:
            return 0
        return (
            refiner.total_steps
            if refiner
            else run_steps(samplers, model.scheduler_config, choice, input_plan.steps, input_plan.denoise)
        )
    first = samplers.count_steps(model.scheduler_config, choice, request.steps)
    if hires is None:
        return refiner.total_steps if refiner else first
    second = (
        refiner.total_steps if refiner else run_steps(samplers, model.scheduler_config, hires.choice, hires.steps, hires.denoise)
    )
    return first + second


@dataclass
class ImageContext:
    """What the passes of one image share."""

    model: LoadedModel
    request: GenerationRequest  # the performance mode applied
    choice: SamplerChoice
    seed: int
    prompt: str
    negative: str
    callback: StepCallback
    samplers: SamplerTable
    encoder: PromptEncoder
    upscalers: UpscalerLibrary
    cache: dict[tuple[str, str], Conditioning] = field(default_factory=dict)
    refiner: RefinerStage | None = None
    vae: LoadedVae | None = None
    input_plan: InputPlan | None = None
    init: Image.Image | MaskedInput | None = None  # the input prepared by image_input.prepare or masking.masked_input
    hires: HiresPlan | None = None
    controls: QualityControls = field(default_factory=QualityControls)  # Fooocus's sampling controls (off: none)
    final_decoder: Any = None  # CPU Turbo's fast decode: decodes the final latents instead of the VAE (no refiner)
    vae_tile_pixels: int = TILED_VAE_PIXELS

    def controlled(self, pipe: Any):
        """Fooocus's sampling controls hooked into the UNets that `pipe`'s loop (and the refiner after it) call,
        for one pass; nothing is installed when they are off, and everything is undone on exit."""
        bindings = [(pipe, pipe.unet), *(self.refiner.bindings(pipe) if self.refiner else [])]
        return sampling_controls(self.controls, bindings, self.model.pipe.unet)

    def schedule(self, prompt: str, negative: str) -> ConditioningSchedule:
        return encode_schedule(
            self.encoder,
            self.model,
            prompt,
            negative,
            steps=self.callback.total_steps,
            clip_skip=self.request.clip_skip,
            guidance=self.request.cfg_scale > 1.0,
            cache=self.cache,
        )


def make_image(ctx: ImageContext) -> tuple[Image.Image, tuple[ModelRecord, ...]]:
    """The image and the textual inversions its prompts used."""
    generator = torch.Generator("cpu").manual_seed(ctx.seed)
    task = None
    if isinstance(ctx.init, MaskedInput) or is_inpainting(ctx.model):
        task = inpaint_pipe(ctx.model)
    elif ctx.input_plan is not None or ctx.hires is not None:
        task = img2img_pipe(ctx.model)
    pipes = [ctx.model.pipe, task, ctx.refiner.pipe if ctx.refiner else None]
    # The VAE override is swapped in for this image only, step caching and token merging (CPU Turbo) are on for
    # it only; the checkpoint's own state comes back whatever happens.
    with (
        swapped_vae(ctx.vae, pipes),
        step_caching(ctx.model.pipe, ctx.request.step_cache),
        token_merging(ctx.model.pipe, ctx.request.token_merging, ctx.seed),
        torch.inference_mode(),
    ):
        if ctx.input_plan is not None:
            return from_image(ctx, task, generator)
        schedule = ctx.schedule(ctx.prompt, ctx.negative)
        if ctx.hires is not None:
            return hires_fix(ctx, task, schedule, generator), schedule.embeddings
        if task is not None:  # an inpainting checkpoint: a blank picture, all masked (A1111's txt2img on one)
            picture, mask = blank(ctx.request.width, ctx.request.height)
            size = {"width": ctx.request.width, "height": ctx.request.height}
            image = image_to_image(
                ctx, task, picture, ctx.request.steps, 1.0, ctx.choice, schedule, generator, mask_image=mask, **size
            )
            return image, schedule.embeddings
        return text_to_image(ctx, schedule, generator, final=True), schedule.embeddings


def text_to_image(
    ctx: ImageContext, schedule: ConditioningSchedule, generator: torch.Generator, final: bool, output: str = "pil"
) -> Any:
    """The pass from noise: a PIL image (or the first pass's latents/image for the hires fix)."""
    pipe, request, refiner = ctx.model.pipe, ctx.request, ctx.refiner if final else None
    pipe.scheduler = ctx.samplers.make(ctx.model.scheduler_config, ctx.choice, seed=ctx.seed)
    kwargs = dict(
        **schedule.first.pipeline_kwargs(),
        width=request.width,
        height=request.height,
        num_inference_steps=request.steps,
        guidance_scale=request.cfg_scale,
        generator=generator,
        latents=initial_latents(pipe, generator, request.width, request.height),
    )
    with ctx.controlled(pipe):
        if refiner is not None:  # the base, then the refiner by the request's swap method (joint, separate, vae)
            return refiner.generate(
                pipe, kwargs, schedule, request, ctx.choice, ctx.samplers, ctx.prompt, ctx.negative, ctx.seed,
                generator, ctx.callback, ctx.encoder,
            )  # fmt: skip
        fast = ctx.final_decoder if final and output == "pil" else None
        out = pipe(
            **kwargs,
            callback_on_step_end=PromptSwitch(ctx.callback, schedule),
            callback_on_step_end_tensor_inputs=tensor_inputs(schedule),
            output_type="latent" if fast else output,
        )
    if fast is not None:
        return fast(out.images)
    return out.images[0] if output == "pil" else out.images


def image_to_image(
    ctx: ImageContext,
    task: Any,
    latents: Any,
    steps: int,
    strength: float,
    choice: SamplerChoice,
    schedule: ConditioningSchedule,
    generator: torch.Generator,
    **inputs: Any,
) -> Image.Image:
    """The final pass from an image's latents (or, for the inpaint pipelines, its picture and `inputs`: mask_image,
    width, height): `strength` of a `steps`-long schedule, then the refiner if any."""
    offset = ctx.callback.steps_done  # this pass's step i is step offset + i of the image
    task.scheduler = ctx.samplers.make(ctx.model.scheduler_config, choice, seed=ctx.seed)
    refiner = ctx.refiner  # from an image, the refiner takes over `separate`ly (the manager asks for that)
    with ctx.controlled(task):
        out = task(
            **schedule.at(offset).pipeline_kwargs(),
            image=latents,
            strength=strength,
            num_inference_steps=steps,
            guidance_scale=ctx.request.cfg_scale,
            generator=generator,
            callback_on_step_end=PromptSwitch(StageCallback(ctx.callback, offset), schedule, offset),
            callback_on_step_end_tensor_inputs=tensor_inputs(schedule),
            **inputs,
            **(refiner.base_kwargs() if refiner else {"output_type": "latent" if ctx.final_decoder else "pil"}),
        )
        if refiner is not None:
            return _refine(ctx, out.images, steps, choice, generator)
    return ctx.final_decoder(out.images) if ctx.final_decoder else out.images[0]


def _refine(
    ctx: ImageContext, latents: torch.Tensor, steps: int, choice: SamplerChoice, generator: torch.Generator
) -> Image.Image:
    assert ctx.refiner is not None
    request = ctx.request.replace(steps=steps)
    return ctx.refiner.refine(
        latents, request, choice, ctx.samplers, ctx.prompt, ctx.negative, ctx.seed, generator, ctx.callback, ctx.encoder
    )


def from_image(ctx: ImageContext, task: Any, generator: torch.Generator) -> tuple[Image.Image, tuple[ModelRecord, ...]]:
    """Vary, Upscale or img2img: the prepared input encoded and denoised at the plan's strength."""
    plan, init = ctx.input_plan, ctx.init
    assert plan is not None and init is not None
    if isinstance(init, MaskedInput):
        return masked_image(ctx, task, init, generator)
    if not plan.diffusion:  # Upscale (Fast 2x), or a denoise of 0: the prepared image is the result
        return init, ()
    if is_inpainting(ctx.model):  # the whole picture masked, at the plan's size
        with tiled_vae(task.vae, plan.width, plan.height, ctx.vae_tile_pixels):
            schedule = ctx.schedule(ctx.prompt, ctx.negative)
            size = {"width": plan.width, "height": plan.height}
            mask = full_mask(plan.width, plan.height)
            with latent_fill(task, Fill.ORIGINAL, None, plan.noise_multiplier):
                image = image_to_image(
                    ctx, task, init, plan.steps, plan.denoise, ctx.choice, schedule, generator, mask_image=mask, **size
                )
        return image, schedule.embeddings
    with tiled_vae(task.vae, max(init.width, plan.width), max(init.height, plan.height), ctx.vae_tile_pixels):
        latents = encode(task, pixels(task, init), generator)
        if plan.resize is ResizeMode.LATENT and plan.scale is None:  # A1111: the latents resized, bilinear
            size = (plan.height // task.vae_scale_factor, plan.width // task.vae_scale_factor)
            latents = torch.nn.functional.interpolate(latents, size=size, mode="bilinear")
        schedule = ctx.schedule(ctx.prompt, ctx.negative)
        with start_noise(task, plan.noise_multiplier):
            image = image_to_image(ctx, task, latents, plan.steps, plan.denoise, ctx.choice, schedule, generator)
    return image, schedule.embeddings


def masked_image(
    ctx: ImageContext, task: Any, masked: MaskedInput, generator: torch.Generator
) -> tuple[Image.Image, tuple[ModelRecord, ...]]:
    """Inpaint or outpaint: the picture and mask at the size the model works at (the region, or the whole picture),
    denoised through the inpaint pipeline, then laid back over the input through the blurred mask."""
    plan = ctx.input_plan
    assert plan is not None and plan.mask is not None
    native = task.unet.config.sample_size * task.vae_scale_factor
    width, height = masked.work_size(native)
    image, mask = masked.work_pair((width, height), plan.mask.fill)
    with tiled_vae(task.vae, width, height, ctx.vae_tile_pixels):
        with latent_fill(task, plan.mask.fill, mask_tensor(mask), plan.noise_multiplier):
            schedule = ctx.schedule(ctx.prompt, ctx.negative)
            out = image_to_image(
                ctx,
                task,
                image,
                plan.steps,
                plan.denoise,
                ctx.choice,
                schedule,
                generator,
                mask_image=mask,
                width=width,
                height=height,
            )
    return masked.paste_back(out), schedule.embeddings


def hires_fix(ctx: ImageContext, task: Any, schedule: ConditioningSchedule, generator: torch.Generator) -> Image.Image:
    """A1111's hires fix: the first pass at the request's size, upscaled, then denoised again at the new size."""
    plan = ctx.hires
    assert plan is not None
    if plan.upscaler.latent:
        first = text_to_image(ctx, schedule, generator, final=False, output="latent")
        latents = ctx.upscalers.upscale_latents(first, plan.width, plan.height, plan.upscaler.name, task.vae_scale_factor)
    else:
        image = text_to_image(ctx, schedule, generator, final=False)
        image = ctx.upscalers.upscale(image, plan.width, plan.height, plan.upscaler.name, ctx.callback.control.check)
        with tiled_vae(task.vae, plan.width, plan.height, ctx.vae_tile_pixels):
            latents = encode(task, pixels(task, image), generator)
    hires = ctx.request.hires
    second = schedule
    if hires is not None and (hires.prompt or hires.negative_prompt):
        second = ctx.schedule(hires.prompt or ctx.prompt, hires.negative_prompt or ctx.negative)
    with tiled_vae(task.vae, plan.width, plan.height, ctx.vae_tile_pixels):
        return image_to_image(ctx, task, latents, plan.steps, plan.denoise, plan.choice, second, generator)
