"""Fooocus's sampling controls applied inside any diffusers pipeline call, through hooks on its UNet.

diffusers guides inside its own loop: `noise = uncond + g·(cond − uncond)`, then the sampler's step. A
forward hook on the UNet sees the batched output [uncond, cond] and hands back [uncond, cond'] with

    cond' = uncond + (G / g)·(cond* − uncond)

where cond* is the sharpened positive prediction and G the (adaptive) guidance scale, so the pipeline's own
guidance yields `uncond + G·(cond* − uncond)`, which is Fooocus's result, with every sampler and without a
copy of the pipeline's loop. A forward pre-hook scales SDXL's size conditioning (ADM) the same way. The
hooks live for one call (`applied`) and are removed afterwards, also on errors; when no control is active
nothing is installed, so the call is exactly plain diffusers.

Progress, which the blends follow, is read from the timestep the UNet is called with, as Fooocus does
(`1 − t / 999`), so it holds for every schedule, the refiner's included.

The math, in Fooocus's terms (its code is not used; the algorithm is written here from its description):
- sharpness: the positive noise prediction ε is blended with an edge-preserving (joint bilateral) blur of
  itself, guided by the predicted clean image x0: ε* = (1 − a)·ε + a·blur(ε; x0), a = 0.001·sharpness·progress.
- adaptive CFG: above the mimicked scale m, G = g·progress + m·(1 − progress): early steps guide like m.
- ADM: SDXL's "original size" numbers are multiplied by 1.5 for the positive prompt and 0.8 for the
  negative one while the timestep is above 999·(1 − end); then the pipeline's own numbers are used.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.generation.quality import QualityControls

BLUR_SIZE = 13  # the filter's window, in latent pixels
BLUR_SIGMA_SPACE = 3.0  # spatial fall-off of the weights
BLUR_SIGMA_RANGE = 3.0  # fall-off with the (standardized) difference of the guide between two pixels
SHARPNESS_RATE = 0.001  # blend weight per unit of sharpness at full progress


# -- noise levels ------------------------------------------------------------------------------------------


class NoiseLevels:
    """σ and ᾱ at a (possibly fractional) training timestep, from a scheduler's training schedule.

    Schedulers with sigma schedules (Karras, exponential…) call the UNet at fractional timesteps that
    diffusers interpolates in log σ; reading σ back the same way gives the level the step was made at.
    """

    def __init__(self, scheduler: Any):
        alphas = scheduler.alphas_cumprod.detach().to("cpu", torch.float64).numpy()
        self.log_sigmas = np.log(np.sqrt((1 - alphas) / alphas))
        self.last = len(alphas) - 1  # 999 for every SD/SDXL model

    def progress(self, t: float) -> float:
        """How far the denoising is at timestep t: 0 at pure noise, 1 at the clean image."""
        return min(1.0, max(0.0, 1.0 - t / self.last))

    def sigma(self, t: float) -> float:
        return float(np.exp(np.interp(t, np.arange(self.last + 1), self.log_sigmas)))

    def alpha_bar(self, t: float) -> float:
        return 1.0 / (1.0 + self.sigma(t) ** 2)


def timestep_of(args: tuple, kwargs: dict) -> float:
    t = args[1] if len(args) > 1 else kwargs["timestep"]
    return float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else float(t)


def sample_of(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["sample"]


def to_epsilon(pred: torch.Tensor, x_t: torch.Tensor, alpha_bar: float, kind: str) -> torch.Tensor:
    """The model's prediction as noise ε, from ε itself, v, or x0 (`prediction_type`), given x_t = √ᾱ·x0 + √(1−ᾱ)·ε."""
    if kind == "v_prediction":
        return math.sqrt(alpha_bar) * pred + math.sqrt(1 - alpha_bar) * x_t
    if kind == "sample":
        return (x_t - math.sqrt(alpha_bar) * pred) / math.sqrt(1 - alpha_bar)
    return pred


def from_epsilon(eps: torch.Tensor, x_t: torch.Tensor, alpha_bar: float, kind: str) -> torch.Tensor:
    if kind == "v_prediction":
        return (eps - math.sqrt(1 - alpha_bar) * x_t) / math.sqrt(alpha_bar)
    if kind == "sample":
        return (x_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)
    return eps


def predicted_x0(eps: torch.Tensor, x_t: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    return (x_t - math.sqrt(1 - alpha_bar) * eps) / math.sqrt(alpha_bar)


# -- the filter --------------------------------------------------------------------------------------------


def edge_preserving_blur(x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """A joint bilateral filter of x: each value becomes a weighted mean of its 13×13 neighbourhood, weighted
    by distance and by how alike the guide is there (L1 over channels, the guide standardized per image), so
    smooth areas are smoothed and edges of the guide are kept. Borders are mirrored."""
    b, c, h, w = x.shape
    r = BLUR_SIZE // 2
    std, mean = torch.std_mean(guide, dim=(1, 2, 3), keepdim=True)
    g = (guide - mean) / (std + 1e-5)

    def windows(t: torch.Tensor) -> torch.Tensor:  # (b, c, 169, h·w): each pixel's neighbourhood
        return F.unfold(F.pad(t, (r, r, r, r), mode="reflect"), BLUR_SIZE).view(b, t.shape[1], BLUR_SIZE**2, h * w)

    offsets = torch.arange(BLUR_SIZE, device=x.device, dtype=x.dtype) - r
    space = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * BLUR_SIGMA_SPACE**2)).reshape(-1, 1)
    distance = (windows(g) - g.reshape(b, c, 1, h * w)).abs().sum(1)
    weight = space * torch.exp(-0.5 * (distance / BLUR_SIGMA_RANGE) ** 2)  # (b, 169, h·w)
    out = (windows(x) * weight.unsqueeze(1)).sum(2) / weight.sum(1, keepdim=True)
    return out.view(b, c, h, w)


