"""The SDXL refiner: the base model makes the first part of the denoising, a second model the rest.

This is diffusers' "ensemble of expert denoisers" recipe, which A1111 ("Refiner, switch at") and Fooocus
("Refiner switch") expose: the base pipeline runs with `denoising_end=switch` and hands over its latents;
a `StableDiffusionXLImg2ImgPipeline` over the refiner's weights continues with `denoising_start=switch`,
a fresh scheduler of the same sampler built from the refiner's own scheduler config, and the same
generator. A seed therefore gives exactly what plain diffusers gives for the same two calls.

The refiner may be an SDXL refiner checkpoint (OpenCLIP only, aesthetic-score conditioning) or any SDXL
checkpoint, whose pipeline is reused through `from_pipe` (no weights are copied).

That recipe is Fooocus's `separate` refiner swap method; `joint` and `vae` are in refiner_swap.py, and
`generate` runs a base + refiner image by the request's method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pipelines.errors import InvalidRequest, ModelNotFound
from pipelines.generation import refiner_swap
from pipelines.generation.quality import SWAP_SEPARATE
from pipelines.loading.loader import LoadedModel
from pipelines.loading.registry import ModelRegistry
from pipelines.prompts.conditioning import Conditioning, PromptEncoder
from pipelines.prompts.switching import ConditioningSchedule, PromptSwitch, encode_schedule, tensor_inputs
from pipelines.samplers import SamplerChoice, SamplerTable
from pipelines.types import Architecture, GenerationRequest, ModelFormat, ModelKind, ModelRecord

# The aesthetic scores the SDXL refiner was trained to be steered with; diffusers' and A1111's defaults.
AESTHETIC_SCORE = 6.0
NEGATIVE_AESTHETIC_SCORE = 2.5

REFINER_ARCHITECTURES = (Architecture.SDXL, Architecture.SDXL_REFINER)
_NO_REFINER = ("", "none")  # what forms send for "no refiner" besides None


def refiner_name(request: GenerationRequest) -> str | None:
    """The refiner a request asks for, or None: no name, "None", or a switch at 1.0 (the base does every step)."""
    name = (request.refiner or "").strip()
    if name.lower() in _NO_REFINER or request.refiner_switch >= 1.0:
        return None
    return name


# -- checks ------------------------------------------------------------------------------------------


def check_base(name: str, arch: Architecture) -> None:
    """A refiner checkpoint cannot start an image from noise: it only continues one."""
    if arch is Architecture.SDXL_REFINER:
        raise InvalidRequest(
            f"{name} is an SDXL refiner: it cannot make an image on its own. Pick an SDXL model as the base "
            "model and this one as the refiner.",
            field="model",
        )


def check_pair(base_name: str, base_arch: Architecture, refiner: str, refiner_arch: Architecture) -> None:
    """Raise InvalidRequest (field "refiner") unless an SDXL base is paired with an SDXL (refiner) model.

    Architecture.UNKNOWN (a hub model not downloaded yet) passes here and is checked again once loaded.
    """
    if base_arch not in (Architecture.SDXL, Architecture.UNKNOWN):
        raise InvalidRequest(
            f"A refiner works only with an SDXL base model; {base_name} is {base_arch.label}. "
            "Pick an SDXL base model or set the refiner to None.",
            field="refiner",
        )
    if refiner_arch not in (*REFINER_ARCHITECTURES, Architecture.UNKNOWN):
        raise InvalidRequest(
            f"The refiner must be an SDXL model when the base is SDXL; {refiner} is {refiner_arch.label}.",
            field="refiner",
        )


def check_request(request: GenerationRequest, registry: ModelRegistry, default_model: str | None = None) -> None:
    """Submit-time checks of the base/refiner pair against the models on disk (see check_pair)."""
    base = _find_base(request, registry, default_model)
    if base is not None:
        check_base(base.name, base.architecture)
    name = refiner_name(request)
    if name is None:
        return
    if request.refiner_switch <= 0:
        raise InvalidRequest(
            "refiner_switch must be above 0: the base model makes the start of the image and the refiner "
            f"takes over at that fraction of the steps (got {request.refiner_switch!r}).",
            field="refiner_switch",
        )
    record = find_refiner(registry, name)
    if not record.usable:
        raise InvalidRequest(f"The refiner {record.name} cannot be used: {record.note}.", field="refiner")
    if base is not None:
        check_pair(base.name, base.architecture, record.name, record.architecture)


def find_refiner(registry: ModelRegistry, name: str) -> ModelRecord:
    try:
        return registry.find(ModelKind.CHECKPOINT, name)
    except ModelNotFound as exc:
        raise InvalidRequest(f"Refiner: {exc}", field="refiner") from exc


def _find_base(request: GenerationRequest, registry: ModelRegistry, default_model: str | None) -> ModelRecord | None:
    """The base model's record where it can be known before loading; a missing one is reported by the job."""
    try:
        name = request.model or default_model
        record = registry.find(ModelKind.CHECKPOINT, name) if name else registry.default_checkpoint()
    except ModelNotFound:
        return None
    return None if record.format is ModelFormat.HUB else record


