"""Loaded models get the CPU's fast memory layout, and it changes the picture by at most a rounding."""

from __future__ import annotations

import diffusers
import numpy as np
import torch

from pipelines.devices import choose
from pipelines.optimize import optimize_for_device
from tests.support.tiny_models import tiny_sd15_pipeline


def image(pipe) -> np.ndarray:
    plain = type(pipe)(**{**pipe.components, "scheduler": diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)})
    plain.set_progress_bar_config(disable=True)
    out = plain("a red fox", negative_prompt="blurry", num_inference_steps=4, width=64, height=64,
                generator=torch.Generator().manual_seed(3))
    return np.asarray(out.images[0]).astype(int)


def test_cpu_models_are_channels_last_and_the_picture_is_the_same_within_a_rounding():
    pipe = tiny_sd15_pipeline(seed=0)
    before = image(pipe)
    assert optimize_for_device(pipe, choose("cpu", "fp32")) == ["unet: channels-last", "vae: channels-last"]
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    after = image(pipe)
    assert np.abs(after - before).max() <= 1
    assert (after != before).mean() < 0.01


def test_the_engine_loads_models_channels_last(tiny_models_dir, tmp_path):
    from pipelines.config import AppConfig
    from pipelines.services import build_services
    from pipelines.types import GenerationRequest

    services = build_services(AppConfig(models_dir=tiny_models_dir, output_dir=tmp_path, device="cpu", precision="fp32"))
    try:
        services.queue.wait(services.queue.submit(GenerationRequest(model="tiny-sd15", prompt="x", width=64, height=64, steps=1)), 60)
        [loaded] = services.cache.loaded()
        assert loaded.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    finally:
        services.close()
