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
from .errors import EaselError, ImageSkipped, InvalidRequest
from .events import ImageReady, JobStatus
from .history import History
from .image_store import ImageStore
from .job_queue import JobControl
from .loader import LoadedModel, ModelLoader
from .loras import LoraActivation, LoraManager
from .metadata import infotext
from .model_cache import ModelCache
from .performance import PerformanceTable
from .progress import StepCallback, StepTimer, latent_preview
from .registry import ModelRegistry
from .samplers import SamplerChoice, SamplerTable
from .types import Architecture, GenerationRequest, GenerationResult, ImageParams, ImageResult, ModelKind, SeedBehavior
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
        store: ImageStore,
        history: History,
        default_model: str | None = None,
        preview_every: int = 1,
        loras: LoraManager | None = None,
        performance: PerformanceTable | None = None,
    ):
        self.registry = registry
        self.loader = loader
        self.cache = cache
        self.samplers = samplers
        self.encoder = encoder
        self.store = store
        self.history = history
        self.default_model = default_model
        self.preview_every = preview_every
        self.loras = loras or LoraManager(registry, loader.hashes)
        self.performance = performance or PerformanceTable.load(registry, samplers)

    def validate(self, request: GenerationRequest) -> GenerationRequest:
        """Limits and names, and whether the performance mode can run here (its LoRA present or downloadable)."""
        request = validate(request, self.samplers)
        if request.performance:
            mode = self.performance.get(request.performance)
            why = self.performance.availability(mode.name, self.architecture_of(request))
            if why:
                raise InvalidRequest(why, field="performance")
            request = request.replace(performance=mode.name)
        return request

    def architecture_of(self, request: GenerationRequest) -> Architecture:
        """The architecture of the model a request will use, as far as known before loading it."""
        try:
            name = request.model or self.default_model
            record = self.registry.find(ModelKind.CHECKPOINT, name) if name else self.registry.default_checkpoint()
        except EaselError:
            return Architecture.UNKNOWN  # the job itself reports a missing model
        return record.architecture

    def run(self, control: JobControl) -> GenerationResult:
        started = time.perf_counter()
        result = control.result

        # 1. Check the request and settle names; the performance mode sets steps, guidance and sampler.
        request = self.validate(control.request)
        generation = self.performance.settings(request)
        choice = self.samplers.resolve(generation.sampler, generation.scheduler)
        if choice.note:
            control.emit(JobStatus(control.job_id, choice.note))

        # 2. The model: from the cache, else from disk (or the hub).
        model = self.model_for(request, control)

        # 3. The mode's acceleration LoRA for this architecture (downloaded on first use).
        generation = self.performance.apply(generation, model.architecture, self._status(control))

        # 4. Seeds and prompts of every image.
        plans = self.plan_images(generation)

        # 5. LoRAs patched in for the whole job (restored exactly afterwards, also on cancel or error);
        #    the images are made one by one, so each is shown and saved as soon as it is done.
        timer = StepTimer()
        preview = latent_preview(model.architecture)
        cache: dict[tuple[str, str], Conditioning] = {}
        with self.loras.activate(model, generation.loras, generation.skip_invalid_loras) as active:
            for note in active.notes:
                control.emit(JobStatus(control.job_id, note))
            for plan in plans:
                callback = StepCallback(control, timer, plan.index, len(plans), generation.steps, preview, self.preview_every)
                try:
                    callback.start()
                    image = self.generate_one(model, generation, choice, plan, callback, cache)
                except ImageSkipped:
                    result.skipped += 1
                    continue
                item = self.finish_image(control, model, request, generation, choice, plan, image, active)
                result.images.append(item)
                control.emit(ImageReady(control.job_id, plan.index, item))
        result.seconds = time.perf_counter() - started
        return result

    # -- steps ------------------------------------------------------------------------------------

    def model_for(self, request: GenerationRequest, control: JobControl) -> LoadedModel:
        name = request.model or self.default_model
        record = self.registry.find(ModelKind.CHECKPOINT, name) if name else self.registry.default_checkpoint()
        status = self._status(control)
        return self.cache.get(record, lambda: self.loader.load(record, status))

    @staticmethod
    def _status(control: JobControl):
        def status(message: str, fraction: float | None = None) -> None:
            control.emit(JobStatus(control.job_id, message, fraction))

        return status

    def plan_images(self, request: GenerationRequest) -> list[ImagePlan]:
        seeds = plan_seeds(request.seed, request.image_count, request.seed_behavior)
        return [ImagePlan(i, seed, request.prompt, request.negative_prompt) for i, seed in enumerate(seeds)]

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
        generation: GenerationRequest,
        choice: SamplerChoice,
        plan: ImagePlan,
        image: Any,
        loras: LoraActivation | None = None,
    ) -> ImageResult:
        """Metadata from what was really done (`generation`: the mode applied); the file keeps the user's request."""
        params = ImageParams(
            prompt=plan.prompt,
            negative_prompt=plan.negative_prompt,
            steps=generation.steps,
            sampler=choice.sampler,
            scheduler=choice.schedule,
            cfg_scale=generation.cfg_scale,
            seed=plan.seed,
            width=request.width,
            height=request.height,
            model=model.name,
            model_hash=model.short_hash,
            architecture=model.architecture.value,
            prompt_template=request.prompt if request.prompt != plan.prompt else "",
            negative_template=request.negative_prompt if request.negative_prompt != plan.negative_prompt else "",
            styles=request.styles,
            loras=tuple(loras.applied) if loras else (),
            clip_skip=request.clip_skip,
            performance=generation.performance,
            batch_index=plan.index,
            version=f"{APP_NAME} {__version__}",
        )
        path = None
        if request.save_images:
            path = self.store.save(image, params, request, request.output_format)
            self.history.add(path, params, request, control.job_id, time.time())
        return ImageResult(path=path, params=params, infotext=infotext(params), image=image)
