"""CPU Turbo's approximations for one image: step caching, token merging and the tiny final decoder (TAESD).

Each is a field of the request (`step_cache`, `token_merging`, `fast_decode`), set by the CPU Turbo mode or by hand in
Advanced, and recorded in the image's metadata, so an image made with them is made again the same way.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from pipelines.speed.runner import UNetRunner
from pipelines.speed.step_cache import StepCache
from pipelines.speed.token_merging import TokenMerging


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


@contextlib.contextmanager
def token_merging(pipe: Any, ratio: float, seed: int) -> Iterator[TokenMerging | None]:
    """Merge `ratio` of the highest-resolution tokens before self-attention while the block runs (<= 0: off).

    The UNet runs uncompiled meanwhile: a compiled graph was traced without the hooks, and would recompile.
    """
    if ratio <= 0:
        yield None
        return
    runner = UNetRunner.attach(pipe.unet)
    merging = TokenMerging(runner.unet, ratio, seed)
    runner.eager_only = True
    try:
        yield merging
    finally:
        merging.remove()
        runner.eager_only = False
