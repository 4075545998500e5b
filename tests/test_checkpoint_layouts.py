"""Single-file checkpoints in the variants A1111/CivitAI publish load with every tensor where it belongs.

The tiny models are written in the LDM layout (ckpt_export.py) and then re-spelled as published files are:
older SD 1.x files without CLIP's `text_model.` level, pruned fp16/bf16 files, and unpruned training
checkpoints with EMA copies (`model_ema.*`, LDM's dotless names), the noise schedule buffers and the trainer's
counters. They go through the app's own loader; the reference is the in-memory model they were written from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import save_file

from pipelines.devices import choose
from pipelines.loading.hashing import HashCache
from pipelines.loading.loader import ModelLoader
from pipelines.loading.probe import probe_file
from pipelines.loading.registry import ModelRegistry
from pipelines.types import Architecture, ModelKind
from tests.support.ckpt_export import SD1_CLIP_PREFIX, SDXL_CLIP_PREFIX, save_ckpt, save_single_file

StateDict = dict[str, torch.Tensor]

# what LDM's DDPM keeps beside the model in every training checkpoint (and many pruned ones)
SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "posterior_variance")


def without_text_model(prefix: str) -> Callable[[StateDict], StateDict]:
    """Older files: `cond_stage_model.transformer.encoder.…` where newer ones say `…transformer.text_model.encoder.…`."""
    root = prefix.removesuffix("text_model.")
    return lambda state: {(root + k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


def cast(dtype: torch.dtype) -> Callable[[StateDict], StateDict]:
    """A pruned half-precision file: every float tensor in `dtype` (CLIP's integer position_ids stay)."""
    return lambda state: {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def unpruned(state: StateDict) -> StateDict:
    """A training checkpoint: EMA copies of the UNet (other values: the file's model weights are the ones to
    use, as A1111 does), named as LDM's LitEma names them (dots removed), its counters, and the schedule."""
    gen = torch.Generator().manual_seed(5)
    ema = {
        "model_ema." + k.removeprefix("model.").replace(".", ""): torch.randn(v.shape, generator=gen)
        for k, v in state.items()
        if k.startswith("model.diffusion_model.")
    }
    schedule = {name: torch.linspace(0.001, 0.999, 1000) for name in SCHEDULE_BUFFERS}
    counters = {"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(470000, dtype=torch.int32)}
    return {**state, **ema, **schedule, **counters}


def safetensors_saver(respell: Callable[[StateDict], StateDict]) -> Callable[[StateDict, Path], None]:
    return lambda state, path: save_file({k: v.contiguous() for k, v in respell(state).items()}, str(path))


def ckpt_saver(respell: Callable[[StateDict], StateDict]) -> Callable[[StateDict, Path], None]:
    return lambda state, path: save_ckpt(respell(state), path)


def training_ckpt(state: StateDict, path: Path) -> None:
    """`{"state_dict": …, "global_step": …, "epoch": …}`, as LDM's trainer (PyTorch Lightning) saves it."""
    torch.save({"state_dict": unpruned(state), "global_step": 470000, "epoch": 6}, str(path))


# file name -> (architecture, saver, dtype the weights were stored in)
VARIANTS = {
    "sd15-no-text-model.safetensors": (Architecture.SD1, safetensors_saver(without_text_model(SD1_CLIP_PREFIX)), torch.float32),
    "sd15-no-text-model.ckpt": (Architecture.SD1, ckpt_saver(without_text_model(SD1_CLIP_PREFIX)), torch.float32),
    "sd15-pruned-fp16.safetensors": (Architecture.SD1, safetensors_saver(cast(torch.float16)), torch.float16),
    "sd15-pruned-bf16.safetensors": (Architecture.SD1, safetensors_saver(cast(torch.bfloat16)), torch.bfloat16),
    "sd15-unpruned-ema.ckpt": (Architecture.SD1, training_ckpt, torch.float32),
    "sdxl-pruned-fp16.safetensors": (Architecture.SDXL, safetensors_saver(cast(torch.float16)), torch.float16),
    "sdxl-no-text-model.safetensors": (Architecture.SDXL, safetensors_saver(without_text_model(SDXL_CLIP_PREFIX)), torch.float32),
}
REFERENCES = {Architecture.SD1: "tiny_sd15_reference", Architecture.SDXL: "tiny_sdxl_reference"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_sd15_reference, tiny_sdxl_reference) -> ModelRegistry:
    root = tmp_path_factory.mktemp("checkpoint-layouts")
    references = {Architecture.SD1: tiny_sd15_reference, Architecture.SDXL: tiny_sdxl_reference}
    for name, (arch, saver, _dtype) in VARIANTS.items():
        save_single_file(references[arch], root / "checkpoints" / name, saver=saver)
    reg = ModelRegistry(root, tmp_path_factory.mktemp("cache"))
    reg.refresh()
    return reg


@pytest.fixture(scope="module")
def loader(tmp_path_factory) -> ModelLoader:
    cache = tmp_path_factory.mktemp("loader-cache")
    return ModelLoader(choose("cpu", "fp32"), cache, HashCache(cache / "hashes.json"))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_published_checkpoint_variant_loads_every_tensor(request, registry, loader, name, no_network):
    arch, _saver, stored = VARIANTS[name]
    record = registry.find(ModelKind.CHECKPOINT, name)
    assert (record.architecture, record.usable) == (arch, True)
    assert probe_file(record.path).architecture is arch
    loaded = loader.load(record)
    reference = request.getfixturevalue(REFERENCES[arch])
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(reference, component, None) is None:
            continue
        ours = getattr(loaded.pipe, component).state_dict()
        theirs = getattr(reference, component).state_dict()
        assert ours.keys() == theirs.keys(), component
        for key, want in theirs.items():
            want = want.to(stored).to(want.dtype) if want.is_floating_point() else want  # what the file could hold
            assert ours[key].device.type != "meta" and torch.equal(ours[key], want), f"{component}.{key}"