# -- the two stages ------------------------------------------------------------------------------------


def _cutoff(scheduler: Any, fraction: float) -> int:
    """The training timestep where the base hands over, computed as diffusers does for denoising_end/start."""
    train = scheduler.config.num_train_timesteps
    return int(round(train - fraction * train))


def split_steps(base_scheduler: Any, refiner_scheduler: Any, steps: int, switch: float, strength: float = 1.0) -> tuple[int, int]:
    """How many denoising steps (step-callback calls) each stage makes, as diffusers 0.42 counts them.

    The base keeps its timesteps at or above the cutoff (of the tail that `strength` leaves, when the base
    starts from an image); the refiner takes those below it (one more on a second-order scheduler, so that
    it never starts between the two halves of a step).
    """
    base_scheduler.set_timesteps(steps, device="cpu")
    start = max(steps - min(int(steps * strength), steps), 0) if strength < 1.0 else 0
    tail = base_scheduler.timesteps[start * base_scheduler.order :]
    base_n = sum(1 for t in tail if t >= _cutoff(base_scheduler, switch))
    refiner_scheduler.set_timesteps(steps, device="cpu")
    refiner_n = int((refiner_scheduler.timesteps < _cutoff(refiner_scheduler, switch)).sum().item())
    if refiner_scheduler.order == 2 and refiner_n % 2 == 0:
        refiner_n += 1
    return base_n, min(refiner_n, len(refiner_scheduler.timesteps))


