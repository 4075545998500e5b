"""PipelineManager.run: one job from request to saved images, as numbered steps.

It runs on the worker thread only (the queue guarantees that), so it may keep per-job state on the
pipelines it drives. It owns no threads and no UI; what it needs is handed in by services.py.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from . import APP_NAME, __version__
from .conditioning import Conditioning, PromptEncoder
from .errors import ImageSkipped
from .events import ImageReady, JobStatus
from .history import History
from .image_store import ImageStore
from .job_queue import JobControl
from .loader import LoadedModel, ModelLoader
from .metadata import infotext
from .model_cache import ModelCache
from .progress import StepCallback, StepTimer, latent_preview
from .prompt_plan import PromptPlanner, wildcard_seed
from .registry import ModelRegistry
from .samplers import SamplerChoice, SamplerTable
from .types import GenerationRequest, GenerationResult, ImageParams, ImageResult, ModelKind, SeedBehavior
from .validation import validate

MAX_SEED = 2**32 - 1  # random seeds stay in A1111's range so other tools can reuse them


def plan_seeds(seed: int, count: int, behavior: SeedBehavior, rng: random.Random | None = None) -> list[int]:
    """Seed of each image: -1 draws one at random; image i then gets seed+i (A1111), a fresh one, or the same."""
    rng = rng or random.SystemRandom()
    base = rng.randint(0, MAX_SEED) if seed == -1 else seed
    if behavior is SeedBehavior.RANDOM:
        return [base] + [rng.randint(0, MAX_SEED) for _ in range(count - 1)]
    if behavior is SeedBehavior.FIXED:
        return [base] * count
    return [base + i for i in range(count)]


def initial_latents(pipe: Any, generator: torch.Generator, width: int, height: int) -> torch.Tensor:
    """Noise drawn on the CPU in fp32, so a seed gives the same picture on any device and precision.

    The same generator then feeds the sampler's own noise (ancestral/SDE samplers), in the order plain
    diffusers uses it, so results match a plain pipeline given `generator=Generator().manual_seed(seed)`.
    """
    channels = pipe.unet.config.in_channels
    scale = pipe.vae_scale_factor
    noise = torch.randn((1, channels, height // scale, width // scale), generator=generator, dtype=torch.float32)
    return noise.to(pipe.device, pipe.unet.dtype)


@dataclass
class ImagePlan:
    """What image i of a job will be made from, after styles and wildcards."""

    index: int
    seed: int
    prompt: str
    negative_prompt: str


class PipelineManager:
    def __init__(
        self,
        registry: ModelRegistry,
        loader: ModelLoader,
        cache: ModelCache,
        samplers: SamplerTable,
        encoder: PromptEncoder,
        prompts: PromptPlanner,
        store: ImageStore,
        history: History,
        default_model: str | None = None,
        preview_every: int = 1,
    ):
        self.registry = registry
        self.loader = loader
        self.cache = cache
        self.samplers = samplers
        self.encoder = encoder
        self.prompts = prompts
        self.store = store
        self.history = history
        self.default_model = default_model
        self.preview_every = preview_every

    def validate(self, request: GenerationRequest) -> GenerationRequest:
        request = validate(request, self.samplers)
        self.prompts.plan(request)  # unknown styles, <lora:…> names and wildcards are refused at submit time
        return request

    def run(self, control: JobControl) -> GenerationResult:
        started = time.perf_counter()
        result = control.result

        # 1. Check the request and settle names.
        request = self.validate(control.request)
        choice = self.samplers.resolve(request.sampler, request.scheduler)
        if choice.note:
            control.emit(JobStatus(control.job_id, choice.note))

        # 2. Seeds and prompts of every image: styles, <lora:…> tags into the LoRA list, wildcards by seed.
        request, plans = self.plan_images(request)

        # 3. The model: from the cache, else from disk (or the hub).
        model = self.model_for(request, control)

        # 4. Make the images one by one, so each is shown and saved as soon as it is done.
        timer = StepTimer()
        preview = latent_preview(model.architecture)
        cache: dict[tuple[str, str], Conditioning] = {}
        for plan in plans:
            callback = StepCallback(control, timer, plan.index, len(plans), request.steps, preview, self.preview_every)
            try:
                callback.start()
                image = self.generate_one(model, request, choice, plan, callback, cache)
            except ImageSkipped:
                result.skipped += 1
                continue
            item = self.finish_image(control, model, request, choice, plan, image)
            result.images.append(item)
            control.emit(ImageReady(control.job_id, plan.index, item))
        result.seconds = time.perf_counter() - started
        return result

    # -- steps ------------------------------------------------------------------------------------

    def model_for(self, request: GenerationRequest, control: JobControl) -> LoadedModel:
        name = request.model or self.default_model
        record = self.registry.find(ModelKind.CHECKPOINT, name) if name else self.registry.default_checkpoint()

        def status(message: str, fraction: float | None = None) -> None:
            control.emit(JobStatus(control.job_id, message, fraction))

        return self.cache.get(record, lambda: self.loader.load(record, status))

    def plan_images(self, request: GenerationRequest) -> tuple[GenerationRequest, list[ImagePlan]]:
        """The request with the prompt's <lora:…> tags in its LoRA list, and each image's seed and final prompts."""
        prompts = self.prompts.plan(request)
        request = request.replace(loras=prompts.loras)
        plans = []
        for i, seed in enumerate(plan_seeds(request.seed, request.image_count, request.seed_behavior)):
            prompt, negative = self.prompts.for_image(prompts, wildcard_seed(seed, i, request.seed_behavior))
            plans.append(ImagePlan(i, seed, prompt, negative))
        return request, plans

    def generate_one(
        self,
        model: LoadedModel,
        request: GenerationRequest,
        choice: SamplerChoice,
        plan: ImagePlan,
        callback: StepCallback,
        cache: dict[tuple[str, str], Conditioning],
    ):
        pipe = model.pipe
        guidance = request.cfg_scale > 1.0
        key = (plan.prompt, plan.negative_prompt)
        if key not in cache:
            cache[key] = self.encoder.encode(model, plan.prompt, plan.negative_prompt, request.clip_skip, guidance)
        pipe.scheduler = self.samplers.make(model.scheduler_config, choice, seed=plan.seed)
        generator = torch.Generator("cpu").manual_seed(plan.seed)
        latents = initial_latents(pipe, generator, request.width, request.height)
        with torch.inference_mode():
            output = pipe(
                **cache[key].pipeline_kwargs(),
                width=request.width,
                height=request.height,
                num_inference_steps=request.steps,
                guidance_scale=request.cfg_scale,
                generator=generator,
                latents=latents,
                output_type="pil",
                callback_on_step_end=callback,
                callback_on_step_end_tensor_inputs=["latents"],
            )
        return output.images[0]

    def finish_image(
        self,
        control: JobControl,
        model: LoadedModel,
        request: GenerationRequest,
        choice: SamplerChoice,
        plan: ImagePlan,
        image: Any,
    ) -> ImageResult:
        params = ImageParams(
            prompt=plan.prompt,
            negative_prompt=plan.negative_prompt,
            steps=request.steps,
            sampler=choice.sampler,
            scheduler=choice.schedule,
            cfg_scale=request.cfg_scale,
            seed=plan.seed,
            width=request.width,
            height=request.height,
            model=model.name,
            model_hash=model.short_hash,
            architecture=model.architecture.value,
            prompt_template=request.prompt if request.prompt != plan.prompt else "",
            negative_template=request.negative_prompt if request.negative_prompt != plan.negative_prompt else "",
            styles=request.styles,
            clip_skip=request.clip_skip,
            performance=request.performance,
            batch_index=plan.index,
            version=f"{APP_NAME} {__version__}",
        )
        path = None
        if request.save_images:
            path = self.store.save(image, params, request, request.output_format)
            self.history.add(path, params, request, control.job_id, time.time())
        return ImageResult(path=path, params=params, infotext=infotext(params), image=image)