# -- the hooks ---------------------------------------------------------------------------------------------


def _output_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output.sample


def _with_output(output: Any, tensor: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (tensor, *output[1:])
    output.sample = tensor
    return output


class _Hook:
    def __init__(self, pipe: Any, controls: QualityControls):
        self.pipe = pipe
        self.controls = controls
        self._levels: tuple[Any, NoiseLevels] | None = None

    def levels(self) -> NoiseLevels:
        """The noise levels of the pipeline's scheduler, computed once per scheduler (a job makes one per image)."""
        scheduler = self.pipe.scheduler
        if self._levels is None or self._levels[0] is not scheduler:
            self._levels = (scheduler, NoiseLevels(scheduler))
        return self._levels[1]


class GuidedPrediction(_Hook):
    """Forward hook: sharpness and adaptive CFG on the [uncond, cond] batch of a guided call."""

    def __call__(self, module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        pipe = self.pipe
        if not pipe.do_classifier_free_guidance:
            return None
        levels = self.levels()
        t = timestep_of(args, kwargs)
        pred = _output_tensor(output)
        cond = self.target(pred, sample_of(args, kwargs), t, float(pipe.guidance_scale), levels, pipe.scheduler.config)
        return _with_output(output, torch.cat([pred.chunk(2)[0], cond.to(pred.dtype)]))

    def target(self, pred: torch.Tensor, sample: torch.Tensor, t: float, scale: float, levels: NoiseLevels, config: Any):
        """The cond half that makes the pipeline's `uncond + scale·(cond − uncond)` Fooocus's guided prediction."""
        controls = self.controls
        progress, alpha_bar = levels.progress(t), levels.alpha_bar(t)
        kind = getattr(config, "prediction_type", "epsilon")
        x_t = sample.float().chunk(2)[1]
        uncond, cond = (to_epsilon(p, x_t, alpha_bar, kind) for p in pred.float().chunk(2))
        weight = SHARPNESS_RATE * controls.sharpness * progress
        if weight > 0:
            cond = cond * (1 - weight) + edge_preserving_blur(cond, predicted_x0(cond, x_t, alpha_bar)) * weight
        used = scale
        if 0 < controls.adaptive_cfg < scale:
            used = scale * progress + controls.adaptive_cfg * (1 - progress)
        return from_epsilon(uncond + (used / scale) * (cond - uncond), x_t, alpha_bar, kind)


class SizeConditioning(_Hook):
    """Forward pre-hook: ADM, SDXL's original-size numbers scaled per prompt early in the denoising."""

    def __call__(self, module: Any, args: tuple, kwargs: dict) -> Any:
        added = kwargs.get("added_cond_kwargs") or {}
        ids = added.get("time_ids")
        if ids is None or ids.shape[-1] != 6:  # the refiner's 5 numbers carry an aesthetic score instead
            return None
        levels = self.levels()
        if not timestep_of(args, kwargs) > levels.last * (1 - self.controls.adm_end):
            return None
        return args, {**kwargs, "added_cond_kwargs": {**added, "time_ids": self.scaled(ids)}}

    def scaled(self, ids: torch.Tensor) -> torch.Tensor:
        """(h, w, top, left, target h, target w) per row, with h and w scaled; negative rows first when guided."""
        rows = ids.shape[0]
        guided = self.pipe.do_classifier_free_guidance and rows % 2 == 0
        scale = torch.full((rows, 1), self.controls.adm_positive, dtype=torch.float64)
        if guided:
            scale[: rows // 2] = self.controls.adm_negative
        size = torch.floor(ids[:, :2].to("cpu", torch.float64) * scale).to(ids.device, ids.dtype)
        return torch.cat([size, ids[:, 2:]], dim=1)


@contextmanager
def applied(controls: QualityControls, bindings: Sequence[tuple[Any, Any]], freeu_unet: Any = None) -> Iterator[None]:
    """Hooks on each (pipeline, UNet) pair for the duration of a call, and FreeU on `freeu_unet`; all undone
    on exit. The pipeline of a pair is the one whose loop calls that UNet (its scheduler and guidance scale).
    A UNet is hooked once: a refiner that is the base checkpoint itself shares the base's UNet, and both its
    pipelines have the same training schedule and guidance scale."""
    hooked = {id(unet): (pipe, unet) for pipe, unet in reversed(bindings)}  # the first pair of each UNet wins
    with ExitStack() as stack:
        for pipe, unet in hooked.values():
            if controls.adm:
                handle = unet.register_forward_pre_hook(SizeConditioning(pipe, controls), with_kwargs=True)
                stack.callback(handle.remove)
            if controls.guided:
                handle = unet.register_forward_hook(GuidedPrediction(pipe, controls), with_kwargs=True)
                stack.callback(handle.remove)
        if controls.freeu is not None and freeu_unet is not None:
            f = controls.freeu
            freeu_unet.enable_freeu(s1=f.s1, s2=f.s2, b1=f.b1, b2=f.b2)
            stack.callback(freeu_unet.disable_freeu)
        yield
