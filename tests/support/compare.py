"""Comparing pictures: exactly where equality holds by construction, within a stated tolerance where not.

The rule (tests/conftest.py says it at the top): when the engine and the reference run the same operations
on the same tensors, with the same layouts and flags, the result is equal on every CPU, and the test says
so with `assert_images_equal`. Only when two implementations legitimately compute the same math in
another order (a LoRA fused by diffusers vs patched by us, NCHW vs channels-last convolutions) does a test
use `assert_images_match`, and it must say why. Its default, at most one 8-bit level in under 1% of the
values, is what one float32 rounding difference in a few weights or activations leaves after the VAE; a
wrong weight, prompt, seed or sampler moves most pixels by many levels.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _values(image: Any) -> np.ndarray:
    """A PIL image or array as an int array (so differences do not wrap around at 0 and 255)."""
    return np.asarray(image).astype(np.int16)


def difference(actual: Any, expected: Any) -> tuple[int, int, int]:
    """(largest difference in levels, how many values differ, how many values there are)."""
    a, b = _values(actual), _values(expected)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    diff = np.abs(a - b)
    return int(diff.max(initial=0)), int(np.count_nonzero(diff)), diff.size


def assert_images_equal(actual: Any, expected: Any) -> None:
    """Bit for bit: the engine and the reference run the same kernels on the same inputs."""
    largest, count, size = difference(actual, expected)
    assert count == 0, (
        f"{count} of {size} values differ, by up to {largest} levels; this comparison is exact by construction, "
        "so look for what the two sides do differently (tests/conftest.py)"
    )


def assert_images_match(actual: Any, expected: Any, *, why: str, max_level: int = 1, max_fraction: float = 0.01) -> None:
    """Equal within `max_level` levels, on at most `max_fraction` of the values; `why` says what rounds differently."""
    assert why, "say why the two sides may round differently"
    largest, count, size = difference(actual, expected)
    assert largest <= max_level and count <= max_fraction * size, (
        f"{count} of {size} values differ, by up to {largest} levels (allowed: {max_level} levels on "
        f"{max_fraction:.1%}, because {why})"
    )
