"""One live app for the API tests: tiny SD1.5 and SDXL checkpoints and a LoRA, served on loopback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from tests.support.live_app import LiveApp, link_checkpoints, start_live_app, write_kohya_lora

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

LORA_METADATA = {"ss_output_name": "paper-cut", "ss_network_dim": "4", "ss_tag_frequency": json.dumps({"img": {"paper": 3}})}


@pytest.fixture(scope="session")
def api_models_dir(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api-models")
    link_checkpoints(tiny_models_dir, root, ("tiny-sd15", "tiny-sdxl"))
    write_kohya_lora(root / "loras" / "styles" / "papercut_v1.safetensors", LORA_METADATA)
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


# The page's form as gradio_client sees it: component labels -> values.
UI_FORM = {
    "Prompt": "", "Model": "tiny-sd15", "Negative prompt": "", "Width": 64, "Height": 64, "Steps": 3,
    "Guidance (CFG)": 7.0, "Sampler": "Euler", "Schedule type": "Automatic", "Seed (-1 = random)": 1, "Images": 1,
    "Format": "png",
}


class PageClient:
    """gradio_client on the page's own `generate` endpoint: what a click on Generate does, over HTTP.

    The endpoint's inputs are a set of components, so their order is read from the app's API info and
    values are passed by the labels the page shows.
    """

    def __init__(self, url: str, download_dir: Path):
        from gradio_client import Client

        self.client = Client(url + "/", verbose=False, analytics_enabled=False, download_files=str(download_dir))
        info = self.client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]
        self.names = {p["label"]: p["parameter_name"] for p in info["parameters"]}

    def _kwargs(self, form: dict) -> dict:
        values = {**UI_FORM, **form}
        return {self.names[label]: value for label, value in values.items()}

    def generate(self, **form):
        """(status html, gallery) when the job has ended."""
        status, _preview, gallery = self.client.predict(**self._kwargs(form), api_name="/generate")
        return status, gallery

    def submit(self, **form):
        return self.client.submit(**self._kwargs(form), api_name="/generate")

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="session")
def page(live: LiveApp, tmp_path_factory: pytest.TempPathFactory):
    client = PageClient(live.url, tmp_path_factory.mktemp("gradio-downloads"))
    yield client
    client.close()
