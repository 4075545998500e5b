"""One live app for the API tests: tiny SD1.5 and SDXL checkpoints and a LoRA, served on loopback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import save_file

from tests.support.ckpt_export import save_vae_file
from tests.support.expansion_model import add_expansion_models
from tests.support.live_app import LiveApp, link_checkpoints, start_live_app, write_kohya_lora
from tests.support.tiny_models import tiny_vae
from tests.support.upscaler_files import write_esrgan

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

VAE_SEED = 11  # not the seed of any tiny model's own VAE
LORA_METADATA = {"ss_output_name": "paper-cut", "ss_network_dim": "4", "ss_tag_frequency": json.dumps({"img": {"paper": 3}})}


@pytest.fixture(scope="session")
def api_models_dir(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api-models")
    link_checkpoints(tiny_models_dir, root, ("tiny-sd15", "tiny-sdxl"))
    write_kohya_lora(root / "loras" / "styles" / "papercut_v1.safetensors", LORA_METADATA)
    save_vae_file(tiny_vae(VAE_SEED), root / "vae" / "tiny-vae.safetensors")
    (root / "embeddings").mkdir()
    save_file({"emb_params": torch.randn(2, 32)}, str(root / "embeddings" / "tiemb.safetensors"))  # fits the tiny SD1.5
    save_file({"clip_l": torch.randn(3, 32), "clip_g": torch.randn(3, 64)}, str(root / "embeddings" / "xlemb.safetensors"))
    write_esrgan(root / "ESRGAN" / "4x-Tiny.pth", scale=4, seed=21)  # A1111's upscaler folder
    add_expansion_models(root)  # prompt_expansion/free-expansion and tiny-expansion
    return root


@pytest.fixture(scope="session")
def live(api_models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    app = start_live_app(api_models_dir, tmp_path_factory.mktemp("api-outputs"))
    yield app
    app.close()


@pytest.fixture
def client(live: LiveApp):
    with httpx.Client(base_url=live.url, timeout=120) as c:
        yield c


# What the page's Generate does, as a gradio_client user calls it: the named `/generate` endpoint.
PAGE_DEFAULTS = {
    "model": "tiny-sd15",
    "styles": [],
    "width": 64,
    "height": 64,
    "steps": 3,
    "cfg_scale": 7.0,
    "sampler": "Euler",
    "scheduler": "Automatic",
    "seed": 1,
    "image_count": 1,
    "output_format": "png",
    "prompt_expansion": "",  # the launch preset asks for Fooocus V2, and a model is installed here
}


class PageClient:
    """gradio_client on the page's `/generate` endpoint, over HTTP."""

    def __init__(self, url: str, download_dir: Path):
        from gradio_client import Client

        self.client = Client(url + "/", verbose=False, analytics_enabled=False, download_files=str(download_dir))

    def generate(self, **fields) -> tuple[dict, list[str]]:
        """(answer, image files) when the job has ended."""
        answer, files = self.client.predict(**{**PAGE_DEFAULTS, **fields}, api_name="/generate")
        return json.loads(answer), files

    def submit(self, **fields):
        return self.client.submit(**{**PAGE_DEFAULTS, **fields}, api_name="/generate")

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="session")
def page(live: LiveApp, tmp_path_factory: pytest.TempPathFactory):
    client = PageClient(live.url, tmp_path_factory.mktemp("gradio-downloads"))
    yield client
    client.close()
