"""PipelineManager.run: one job from request to saved images, as numbered steps.

It runs on the worker thread only (the queue guarantees that), so it may keep per-job state on the
pipelines it drives. It owns no threads and no UI; what it needs is handed in by services.py.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

from pipelines.about import APP_NAME, __version__
from pipelines.errors import EaselError, ImageSkipped, InvalidRequest
from pipelines.generation.refiner import RefinerStage, check_request, find_refiner, refiner_name
from pipelines.jobs.events import ImageReady, JobStatus
from pipelines.jobs.previews import PreviewDecoders
from pipelines.jobs.progress import StepCallback, StepTimer, latent_preview
from pipelines.jobs.queue import JobControl
from pipelines.loading.cache import ModelCache
from pipelines.loading.loader import LoadedModel, ModelLoader
from pipelines.loading.registry import ModelRegistry
from pipelines.loading.vae import LoadedVae, VaeLoader, find_vae, swapped_vae, vae_name
from pipelines.loras.patching import LoraActivation, LoraManager
from pipelines.outputs.history import History
from pipelines.outputs.metadata import infotext
from pipelines.outputs.store import ImageStore
from pipelines.performance import PerformanceTable
from pipelines.prompts.conditioning import Conditioning, PromptEncoder
from pipelines.prompts.embeddings import embedding_word
from pipelines.prompts.plan import PromptPlanner, wildcard_seed
from pipelines.prompts.switching import PromptSwitch, encode_schedule, tensor_inputs
from pipelines.samplers import SamplerChoice, SamplerTable
from pipelines.speed.approximations import step_caching
from pipelines.speed.compiler import UNetCompiler
from pipelines.speed.timing import StepTimes
from pipelines.types import (
    Architecture,
    GenerationRequest,
    GenerationResult,
    ImageParams,
    ImageResult,
    ModelKind,
    ModelRecord,
    SeedBehavior,
    UsedEmbedding,
)
from pipelines.validation import validate

log = logging.getLogger(__name__)

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
        preview_interval: float = 0.25,
        loras: LoraManager | None = None,
        performance: PerformanceTable | None = None,
        previews: PreviewDecoders | None = None,
        compiler: UNetCompiler | None = None,
        step_times: StepTimes | None = None,
    ):
        self.registry = registry
        self.loader = loader
        self.cache = cache
        self.samplers = samplers
        self.encoder = encoder
        self.prompts = prompts
        self.store = store
        self.history = history
        self.preview_interval = preview_interval
        self.vaes = VaeLoader(loader.hashes)
        self.loras = loras or LoraManager(registry, loader.hashes)
        self.performance = performance or PerformanceTable.load(registry, samplers)
        self.previews = previews or PreviewDecoders(registry.models_dir)
        self.compiler = compiler
        self.step_times = step_times or StepTimes(None)
        self._preloaded = False
        self._default_lock = threading.Lock()
        self._default_model = default_model

    # -- the current default model (what a request without a model uses; the UI and the API can change it)

    @property
    def default_model(self) -> str | None:
        with self._default_lock:
            return self._default_model

    def set_default_model(self, name: str | None) -> ModelRecord:
        """Make `name` the model of requests that name none; None goes back to the first usable one.

        The name is checked now (ModelNotFound / InvalidRequest); loading happens on the worker, when the
        next job needs it, so switching never blocks a caller or the device.
        """
        record = self.registry.find(ModelKind.CHECKPOINT, name) if name else self.registry.default_checkpoint()
        if not record.usable:
            raise InvalidRequest(f"{record.name} cannot be used: {record.note}.", field="model")
        with self._default_lock:
            self._default_model = record.name if name else None
        return record

    def default_record(self) -> ModelRecord:
        """The checkpoint a request without a model runs on now (raises ModelNotFound when there is none)."""
        return self.registry.default_checkpoint(self.default_model)

    def known_hash(self, record: ModelRecord) -> str | None:
        """A checkpoint's full sha256 when already known (loaded, or hashed before); never hashes a file."""
        for model in self.cache.loaded():
            if model.record == record and model.model_hash:
                return model.model_hash
        return self.loader.hashes.known_model_hash(record.path) if record.path is not None else None

    def validate(self, request: GenerationRequest) -> GenerationRequest:
        """Field checks; styles, <lora:…> names and wildcards; the named models against the registry (the
        refiner must suit the base model); whether the performance mode can run here (its LoRA present or
        downloadable). All of it at submit time, so a bad request never waits in the queue."""
        request = validate(request, self.samplers)
        self.prompts.plan(request)
        check_request(request, self.registry, self.default_model)
        if vae_name(request) is not None:
            find_vae(self.registry, vae_name(request))
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
            record = self.registry.find(ModelKind.CHECKPOINT, request.model) if request.model else self.default_record()
        except EaselError:
            return Architecture.UNKNOWN  # the job itself reports a missing model
        return record.architecture

    def run(self, control: JobControl) -> GenerationResult:
        started = time.perf_counter()
        result = control.result

        # 1. The request was checked and its names settled at submit (JobQueue's prepare step, `validate`);
        #    the performance mode sets steps, guidance and sampler.
        request = control.request
        generation = self.performance.settings(request)
        choice = self.samplers.resolve(generation.sampler, generation.scheduler)
        if choice.note:
            control.emit(JobStatus(control.job_id, choice.note))

        # 2. Seeds and prompts of every image: styles, <lora:…> tags into the LoRA list, wildcards by seed.
        generation, plans = self.plan_images(generation)

        # 3. The models: the checkpoint from the cache, else from disk (or the hub); the refiner and VAE asked for.
        model = self.model_for(generation, control)
        refiner = self.refiner_for(generation, model, choice, control)
        vae = self.vae_for(generation, model, control)

        # 4. The mode's acceleration LoRA for this architecture (downloaded on first use).
        generation = self.performance.apply(generation, model.architecture, self._status(control))

        # 5. LoRAs patched in for the whole job (restored exactly afterwards, also on cancel or error);
        #    the images are made one by one, so each is shown and saved as soon as it is done.
        timer = StepTimer()
        preview = self.previews.for_model(model.architecture, model.pipe.device, model.pipe.unet.dtype)
        unwatched = latent_preview(model.architecture) if preview is not None else None  # free, for unwatched jobs
        cache: dict[tuple[str, str], Conditioning] = {}
        steps = refiner.total_steps if refiner else self.samplers.count_steps(model.scheduler_config, choice, generation.steps)
        extra = {**(refiner.metadata() if refiner else {}), **(vae.metadata() if vae else {})}
        # CPU Turbo's approximations: the tiny decoder for the final image when one is installed (not with a refiner)
        final = self.previews.final_decoder(model.architecture, model.pipe.device, model.pipe.unet.dtype)
        final = final if generation.fast_decode and refiner is None else None
        extra.update(step_cache=generation.step_cache if generation.step_cache > 1 else 0, fast_decode=final is not None)
        with self.loras.activate(model, generation.loras, generation.skip_invalid_loras) as active:
            for note in active.notes:
                control.emit(JobStatus(control.job_id, note))
            for plan in plans:
                callback = StepCallback(control, timer, plan.index, len(plans), steps, preview, self.preview_interval)
                callback.unwatched = unwatched
                try:
                    callback.start()
                    image, embeddings = self.generate_one(model, generation, choice, plan, callback, cache, refiner, vae, final)
                except ImageSkipped:
                    result.skipped += 1
                    continue
                item = self.finish_image(
                    control,
                    model,
                    request,
                    generation,
                    choice,
                    plan,
                    image,
                    active,
                    {**extra, "embeddings": self.embedding_refs(embeddings)},
                )
                result.images.append(item)
                control.emit(ImageReady(control.job_id, plan.index, item))
                self.record_time(model, generation, callback)
        result.seconds = time.perf_counter() - started
        return result

    def idle(self) -> bool:
        """Device work while no job waits (the queue's worker calls it): load the compiled graphs that became
        ready, and at a start with compiled graphs cached for the default model's architecture, that model
        first, so the first image is made compiled. True when it did something."""
        if self.compiler is None:
            return False
        if self.compiler.load_ready(self.cache.loaded()):
            return True
        if self._preloaded:
            return False
        self._preloaded = True
        try:
            record = self.default_record()
        except EaselError:
            return False
        if not self.compiler.has_graphs(record.architecture.label) or self.cache.is_loaded(record):
            return False
        log.info("loading %s with its compiled UNet (cached on this machine) before the first job", record.name)
        self.prepared(self.cache.get(record, lambda: self.loader.load(record)))
        return True

    def record_time(self, model: LoadedModel, request: GenerationRequest, callback: StepCallback) -> None:
        """This image's seconds per step and outside the steps, for later estimates (speed/timing.py)."""
        self.step_times.record_image(
            model.architecture.value, request, callback.started_at, callback.last_step_at, callback.steps_done
        )

    def estimate(self, request: GenerationRequest) -> float | None:
        """About how many seconds the request takes on this machine, from the images made here; None if unknown."""
        generation = self.performance.settings(request)
        return self.step_times.estimate(
            self.architecture_of(generation).value,
            generation.width,
            generation.height,
            generation.steps,
            generation.image_count,
            generation.cfg_scale > 1.0,
            generation.step_cache,
        )

    # -- steps ------------------------------------------------------------------------------------

    def model_for(self, request: GenerationRequest, control: JobControl) -> LoadedModel:
        record = self.registry.find(ModelKind.CHECKPOINT, request.model) if request.model else self.default_record()
        status = self._status(control)
        return self.prepared(self.cache.get(record, lambda: self.loader.load(record, status)))

    def prepared(self, model: LoadedModel) -> LoadedModel:
        """The model with its UNet runner attached (compiled graphs where this machine has them)."""
        if self.compiler is not None:
            self.compiler.attach(model.pipe, model.architecture.label)
        return model

    @staticmethod
    def _status(control: JobControl):
        def status(message: str, fraction: float | None = None) -> None:
            control.emit(JobStatus(control.job_id, message, fraction))

        return status

    def refiner_for(
        self, request: GenerationRequest, model: LoadedModel, choice: SamplerChoice, control: JobControl
    ) -> RefinerStage | None:
        """The SDXL refiner asked for, loaded beside the base model (which the cache must not push out for it)."""
        name = refiner_name(request)
        if name is None:
            return None
        record = find_refiner(self.registry, name)
        status = self._status(control)
        loaded = self.prepared(self.cache.get(record, lambda: self.loader.load(record, status), keep=[model.record]))
        return RefinerStage.prepare(model, loaded, request, choice, self.samplers)

    def vae_for(self, request: GenerationRequest, model: LoadedModel, control: JobControl) -> LoadedVae | None:
        """The VAE override asked for (None: the checkpoint's own), loaded with the checkpoint's VAE config."""
        if vae_name(request) is None:
            return None
        control.emit(JobStatus(control.job_id, f"Loading VAE {vae_name(request)}"))
        return self.vaes.for_request(request, self.registry, model)

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
        refiner: RefinerStage | None = None,
        vae: LoadedVae | None = None,
        final: Any = None,
    ):
        """One image; `final`: a decoder for the final latents (TAESD) instead of the pipeline's VAE."""
        pipe = model.pipe
        guidance = request.cfg_scale > 1.0
        # A1111's prompt editing ([from:to:when], [a|b]) counts the steps the progress bar counts.
        schedule = encode_schedule(
            self.encoder,
            model,
            plan.prompt,
            plan.negative_prompt,
            steps=callback.total_steps,
            clip_skip=request.clip_skip,
            guidance=guidance,
            cache=cache,
        )
        pipe.scheduler = self.samplers.make(model.scheduler_config, choice, seed=plan.seed)
        generator = torch.Generator("cpu").manual_seed(plan.seed)
        latents = initial_latents(pipe, generator, request.width, request.height)
        # The VAE override is swapped in for this image only; the checkpoint's own comes back whatever happens.
        with (
            swapped_vae(vae, [pipe, refiner.pipe if refiner else None]),
            step_caching(pipe, request.step_cache),
            torch.inference_mode(),
        ):
            output = pipe(
                **schedule.first.pipeline_kwargs(),
                width=request.width,
                height=request.height,
                num_inference_steps=request.steps,
                guidance_scale=request.cfg_scale,
                generator=generator,
                latents=latents,
                callback_on_step_end=PromptSwitch(callback, schedule),
                callback_on_step_end_tensor_inputs=tensor_inputs(schedule),
                # with a refiner: stop at the switch and hand the latents over
                **(refiner.base_kwargs() if refiner else {"output_type": "latent" if final else "pil"}),
            )
            if final is not None:
                return final(output.images), schedule.embeddings
            if refiner is not None:
                image = refiner.refine(
                    output.images,
                    request,
                    choice,
                    self.samplers,
                    plan.prompt,
                    plan.negative_prompt,
                    plan.seed,
                    generator,
                    callback,
                    self.encoder,
                )
                return image, schedule.embeddings
        return output.images[0], schedule.embeddings

    def embedding_refs(self, records: tuple[ModelRecord, ...]) -> tuple[UsedEmbedding, ...]:
        """Names and file hashes of the textual inversions used, for A1111's `TI hashes`."""
        hashes = self.loader.hashes
        return tuple(UsedEmbedding(embedding_word(r), hashes.model_hash(r.path)) for r in records if r.path is not None)

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
        extra: dict[str, Any] | None = None,
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
            **(extra or {}),  # refiner and VAE override: names, hashes, switch
        )
        path = None
        if request.save_images:
            path = self.store.save(image, params, request, request.output_format)
            self.history.add(path, params, request, control.job_id, time.time())
        return ImageResult(path=path, params=params, infotext=infotext(params), image=image)
