"""Hub ids: which files a download takes, a model already in the HF cache loads offline, and offline or
unreachable hubs give a clear message instead of a traceback (the worker goes on)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from pipelines.config import AppConfig
from pipelines.errors import HubDownloadError
from pipelines.loading import hub
from pipelines.services import build_services
from pipelines.types import GenerationRequest, JobState

SDXL_TURBO_FILES = [
    "README.md",
    "model_index.json",
    "sd_xl_turbo_1.0.safetensors",
    "sd_xl_turbo_1.0_fp16.safetensors",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "text_encoder/model.safetensors",
    "text_encoder_2/config.json",
    "text_encoder_2/model.fp16.safetensors",
    "text_encoder_2/model.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/vocab.json",
    "tokenizer_2/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.bin",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "vae_decoder/model.onnx",
    "text_encoder/flax_model.msgpack",
]


def test_a_download_takes_configs_and_one_fp16_copy_of_each_weight():
    files, variant = hub.choose_files(SDXL_TURBO_FILES)
    assert variant == "fp16"
    assert "model_index.json" in files and "scheduler/scheduler_config.json" in files and "tokenizer/vocab.json" in files
    weights = sorted(f for f in files if f.endswith(".safetensors"))
    assert weights == [
        "text_encoder/model.fp16.safetensors",
        "text_encoder_2/model.fp16.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
    ]
    assert not any(f.endswith((".bin", ".onnx", ".msgpack")) or "/" not in f and f != "model_index.json" for f in files)


def test_without_fp16_files_the_full_weights_are_taken():
    files, variant = hub.choose_files(
        ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin"]
    )
    assert variant is None and files == ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"]


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


def put_in_hf_cache(cache, repo_id: str, folder) -> None:
    """Lay a diffusers folder out as huggingface_hub's cache keeps a downloaded snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_a_hub_model_already_downloaded_loads_offline(tmp_path, hf_cache, tiny_sd15_diffusers, no_network):
    put_in_hf_cache(hf_cache, "someone/tiny-sd15", tiny_sd15_diffusers)
    services = build_services(
        AppConfig(models_dir=tmp_path / "models", output_dir=tmp_path / "out", device="cpu", precision="fp32")
    )
    try:
        request = GenerationRequest(model="someone/tiny-sd15", prompt="a boat", width=64, height=64, steps=2, seed=4)
        info = services.queue.wait(services.queue.submit(request), timeout=120)
        assert info.state is JobState.FINISHED, info.error
        [item] = info.result.images
        assert item.params.model == "someone/tiny-sd15" and len(item.params.model_hash) == 10
        # the same weights from the models folder give the same picture
        local = tmp_path / "models" / "checkpoints" / "tiny-sd15-diffusers"
        shutil.copytree(tiny_sd15_diffusers, local)
        services.registry.refresh()
        again = services.queue.wait(services.queue.submit(request.replace(model="tiny-sd15-diffusers")), timeout=120)
        with Image.open(item.path) as a, Image.open(again.result.images[0].path) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))
    finally:
        services.close()


def test_offline_hub_model_fails_with_a_clear_message_and_the_worker_goes_on(tmp_path, hf_cache, tiny_sd15_file):
    models = tmp_path / "models"
    (models / "checkpoints").mkdir(parents=True)
    services = build_services(
        AppConfig(
            models_dir=models, output_dir=tmp_path / "out", device="cpu", precision="fp32", hub_model="stabilityai/sdxl-turbo"
        )
    )
    try:
        # no checkpoint installed: the default is the hub model, and offline its job says so
        assert services.registry.default_checkpoint().hub_id == "stabilityai/sdxl-turbo"
        info = services.queue.wait(services.queue.submit(GenerationRequest(prompt="x", width=64, height=64, steps=1)), timeout=60)
        assert info.state is JobState.FAILED
        assert "stabilityai/sdxl-turbo is not downloaded yet" in info.error and "HF_HUB_OFFLINE" in info.error
        assert "Traceback" not in info.error
        shutil.copy(tiny_sd15_file, models / "checkpoints" / "mine.safetensors")
        shutil.copy(tiny_sd15_file.with_name("tiny-sd15.config.json"), models / "checkpoints" / "mine.config.json")
        services.registry.refresh()
        after = services.queue.wait(
            services.queue.submit(GenerationRequest(prompt="x", width=64, height=64, steps=1)), timeout=60
        )
        assert after.state is JobState.FINISHED, after.error
    finally:
        services.close()


def test_an_unreachable_hub_is_a_clear_error(hf_cache, monkeypatch):
    """Online mode, but every connection is refused (a machine without internet)."""
    import socket

    import huggingface_hub.constants as constants

    def refused(*args, **kwargs):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket.socket, "connect", refused)
    monkeypatch.setattr(socket, "create_connection", refused)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(HubDownloadError, match="Could not download someone/model from the Hugging Face hub"):
        hub.download("someone/model", lambda message, fraction=None: None)
