"""The step callback: ETA arithmetic, preview throttling, stop/skip taking effect at a step."""

from __future__ import annotations

import pytest
import torch

from pipelines.errors import ImageSkipped, JobInterrupted
from pipelines.jobs.events import JobProgress
from pipelines.jobs.progress import StepCallback, StepTimer, latent_preview
from pipelines.types import Architecture, GenerationResult


class Control:
    def __init__(self):
        self.job_id = "j"
        self.result = GenerationResult("j")
        self.events: list[JobProgress] = []
        self.stop = self.skip = False

    def emit(self, event):
        self.events.append(event)

    def check(self):
        if self.stop:
            raise JobInterrupted("j")
        if self.skip:
            self.skip = False
            raise ImageSkipped("j")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_eta_counts_the_images_still_to_come():
    clock, control = Clock(), Control()
    timer = StepTimer(clock)
    cb = StepCallback(control, timer, image_index=0, image_count=3, total_steps=4, clock=clock)
    cb.start()
    for step in range(4):
        clock.now += 2.0  # two seconds a step
        cb(None, step, None, {})
    etas = [e.eta_seconds for e in control.events]
    # after step 1: 3 steps of this image and 8 of the next two, at 2 s each
    assert etas == [None, 22.0, 20.0, 18.0, 16.0]


def test_previews_are_throttled_by_time_and_never_on_the_last_step():
    clock, control = Clock(), Control()
    cb = StepCallback(control, StepTimer(clock), 0, 1, 10, latent_preview(Architecture.SD1), preview_interval=1.0, clock=clock)
    cb.start()
    latents = torch.randn(1, 4, 8, 8)
    for step in range(10):
        clock.now += 0.4
        cb(None, step, None, {"latents": latents})
    with_preview = [e.step for e in control.events if e.preview is not None]
    assert with_preview == [1, 4, 7]  # at t=0.4, 1.6, 2.8; step 10 is the final image, not a preview
    assert control.events[2].preview is None


def test_preview_colours_follow_the_latents():
    to_rgb = latent_preview(Architecture.SD1)
    dark = to_rgb(torch.full((1, 4, 2, 2), 0.0)).getpixel((0, 0))
    assert dark == (128, 128, 128)
    channel0 = torch.zeros(1, 4, 2, 2)
    channel0[:, 0] = 1.0
    r, g, b = to_rgb(channel0).getpixel((0, 0))
    assert r > g > 128 and b > 128  # channel 0 is mostly luminance with a warm tint
    xl = latent_preview(Architecture.SDXL)(torch.zeros(1, 4, 2, 2)).getpixel((0, 0))
    assert xl != (128, 128, 128)  # SDXL's table has an offset


def test_stop_and_skip_raise_at_the_next_step():
    control = Control()
    cb = StepCallback(control, StepTimer(), 0, 1, 5)
    cb.start()
    control.skip = True
    with pytest.raises(ImageSkipped):
        cb(None, 0, None, {})
    cb(None, 1, None, {})  # skip is consumed once
    control.stop = True
    with pytest.raises(JobInterrupted):
        cb(None, 2, None, {})
    with pytest.raises(JobInterrupted):
        StepCallback(control, StepTimer(), 1, 2, 5).start()  # a stop asked for during loading
