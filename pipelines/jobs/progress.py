"""The one step callback: progress with ETA, live previews, and the place where stop/skip take effect.

diffusers calls `callback_on_step_end` after every denoising step; raising there ends the pipeline
call at once (JobInterrupted / ImageSkipped), which is how cancel and skip stay responsive without
touching the pipeline's internals.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from PIL import Image

from pipelines.jobs.events import JobProgress
from pipelines.jobs.queue import JobControl
from pipelines.types import Architecture

log = logging.getLogger(__name__)

PREVIEW_TABLE = Path(__file__).parent.parent / "tables" / "latent_preview.yaml"

PreviewFn = Callable[[torch.Tensor], Image.Image]
PREVIEW_COST_RATIO = 5.0  # previews wait at least this many times what the last one took


@functools.lru_cache(maxsize=None)
def _preview_factors(family: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    table = yaml.safe_load(PREVIEW_TABLE.read_text(encoding="utf-8"))
    entry = table.get(family)
    if entry is None:
        return None
    return torch.tensor(entry["factors"], dtype=torch.float32), torch.tensor(entry["bias"], dtype=torch.float32)


def latent_preview(architecture: Architecture) -> PreviewFn | None:
    """A cheap latent-to-RGB approximation for this architecture, or None when there is none."""
    family = "sdxl" if architecture in (Architecture.SDXL, Architecture.SDXL_REFINER) else "sd1"
    factors = _preview_factors(family)
    if factors is None:
        return None
    weight, bias = factors

    def to_image(latents: torch.Tensor) -> Image.Image:
        sample = latents[0].detach().to("cpu", torch.float32)
        if sample.shape[0] != weight.shape[0]:
            raise ValueError("latent channels do not match the preview table")
        rgb = torch.einsum("chw,cr->hwr", sample, weight) + bias
        rgb = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        return Image.fromarray(rgb, "RGB")

    return to_image


class StepTimer:
    """Seconds per step over the whole job, so the ETA covers the images still to come."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._steps = 0
        self._seconds = 0.0
        self._last: float | None = None

    def begin_image(self) -> None:
        self._last = self._clock()

    def tick(self) -> None:
        now = self._clock()
        if self._last is not None:
            self._seconds += now - self._last
            self._steps += 1
        self._last = now

    def eta(self, steps_left: int) -> float | None:
        if not self._steps:
            return None
        return steps_left * self._seconds / self._steps


class StepCallback:
    """One per image; pass as `callback_on_step_end` with tensor inputs ["latents"]."""

    def __init__(
        self,
        control: JobControl,
        timer: StepTimer,
        image_index: int,
        image_count: int,
        total_steps: int,
        preview: PreviewFn | None = None,
        preview_interval: float = 0.25,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.control = control
        self.timer = timer
        self.image_index = image_index
        self.image_count = image_count
        self.total_steps = total_steps
        self.preview = preview
        self.preview_interval = preview_interval  # seconds: previews faster than a screen can show are waste
        self._clock = clock
        self._last_preview = -float("inf")
        self._gap = preview_interval
        self.steps_done = 0
        self.unwatched: PreviewFn | None = None  # what previews are made with while nobody watches (set by the manager)
        self.started_at: float | None = None  # when the first step began, and the last one ended (step times)
        self.last_step_at: float | None = None

    def start(self) -> None:
        """Before the first step: a stop or skip asked for while loading takes effect now."""
        self.control.check()
        self.timer.begin_image()
        self.started_at = self._clock()
        self._emit(None)

    def __call__(self, pipe: Any, step_index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        self.timer.tick()
        self.steps_done = step_index + 1
        image = None
        latents = tensors.get("latents")
        now = self.last_step_at = self._clock()
        # nobody watching (an API job without progress polls): the free approximation instead of the decoder
        watched = getattr(self.control, "wants_previews", True)
        preview = self.preview if watched or self.unwatched is None else self.unwatched
        if (
            preview is not None
            and latents is not None
            and self.steps_done < self.total_steps
            and now - self._last_preview >= self._gap
        ):
            self._last_preview = now
            try:
                image = preview(latents)
            except Exception:  # a preview must never break a generation: previews end for this image, said in the log
                log.warning("live previews turned off for this image: the preview decoder failed", exc_info=True)
                self.preview = self.unwatched = None
            # a costly preview (a tiny decoder on a slow CPU) is made less often: at most ~1/6 of the time
            self._gap = max(self.preview_interval, PREVIEW_COST_RATIO * (self._clock() - now))
        self._emit(image)
        self.control.check()
        return {}

    def _emit(self, preview: Image.Image | None) -> None:
        steps_left = (self.total_steps - self.steps_done) + (self.image_count - self.image_index - 1) * self.total_steps
        self.control.emit(
            JobProgress(
                self.control.job_id,
                step=self.steps_done,
                total_steps=self.total_steps,
                image_index=self.image_index,
                image_count=self.image_count,
                eta_seconds=self.timer.eta(steps_left),
                preview=preview,
            )
        )
