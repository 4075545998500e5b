"""CPU Turbo's approximations for one image: step caching and the tiny final decoder (TAESD).

Each is a field of the request (`step_cache`, `fast_decode`), set by the CPU Turbo mode or by hand in
Advanced, and recorded in the image's metadata, so an image made with them is made again the same way.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from pipelines.speed.runner import UNetRunner
from pipelines.speed.step_cache import StepCache


@contextlib.contextmanager
def step_caching(pipe: Any, interval: int) -> Iterator[StepCache | None]:
    """Reuse the UNet's deep features on all but every `interval`-th call while the block runs (<= 1: off)."""
    if interval <= 1:
        yield None
        return
    runner = UNetRunner.attach(pipe.unet)
    cache = StepCache(interval)
    runner.cache = cache
    try:
        yield cache
    finally:
        runner.cache = None
