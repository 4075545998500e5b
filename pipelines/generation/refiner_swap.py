"""Fooocus's refiner swap methods, `joint` and `vae`, on diffusers pipelines (`separate` is refiner.py's recipe).

- joint: one sampling run. The base pipeline's loop goes through every step; after the step before the
  switch, its step callback puts the refiner's UNet in the pipeline's place and hands over the refiner's
  conditioning (prompt embeddings, pooled embeddings, its micro-conditioning numbers). The sampler and its
  state (a multistep solver's history, the noise of an ancestral one) go on unchanged, and the image is
  decoded by the base's VAE, as Fooocus does.
- vae: the base stops at the switch with its part fully denoised (the clean image its last step
  predicts, what a step to noise level 0 gives); fresh noise drawn from seed + 1, whose per-pixel mean over
  the latent channels is replaced by that of the base's last predicted noise (so the re-noised image keeps
  its overall tones), is added at the refiner's first noise level; the refiner then samples the rest with a
  fresh sampler. Fooocus also raises that tail's noise levels by 1.4; diffusers' schedulers take custom
  noise levels for only a few samplers, so Easel re-noises at the switch's own level, for every sampler.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch

from pipelines.generation.guidance import NoiseLevels, _output_tensor, predicted_x0, sample_of, timestep_of, to_epsilon
from pipelines.prompts.switching import ConditioningSchedule, PromptSwitch, pipeline_tensors

JOINT_TENSORS = ["latents", "prompt_embeds", "add_text_embeds", "add_time_ids"]


def refiner_time_ids(refiner_pipe: Any, width: int, height: int, guidance: bool, scores: tuple[float, float]) -> torch.Tensor:
    """The refiner's micro-conditioning numbers, as its img2img pipeline makes them for this size: an SDXL
    refiner takes (h, w, top, left, aesthetic score), an SDXL base (h, w, top, left, h, w); negative row first."""
    size = [float(height), float(width), 0.0, 0.0]
    if refiner_pipe.config.requires_aesthetics_score:
        positive, negative = [*size, scores[0]], [*size, scores[1]]
    else:
        positive = negative = [*size, float(height), float(width)]
    return torch.tensor([negative, positive] if guidance else [positive])


class JointSwitch:
    """The base loop's step callback: prompt editing as usual, and the refiner taking over at `switch_step`."""

    def __init__(
        self,
        callback: Any,
        base: ConditioningSchedule,
        refined: ConditioningSchedule,
        refiner_unet: Any,
        time_ids: torch.Tensor,
        switch_step: int,
    ):
        self.callback = callback
        self.base = PromptSwitch(callback, base)
        self.refined = PromptSwitch(callback, refined)
        self.schedule = refined
        self.refiner_unet = refiner_unet
        self.time_ids = time_ids
        self.switch_step = switch_step
        self.swapped = False

    def __call__(self, pipe: Any, step_index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if self.swapped:
            return self.refined(pipe, step_index, timestep, tensors)
        # a second-order sampler evaluates twice per step: take over only between two whole steps
        between = getattr(pipe.scheduler, "state_in_first_order", True)
        if step_index + 1 < self.switch_step or not between:
            return self.base(pipe, step_index, timestep, tensors)
        out = dict(self.callback(pipe, step_index, timestep, tensors) or {})
        pipe.unet = self.refiner_unet  # the caller puts the base's back (`swapped_unet`)
        current = {"prompt_embeds": tensors["prompt_embeds"], "add_text_embeds": tensors["add_text_embeds"]}
        out.update(pipeline_tensors(self.schedule.at(step_index + 1), current, pipe.do_classifier_free_guidance))
        like = tensors["add_time_ids"]
        out["add_time_ids"] = self.time_ids.to(like.device, like.dtype)
        self.swapped = True
        return out


@contextmanager
def swapped_unet(pipe: Any) -> Iterator[None]:
    """Whatever UNet the run ends with, the pipeline gets its own back."""
    own = pipe.unet
    try:
        yield
    finally:
        if pipe.unet is not own:
            pipe.unet = own


class CleanPrediction:
    """Forward hook recording, at each call, the guided prediction as the clean image x0 and as unit noise ε.

    Registered after the quality hooks, so it sees the prediction the pipeline steps with."""

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self.x0: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None
        self._levels: tuple[Any, NoiseLevels] | None = None

    def __call__(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        pipe = self.pipe
        pred, sample = _output_tensor(output).float(), sample_of(args, kwargs).float()
        if pipe.do_classifier_free_guidance:
            uncond, cond = pred.chunk(2)
            pred, sample = uncond + pipe.guidance_scale * (cond - uncond), sample.chunk(2)[1]
        if self._levels is None or self._levels[0] is not pipe.scheduler:
            self._levels = (pipe.scheduler, NoiseLevels(pipe.scheduler))
        alpha_bar = self._levels[1].alpha_bar(timestep_of(args, kwargs))
        self.noise = to_epsilon(pred, sample, alpha_bar, getattr(pipe.scheduler.config, "prediction_type", "epsilon"))
        self.x0 = predicted_x0(self.noise, sample, alpha_bar)


@contextmanager
def recording(pipe: Any) -> Iterator[CleanPrediction]:
    record = CleanPrediction(pipe)
    handle = pipe.unet.register_forward_hook(record, with_kwargs=True)
    try:
        yield record
    finally:
        handle.remove()


def renoised(record: CleanPrediction, scheduler: Any, timestep: Any, generator: torch.Generator) -> torch.Tensor:
    """The base's clean image with fresh noise at `timestep`, in the scheduler's own latent convention.

    The noise is drawn on the CPU in fp32 (a seed means the same picture everywhere); its mean over the
    latent channels is swapped for the mean of the noise the base predicted last."""
    x0, predicted = record.x0, record.noise
    if x0 is None or predicted is None:
        raise RuntimeError("the base pass made no step to hand over")
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device)
    noise = noise + predicted.mean(dim=1, keepdim=True) - noise.mean(dim=1, keepdim=True)
    step = torch.as_tensor(timestep).reshape(1).to(x0.device)
    return scheduler.add_noise(x0, noise, step)


def first_refiner_timestep(scheduler: Any, steps: int, switch: float) -> Any:
    """The timestep a refiner pass started at `switch` begins with, chosen as diffusers' img2img chooses it."""
    scheduler.set_timesteps(steps, device="cpu")
    train = scheduler.config.num_train_timesteps
    cutoff = int(round(train - switch * train))
    count = int((scheduler.timesteps < cutoff).sum().item())
    if scheduler.order == 2 and count % 2 == 0:
        count += 1
    return scheduler.timesteps[-count] if count else scheduler.timesteps[-1]
