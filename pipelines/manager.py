"""PipelineManager.run: one job from request to saved images, as numbered steps.

It runs on the worker thread only (the queue guarantees that), so it may keep per-job state on the
pipelines it drives. It owns no threads and no UI; what it needs is handed in by services.py.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import torch

from pipelines.errors import EaselError, ImageSkipped, InvalidRequest
from pipelines.generation.hires import plan_hires
from pipelines.generation.image_input import InputModes, InputPlan, plan_input, prepare
from pipelines.generation.masking import job_model, masked_input, with_inpaint_prompt
from pipelines.generation.passes import final_pass, hires_metadata, input_metadata, upscale_params
from pipelines.generation.quality import QualityControls
from pipelines.generation.refiner import RefinerStage, check_request, find_refiner, refiner_name
from pipelines.generation.tasks import ImageContext, initial_latents, make_image, total_steps
from pipelines.generation.upscale import UpscalerLibrary
from pipelines.images.inputs import InputStore
from pipelines.jobs.events import ImageReady, JobStatus
from pipelines.jobs.previews import PreviewDecoders
from pipelines.jobs.progress import StepCallback, StepTimer, latent_preview
from pipelines.jobs.queue import JobControl
from pipelines.loading.cache import ModelCache
from pipelines.loading.loader import LoadedModel, ModelLoader
from pipelines.loading.registry import ModelRegistry
from pipelines.loading.upscalers import UpscalerLoader
from pipelines.loading.vae import LoadedVae, VaeLoader, find_vae, vae_name
from pipelines.loras.patching import LoraManager
from pipelines.outputs.history import History
from pipelines.outputs.keeping import ImageKeeper
from pipelines.outputs.store import ImageStore
from pipelines.performance import PerformanceTable
from pipelines.prompts.conditioning import Conditioning, PromptEncoder
from pipelines.prompts.expansion import PromptExpander
from pipelines.prompts.image_plans import ImagePlan, ImagePlanner, plan_seeds
from pipelines.prompts.plan import PromptPlanner
from pipelines.samplers import SamplerChoice, SamplerTable
from pipelines.speed.compiler import UNetCompiler
from pipelines.speed.timing import StepTimes
from pipelines.types import (
    Architecture,
    GenerationRequest,
    GenerationResult,
    ModelKind,
    ModelRecord,
)
from pipelines.validation import validate

__all__ = ["ImagePlan", "PipelineManager", "initial_latents", "plan_seeds"]  # plans: re-exported

log = logging.getLogger(__name__)


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
        inputs: InputStore | None = None,
        upscalers: UpscalerLibrary | None = None,
        expander: PromptExpander | None = None,
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
        self.inputs = inputs or InputStore(store.output_dir, 16_000_000)
        self.upscalers = upscalers or UpscalerLibrary(registry, UpscalerLoader(torch.device("cpu")))
        self.input_modes = InputModes()
        self.vae_tile_pixels: int | None = None  # None: img2img.TILED_VAE_PIXELS
        self.expander = expander or PromptExpander(registry)
        self.compiler = compiler
        self.step_times = step_times or StepTimes(None)
        self.planner = ImagePlanner(prompts, self.expander)
        self.keeper = ImageKeeper(store, history, loader.hashes)
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
        if request.prompt_expansion:
            request = request.replace(prompt_expansion=self.expander.find(request.prompt_expansion).name)
        check_request(job_model(request), self.registry, self.default_model)
        if vae_name(request) is not None:
            find_vae(self.registry, vae_name(request))
        if request.performance:
            mode = self.performance.get(request.performance)
            why = self.performance.availability(mode.name, self.architecture_of(request))
            if why:
                raise InvalidRequest(why, field="performance")
            request = request.replace(performance=mode.name)
        if request.input is not None:
            if request.hires is not None:
                raise InvalidRequest("The hires fix is for text to image; a job with an input image has none.", field="hires")
            self.input_plan(self.performance.settings(request))
        if request.hires is not None:
            plan_hires(self.performance.settings(request), self.upscalers, self.samplers)
            self.check_hires_model(request)
        return request

    def check_hires_model(self, request: GenerationRequest) -> None:
        """The hires fix's second pass is an img2img of the whole picture, which an inpainting checkpoint has no pipeline for."""
        try:
            record = self.registry.find(ModelKind.CHECKPOINT, request.model) if request.model else self.default_record()
        except EaselError:
            return  # the job itself reports a missing model
        if record.inpainting:
            raise InvalidRequest(f"The hires fix needs a normal checkpoint; {record.name} is an inpainting one.", field="hires")

    def input_plan(self, request: GenerationRequest) -> InputPlan:
        """The plan of a request's input image (it must be in the input store); InvalidRequest naming the field."""
        assert request.input is not None
        size = self.inputs.size(request.input.image)
        if request.input.mask is not None:
            self.inputs.size(request.input.mask, field="input.mask")
        if request.input.masked and request.input.inpaint_model:
            record = self.registry.find(ModelKind.CHECKPOINT, request.input.inpaint_model)
            if not record.usable:
                raise InvalidRequest(f"{record.name} cannot be used: {record.note}.", field="input.inpaint_model")
        return plan_input(request, size, self.input_modes, self.performance, self.upscalers)

    def architecture_of(self, request: GenerationRequest) -> Architecture:
        """The architecture of the model a request will use, as far as known before loading it."""
        model = job_model(request).model
        try:
            record = self.registry.find(ModelKind.CHECKPOINT, model) if model else self.default_record()
        except EaselError:
            return Architecture.UNKNOWN  # the job itself reports a missing model
        return record.architecture

    def run(self, control: JobControl) -> GenerationResult:
        started = time.perf_counter()
        result = control.result

        # 1. The request was checked and its names settled at submit (JobQueue's prepare step, `validate`);
        #    the performance mode sets steps, guidance and sampler; an inpaint runs on its inpaint model if one
        #    was picked, its additional prompt before the prompt.
        request = control.request
        generation = self.performance.settings(with_inpaint_prompt(job_model(request)))
        choice = self.samplers.resolve(generation.sampler, generation.scheduler)
        if choice.note:
            control.emit(JobStatus(control.job_id, choice.note))

        # 2. Seeds and prompts of every image: styles, <lora:…> tags into the LoRA list, wildcards by seed,
        #    the prompt expansion's words by seed.
        generation, plans = self.planner.plan(generation, self._status(control))

        # 3. An input image: its plan (mode, strength, size, steps) and the image made ready once for all images
        #    (upscaled, resized or framed); a hires fix: its plan. An upscale without a diffusion pass needs no model.
        input_plan, init = self.input_for(generation, control)
        if input_plan is not None and not input_plan.diffusion:
            return self.upscale_only(control, request, generation, plans, input_plan, init, started)
        hires = plan_hires(generation, self.upscalers, self.samplers) if generation.hires else None
        final = final_pass(generation, choice, input_plan, hires)

        # 4. The models: the checkpoint from the cache, else from disk (or the hub); the refiner and VAE asked for.
        model = self.model_for(generation, control)
        # From an image (Vary, Upscale, img2img, the hires fix's second pass) the refiner takes over `separate`ly:
        # Fooocus's joint and vae swaps are defined for a pass from noise.
        swap = final.request if input_plan is None and hires is None else final.request.replace(refiner_swap="separate")
        refiner = self.refiner_for(swap, model, final.choice, control, final.strength)
        vae = self.vae_for(generation, model, control)

        # 5. The mode's acceleration LoRA for this architecture (downloaded on first use).
        generation = self.performance.apply(generation, model.architecture, self._status(control))

        # 6. LoRAs patched in for the whole job (restored exactly before a job with another set, or none; kept for
        #    the next job with the same set); the images are made one by one, each shown and saved when done.
        timer = StepTimer()
        preview = self.previews.for_model(model.architecture, model.pipe.device, model.pipe.unet.dtype)
        unwatched = latent_preview(model.architecture) if preview is not None else None  # free, for unwatched jobs
        cache: dict[tuple[str, str], Conditioning] = {}
        steps = total_steps(model, generation, choice, self.samplers, refiner, input_plan, hires)
        controls = QualityControls.for_image(generation, model.architecture)  # Fooocus's sampling controls
        extra = {
            **(refiner.metadata() if refiner else {}),
            **(vae.metadata() if vae else {}),
            **input_metadata(generation, input_plan),
            **hires_metadata(generation, hires),
            **controls.metadata(),
        }
        if generation.prompt_expansion:
            extra["expansion_model"] = generation.prompt_expansion
        shown = generation.replace(width=input_plan.width, height=input_plan.height) if input_plan else generation
        if input_plan is not None:
            shown = shown.replace(steps=input_plan.steps)
        # CPU Turbo's approximations: the tiny decoder for the final image when one is installed (not with a refiner)
        fast = self.previews.final_decoder(model.architecture, model.pipe.device, model.pipe.unet.dtype)
        fast = fast if generation.fast_decode and refiner is None else None
        extra.update(
            step_cache=generation.step_cache if generation.step_cache > 1 else 0,
            token_merging=generation.token_merging,
            fast_decode=fast is not None,
        )
        with self.loras.activate(model, generation.loras, generation.skip_invalid_loras, keep=True) as active:
            for note in active.notes:
                control.emit(JobStatus(control.job_id, note))
            for plan in plans:
                callback = StepCallback(control, timer, plan.index, len(plans), steps, preview, self.preview_interval)
                callback.unwatched = unwatched
                context = ImageContext(
                    model,
                    generation,
                    choice,
                    plan.seed,
                    plan.prompt,
                    plan.negative_prompt,
                    callback,
                    self.samplers,
                    self.encoder,
                    self.upscalers,
                    cache,
                    refiner,
                    vae,
                    input_plan,
                    init,
                    hires,
                    controls=controls,
                    final_decoder=fast,
                    **({"vae_tile_pixels": self.vae_tile_pixels} if self.vae_tile_pixels else {}),
                )
                try:
                    callback.start()
                    image, embeddings = make_image(context)
                except ImageSkipped:
                    result.skipped += 1
                    continue
                used = {"embeddings": self.keeper.embedding_refs(embeddings), **plan.metadata()}
                params = self.keeper.params(model, request, shown, choice, plan, active, {**extra, **used})
                item = self.keeper.keep(control.job_id, request, params, image)
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
            generation.token_merging,
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
        self, request: GenerationRequest, model: LoadedModel, choice: SamplerChoice, control: JobControl, strength: float = 1.0
    ) -> RefinerStage | None:
        """The SDXL refiner asked for, loaded beside the base model (which the cache must not push out for it)."""
        name = refiner_name(request)
        if name is None:
            return None
        record = find_refiner(self.registry, name)
        status = self._status(control)
        loaded = self.prepared(self.cache.get(record, lambda: self.loader.load(record, status), keep=[model.record]))
        if loaded is not model:  # a model kept with LoRAs by an earlier job refines without them
            self.loras.restore(loaded)
        return RefinerStage.prepare(model, loaded, request, choice, self.samplers, strength)

    def input_for(self, request: GenerationRequest, control: JobControl) -> tuple[InputPlan | None, Any]:
        """The input image's plan and the image made ready for the pass (upscaled once for all images of the job)."""
        if request.input is None:
            return None, None
        plan = self.input_plan(request)
        image = self.inputs.get(request.input.image)
        if plan.mask is not None:
            mask = self.inputs.get_mask(plan.mask.mask) if plan.mask.mask else None
            return plan, masked_input(plan.mask, image, mask, (plan.width, plan.height), plan.resize)
        if plan.upscaler is not None:
            control.emit(JobStatus(control.job_id, f"Upscaling with {plan.upscaler} to {plan.width}x{plan.height}"))
        part = request.input
        return plan, prepare(plan, image, self.upscalers, control.check, part.upscaler_2, part.upscaler_2_visibility)

    def upscale_only(
        self,
        control: JobControl,
        request: GenerationRequest,
        generation: GenerationRequest,
        plans: list[ImagePlan],
        plan: InputPlan,
        image: Any,
        started: float,
    ) -> GenerationResult:
        """Upscale (Fast 2x) and A1111's extras: the upscaled input is the result, no model is loaded."""
        params = upscale_params(generation, plan, plans[0].seed, plans[0].prompt, plans[0].negative_prompt)
        item = self.keeper.keep(control.job_id, request, params, image)
        control.result.images.append(item)
        control.emit(ImageReady(control.job_id, 0, item))
        control.result.seconds = time.perf_counter() - started
        return control.result

    def vae_for(self, request: GenerationRequest, model: LoadedModel, control: JobControl) -> LoadedVae | None:
        """The VAE override asked for (None: the checkpoint's own), loaded with the checkpoint's VAE config."""
        if vae_name(request) is None:
            return None
        control.emit(JobStatus(control.job_id, f"Loading VAE {vae_name(request)}"))
        return self.vaes.for_request(request, self.registry, model)
