"""Reference pipelines laid out in memory as the app lays out the models it loads."""

from __future__ import annotations


def laid_out_as_loaded(pipe):
    """Give a reference pipeline what the app gives loaded models (pipelines/optimize.py: frozen weights,
    on the CPU channels-last convolutions and aligned memory), so that comparisons can be bit for bit.
    The values are the same; only the kernels torch and oneDNN choose follow the layout and flags
    (test_optimize.py shows the layout's effect against the default: at most one level in a handful of pixels)."""
    from pipelines.devices import choose
    from pipelines.loading.optimize import optimize_for_device

    optimize_for_device(pipe, choose("cpu", "fp32"))
    return pipe
