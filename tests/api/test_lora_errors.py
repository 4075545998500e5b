"""A LoRA that cannot be used is the request's fault: the API answers 422 naming it, the page shows why."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.support.published_lora_keys import FORMATS_BY_NAME, write_lora
from ui.api import PREFIX

SMALL = {"width": 64, "height": 64}


@pytest.fixture
def deep_te_lora(live, api_models_dir, tmp_path):
    """`loras/deep-te.safetensors`: a kohya SD1 LoRA whose UNet layers fit the tiny SD1.5 and whose text encoder
    goes 9 layers deeper than the tiny one (a LoRA for a 12-layer CLIP). Removed again afterwards."""
    source, written = write_lora(FORMATS_BY_NAME["kohya-sd1"], tmp_path)
    tensors = load_file(str(source))
    for layer in range(3, 12):
        stem = f"lora_te_text_model_encoder_layers_{layer}_mlp_fc1"
        tensors[f"{stem}.lora_down.weight"], tensors[f"{stem}.lora_up.weight"] = torch.ones(4, 32), torch.ones(64, 4)
    path = api_models_dir / "loras" / "deep-te.safetensors"
    save_file(tensors, str(path))
    live.services.registry.refresh()
    try:
        yield written
    finally:
        path.unlink()
        live.services.registry.refresh()


def test_a_partly_fitting_lora_is_a_422_naming_it_and_the_part_that_does_not_fit(client, page, live, deep_te_lora):
    unet = sum(1 for component, _ in deep_te_lora if component == "unet")
    text = len(deep_te_lora) - unet
    answer = client.post(f"{PREFIX}/txt2img", json={"prompt": "a fox <lora:deep-te:0.7>", "steps": 1, **SMALL})
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "prompt"]  # where an A1111 client put the LoRA
    assert error["msg"].startswith(
        f"prompt: deep-te.safetensors does not fit the SD 1.x model tiny-sd15: 9 of its {len(deep_te_lora) + 9} layers"
    )
    assert f"UNet: all {unet} found; text encoder: 9 of {text + 9} not found" in error["msg"]
    # the page shows the same message as the job's error
    failed, files = page.generate(prompt="a fox", loras=[{"name": "deep-te", "weight": 0.7}])
    assert (failed["status"], files) == ("failed", [])
    assert failed["error"] == error["msg"].removeprefix("prompt: ")


def test_a_lora_for_another_model_shape_is_a_422_too(client):
    """papercut_v1 is written for full-size SD 1.5: its names fit the tiny model, its shapes do not."""
    answer = client.post(f"{PREFIX}/txt2img", json={"prompt": "a fox <lora:papercut_v1:0.5>", "steps": 1, **SMALL})
    assert answer.status_code == 422, answer.text
    assert "papercut_v1.safetensors does not fit the model tiny-sd15" in answer.json()["detail"][0]["msg"]
