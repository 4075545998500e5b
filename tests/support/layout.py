"""Reference pipelines laid out in memory as the app lays out the models it loads."""

from __future__ import annotations


def laid_out_as_loaded(pipe):
    """Give a reference pipeline the memory layout the app gives loaded models on the CPU
    (pipelines/optimize.py: channels-last convolutions), so that comparisons can be bit for bit.
    The values are the same; only oneDNN's kernel choice follows the layout (test_optimize.py shows the
    effect against the default layout: at most one level in a handful of pixels)."""
    from pipelines.devices import choose
    from pipelines.loading.optimize import optimize_for_device

    optimize_for_device(pipe, choose("cpu", "fp32"))
    return pipe
