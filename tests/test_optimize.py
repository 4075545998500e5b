"""Loaded models are frozen and get the CPU's fast memory layout; the layout changes the picture by at most a rounding."""

from __future__ import annotations

import diffusers
import numpy as np
import torch

from pipelines.devices import choose
from pipelines.loading.optimize import optimize_for_device
from tests.support.compare import assert_images_match
from tests.support.op_trace import aten_ops, first_difference
from tests.support.tiny_models import tiny_sd15_pipeline


def image(pipe) -> np.ndarray:
    plain = type(pipe)(**{**pipe.components, "scheduler": diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)})
    plain.set_progress_bar_config(disable=True)
    out = plain(
        "a red fox",
        negative_prompt="blurry",
        num_inference_steps=4,
        width=64,
        height=64,
        generator=torch.Generator().manual_seed(3),
    )
    return np.asarray(out.images[0])


def test_cpu_models_are_channels_last_and_the_picture_is_the_same_within_a_rounding():
    pipe = tiny_sd15_pipeline(seed=0)
    before = image(pipe)
    assert optimize_for_device(pipe, choose("cpu", "fp32")) == [
        "unet: channels-last",
        "vae: channels-last, 3 upsamplers as transposed convolutions",
    ]
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    after = image(pipe)
    assert_images_match(
        after, before, why="oneDNN runs other convolution kernels on channels-last tensors; the upsamplers' taps are summed"
    )


def test_the_engine_loads_models_channels_last(tiny_models_dir, tmp_path):
    from pipelines.config import AppConfig
    from pipelines.services import build_services
    from pipelines.types import GenerationRequest

    services = build_services(AppConfig(models_dir=tiny_models_dir, output_dir=tmp_path, device="cpu", precision="fp32"))
    try:
        services.queue.wait(
            services.queue.submit(GenerationRequest(model="tiny-sd15", prompt="x", width=64, height=64, steps=1)), 60
        )
        [loaded] = services.cache.loaded()
        assert loaded.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        decode = aten_ops(lambda: loaded.pipe.vae.decode(torch.randn(1, 4, 8, 8)))
        transposed = [op for op in decode if op[0] == "aten.convolution.default" and "True" in op[1]]
        assert len(transposed) == 3  # the decoder's upsamplers (pipelines/speed/upsampling.py)
    finally:
        services.close()


def test_unaligned_weights_move_to_aligned_memory_with_their_values_and_ties():
    from pipelines.loading.optimize import ALIGNMENT, align_weights

    base = torch.randn(4096)
    layer, other = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)
    layer.weight.data = base[3:259].view(16, 16)  # 12 bytes into an allocation, like a memory-mapped file
    other.weight = layer.weight  # a tied weight stays tied
    model = torch.nn.Sequential(layer, other)
    expected = layer.weight.detach().clone()
    assert layer.weight.data_ptr() % ALIGNMENT
    assert align_weights(model) == 1
    assert layer.weight.data_ptr() % ALIGNMENT == 0 and torch.equal(layer.weight, expected)
    assert other.weight is layer.weight
    assert align_weights(model) == 0  # nothing left to move


def test_a_checkpoint_file_loads_into_aligned_memory_and_gives_the_in_memory_models_bits(
    tiny_models_dir, tmp_path, tiny_sdxl_reference
):
    """A memory-mapped safetensors file puts tensors at its own offsets; loaded, they are aligned like any model's."""
    from pipelines.config import AppConfig
    from pipelines.loading.optimize import ALIGNMENT
    from pipelines.services import build_services
    from pipelines.types import GenerationRequest

    services = build_services(AppConfig(models_dir=tiny_models_dir, output_dir=tmp_path, device="cpu", precision="fp32"))
    try:
        services.queue.wait(
            services.queue.submit(GenerationRequest(model="tiny-sdxl", prompt="x", width=64, height=64, steps=1)), 60
        )
        [loaded] = services.cache.loaded()
        pipe = loaded.pipe
        for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
            assert all(p.data_ptr() % ALIGNMENT == 0 for p in getattr(pipe, name).parameters()), name
        # the same call on the loaded pipeline and on the in-memory one it was written from: the same latents
        latents = []
        for source in (pipe, tiny_sdxl_reference):
            euler = diffusers.EulerDiscreteScheduler.from_config(tiny_sdxl_reference.scheduler.config)
            plain = type(source)(**{**source.components, "scheduler": euler})
            plain.set_progress_bar_config(disable=True)
            latents.append(
                plain(
                    "a red boat",
                    num_inference_steps=3,
                    guidance_scale=1.0,
                    output_type="latent",
                    width=64,
                    height=64,
                    generator=torch.Generator().manual_seed(5),
                ).images
            )
        assert torch.equal(latents[0], latents[1])
    finally:
        services.close()


def test_a_loaded_sdxl_model_is_frozen_and_runs_the_in_memory_models_kernels(tiny_models_dir, tmp_path, tiny_sdxl_reference):
    """Why its pictures equal plain diffusers' on every CPU: the same aten ops on the same layouts, op for op.

    diffusers loads weights that require grad, and torch picks a linear layer's kernel by that flag: on SDXL's
    permuted (strided) activations a loaded model ran `mm` on a copy where the in-memory model ran `bmm`,
    which rounds differently on AVX-512 and AMX CPUs. Loading freezes the weights, so the kernels are the same.
    """
    from pipelines.config import AppConfig
    from pipelines.services import build_services
    from pipelines.types import GenerationRequest

    services = build_services(AppConfig(models_dir=tiny_models_dir, output_dir=tmp_path, device="cpu", precision="fp32"))
    try:
        services.queue.wait(
            services.queue.submit(GenerationRequest(model="tiny-sdxl", prompt="x", width=64, height=64, steps=1)), 60
        )
        [loaded] = services.cache.loaded()
        for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
            assert not any(p.requires_grad for p in getattr(loaded.pipe, name).parameters()), name
        gen = torch.Generator().manual_seed(0)
        sample, text = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 77, 96, generator=gen)
        added = {"text_embeds": torch.randn(2, 64, generator=gen), "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}
        traces = [
            (
                aten_ops(lambda pipe=pipe: pipe.unet(sample, 500, encoder_hidden_states=text, added_cond_kwargs=added)),
                aten_ops(lambda pipe=pipe: pipe.vae.decode(sample[:1])),
            )
            for pipe in (loaded.pipe, tiny_sdxl_reference)
        ]
        (unet, vae), (unet_ref, vae_ref) = traces
        assert unet == unet_ref, first_difference(unet, unet_ref)
        assert vae == vae_ref, first_difference(vae, vae_ref)
    finally:
        services.close()