class StageCallback:
    """The job's step callback, seen from the refiner's loop: its step i is step offset+i of the image."""

    def __init__(self, callback: Any, offset: int):
        self.callback = callback
        self.offset = offset

    def __call__(self, pipe: Any, step_index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        return self.callback(pipe, self.offset + step_index, timestep, tensors)


def img2img_pipe(model: LoadedModel) -> Any:
    """A StableDiffusionXLImg2ImgPipeline over the model's weights (shared, not copied)."""
    import diffusers

    pipe = model.pipe
    if isinstance(pipe, diffusers.StableDiffusionXLImg2ImgPipeline):
        return pipe
    # from_pipe casts the shared modules to its torch_dtype (float32 by default): keep theirs.
    refiner = diffusers.StableDiffusionXLImg2ImgPipeline.from_pipe(pipe, torch_dtype=pipe.unet.dtype)
    refiner.set_progress_bar_config(disable=True)
    return refiner


@dataclass
class RefinerStage:
    """One job's refiner: which model, where it takes over, and how many steps each stage makes."""

    model: LoadedModel  # the refiner checkpoint as loaded (its name and hash go into the metadata)
    pipe: Any  # StableDiffusionXLImg2ImgPipeline over its weights
    switch: float  # fraction of the steps made by the base model
    base_steps: int
    refiner_steps: int
    swap: str = SWAP_SEPARATE  # Fooocus's refiner swap method: joint, separate or vae
    joint_steps: int = 0  # joint: the steps of the one sampling run
    _conditioning: dict[tuple[str, str], Conditioning] = field(default_factory=dict, repr=False)

    @classmethod
    def prepare(
        cls,
        base: LoadedModel,
        refiner: LoadedModel,
        request: GenerationRequest,
        choice: SamplerChoice,
        samplers: SamplerTable,
        strength: float = 1.0,
    ) -> RefinerStage:
        """Check the loaded pair (hub models are known only now) and count the steps of each stage of the final
        pass: `request.steps` long, starting from an image at `strength` (1: from noise)."""
        check_base(base.name, base.architecture)
        check_pair(base.name, base.architecture, refiner.name, refiner.architecture)
        switch = float(request.refiner_switch)
        base_n, refiner_n = split_steps(
            samplers.make(base.scheduler_config, choice),
            samplers.make(refiner.scheduler_config, choice),
            request.steps,
            switch,
            strength,
        )
        joint = samplers.count_steps(base.scheduler_config, choice, request.steps)
        return cls(refiner, img2img_pipe(refiner), switch, base_n, refiner_n, request.refiner_swap, joint)

    @property
    def total_steps(self) -> int:
        return self.joint_steps if self.swap == "joint" else self.base_steps + self.refiner_steps

    def bindings(self, base_pipe: Any) -> list[tuple[Any, Any]]:
        """(pipeline, UNet) pairs the refiner's steps run as, for the sampling controls' hooks."""
        return [(base_pipe if self.swap == "joint" else self.pipe, self.pipe.unet)]

    def base_kwargs(self) -> dict[str, Any]:
        """What the base pipeline call gets instead of output_type="pil": stop at the switch, hand latents over."""
        return {"denoising_end": self.switch, "output_type": "latent"}

    def metadata(self) -> dict[str, Any]:
        """ImageParams fields: A1111 writes `Refiner: name [hash], Refiner switch at: 0.8`."""
        return {
            "refiner": self.model.name,
            "refiner_hash": self.model.short_hash,
            "refiner_switch": self.switch,
            "refiner_swap": self.swap,
        }

    def generate(
        self,
        pipe: Any,
        kwargs: dict[str, Any],
        schedule: ConditioningSchedule,
        request: GenerationRequest,
        choice: SamplerChoice,
        samplers: SamplerTable,
        prompt: str,
        negative: str,
        seed: int,
        generator: torch.Generator,
        callback: Any,
        encoder: PromptEncoder,
    ) -> Any:
        """One image: the base pipeline called with `kwargs` (prompt tensors, size, steps, noise), then the
        refiner by the swap method; returns the PIL image."""
        if self.swap == "joint":
            refined = self.schedule(request, prompt, negative, callback, encoder)
            ids = refiner_swap.refiner_time_ids(
                self.pipe, request.width, request.height, request.cfg_scale > 1.0, (AESTHETIC_SCORE, NEGATIVE_AESTHETIC_SCORE)
            )
            switch = refiner_swap.JointSwitch(callback, schedule, refined, self.pipe.unet, ids, self.base_steps)
            with refiner_swap.swapped_unet(pipe):
                output = pipe(
                    **kwargs,
                    callback_on_step_end=switch,
                    callback_on_step_end_tensor_inputs=refiner_swap.JOINT_TENSORS,
                    output_type="pil",
                )
            return output.images[0]
        base = dict(
            **kwargs,
            callback_on_step_end=PromptSwitch(callback, schedule),
            callback_on_step_end_tensor_inputs=tensor_inputs(schedule),
            **self.base_kwargs(),
        )
        if self.swap != "vae":
            latents = pipe(**base).images
            return self.refine(latents, request, choice, samplers, prompt, negative, seed, generator, callback, encoder)
        with refiner_swap.recording(pipe) as record:
            pipe(**base)
        scheduler = samplers.make(self.model.scheduler_config, choice, seed=seed + 1)
        start = refiner_swap.first_refiner_timestep(scheduler, request.steps, self.switch)
        fresh = torch.Generator("cpu").manual_seed(seed + 1)
        latents = refiner_swap.renoised(record, scheduler, start, fresh).to(pipe.unet.dtype)
        return self.refine(latents, request, choice, samplers, prompt, negative, seed + 1, fresh, callback, encoder)

    def schedule(
        self, request: GenerationRequest, prompt: str, negative: str, callback: Any, encoder: PromptEncoder
    ) -> ConditioningSchedule:
        """The prompts encoded by the refiner's own text encoders (weights, long prompts, embeddings, editing)."""
        return encode_schedule(
            encoder,
            self.model,
            prompt,
            negative,
            steps=callback.total_steps,
            clip_skip=request.clip_skip,
            guidance=request.cfg_scale > 1.0,
            cache=self._conditioning,
        )

    def refine(
        self,
        latents: torch.Tensor,
        request: GenerationRequest,
        choice: SamplerChoice,
        samplers: SamplerTable,
        prompt: str,
        negative: str,
        seed: int,
        generator: torch.Generator,
        callback: Any,
        encoder: PromptEncoder,
    ) -> Any:
        """Denoise the base's latents from the switch to the end and decode them; returns the PIL image.

        The prompt goes through the job's encoder (weights, long prompts, embeddings), on the refiner's
        own text encoders.
        """
        schedule = self.schedule(request, prompt, negative, callback, encoder)
        offset = callback.steps_done  # the refiner's step i is step offset + i of the image: the schedule goes on
        self.pipe.scheduler = samplers.make(self.model.scheduler_config, choice, seed=seed)
        output = self.pipe(
            **schedule.at(offset).pipeline_kwargs(),
            image=latents,
            num_inference_steps=request.steps,
            denoising_start=self.switch,
            guidance_scale=request.cfg_scale,
            aesthetic_score=AESTHETIC_SCORE,
            negative_aesthetic_score=NEGATIVE_AESTHETIC_SCORE,
            generator=generator,
            output_type="pil",
            callback_on_step_end=PromptSwitch(StageCallback(callback, offset), schedule, offset),
            callback_on_step_end_tensor_inputs=tensor_inputs(schedule),
        )
        return output.images[0]
