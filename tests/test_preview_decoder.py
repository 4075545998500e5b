"""The tiny preview decoder (TAESD): found where users put it, its original and diffusers layouts both
load, its previews equal AutoencoderTiny's own decode, and without one the approximation is used."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny
from safetensors.torch import save_file

from pipelines.config import AppConfig
from pipelines.jobs.events import JobProgress
from pipelines.jobs.previews import PreviewDecoders, decoder_state, load_tiny_decoder
from pipelines.loading.optimize import optimize_module
from pipelines.services import build_services
from pipelines.types import Architecture, GenerationRequest, GenerationResult


def random_taesd(seed: int) -> AutoencoderTiny:
    torch.manual_seed(seed)
    model = AutoencoderTiny().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model


def write_original_decoder(model: AutoencoderTiny, path) -> None:
    """The decoder as madebyollin/taesd ships it: one Sequential whose layer 0 is the clamp."""
    tensors = {}
    for key, value in model.state_dict().items():
        if key.startswith("decoder.layers."):
            index, _, rest = key[len("decoder.layers.") :].partition(".")
            tensors[f"{int(index) + 1}.{rest}"] = value.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))


def expected_image(model: AutoencoderTiny, latents: torch.Tensor) -> np.ndarray:
    """AutoencoderTiny's own decode, laid out as the app lays out a loaded decoder (frozen, channels-last on
    the CPU: other oneDNN kernels, a level apart in a few pixels), so that the comparison can be bit for bit."""
    model = copy.deepcopy(model)
    optimize_module("vae", model, torch.device("cpu"))
    with torch.no_grad():
        sample = model.decode(latents).sample[0]
    return ((sample.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("layout", ["original", "diffusers-file", "diffusers-folder"])
def test_every_layout_decodes_like_autoencoder_tiny(tmp_path, layout):
    model = random_taesd(1)
    root = tmp_path / "models" / "vae_approx"
    if layout == "original":
        write_original_decoder(model, root / "taesd_decoder.safetensors")
    elif layout == "diffusers-file":
        root.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "taesd.safetensors"))
    else:
        model.save_pretrained(str(root / "taesd"))
    decoders = PreviewDecoders(tmp_path / "models")
    assert list(decoders.installed()) == [Architecture.SD1]
    preview = decoders.for_model(Architecture.SD1, torch.device("cpu"), torch.float32)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    image = preview(latents)
    assert image.size == (64, 64)
    assert np.array_equal(np.asarray(image), expected_image(model, latents))


def test_the_name_tells_sd_from_sdxl_and_the_approximation_fills_in(tmp_path):
    write_original_decoder(random_taesd(2), tmp_path / "models" / "VAE-approx" / "taesdxl_decoder.safetensors")
    decoders = PreviewDecoders(tmp_path / "models")
    assert list(decoders.installed()) == [Architecture.SDXL]
    latents = torch.randn(1, 4, 8, 8)
    assert decoders.for_model(Architecture.SDXL, torch.device("cpu"), torch.float32)(latents).size == (64, 64)
    assert decoders.for_model(Architecture.SD1, torch.device("cpu"), torch.float32)(latents).size == (8, 8)  # no taesd
    assert PreviewDecoders(tmp_path / "models", "approx").for_model(Architecture.SDXL, torch.device("cpu"), torch.float32)(
        latents
    ).size == (8, 8)
    assert PreviewDecoders(tmp_path / "models", "off").for_model(Architecture.SDXL, torch.device("cpu"), torch.float32) is None
    with pytest.raises(ValueError, match="previews must be one of"):
        PreviewDecoders(tmp_path, "fancy")


def test_a_broken_decoder_file_is_refused_and_previews_fall_back_to_the_approximation(tmp_path):
    with pytest.raises(ValueError, match="unexpected key"):
        decoder_state({"weird.key": torch.zeros(2)})
    partial = tmp_path / "models" / "vae_approx" / "taesd_decoder.safetensors"
    partial.parent.mkdir(parents=True)
    save_file({"1.weight": torch.zeros(64, 4, 3, 3)}, str(partial))  # one layer of a decoder, nothing else
    with pytest.raises(ValueError, match="not a TAESD decoder"):
        load_tiny_decoder(partial)
    preview = PreviewDecoders(tmp_path / "models").for_model(Architecture.SD1, torch.device("cpu"), torch.float32)
    assert preview(torch.zeros(1, 4, 8, 8)).size == (8, 8)


class RecordingControl:
    def __init__(self, request):
        self.job_id, self.request, self.result, self.events = "j", request, GenerationResult("j"), []

    def emit(self, event):
        self.events.append(event)

    def check(self):
        pass


def test_jobs_preview_with_the_installed_decoder(tiny_models_dir, tmp_path, monkeypatch):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models, symlinks=True)
    write_original_decoder(random_taesd(3), models / "vae_approx" / "taesd_decoder.safetensors")
    services = build_services(
        AppConfig(models_dir=models, output_dir=tmp_path / "out", device="cpu", precision="fp32"), start_worker=False
    )
    monkeypatch.setattr(services.manager, "preview_interval", 0.0)
    control = RecordingControl(GenerationRequest(model="tiny-sd15", prompt="x", width=64, height=64, steps=3, seed=1))
    services.manager.run(control)
    previews = [e.preview for e in control.events if isinstance(e, JobProgress) and e.preview is not None]
    assert previews and all(p.size == (64, 64) for p in previews)  # full size, not the 8x8 approximation
    services.close()
