"""webuiapi, the Python client written for AUTOMATIC1111's API, used unchanged against Easel.

It sends A1111's full payload (hires-fix fields, eta, s_noise...) and reads the answers the way A1111
clients do, so it catches shape mismatches that hand-written requests would not.
"""

from __future__ import annotations

import threading
from urllib.parse import urlparse

import numpy as np
import pytest
import webuiapi

from pipelines.outputs.reading import read_metadata
from pipelines.types import JobState


@pytest.fixture(scope="module")
def a1111(live):
    port = urlparse(live.url).port
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler", scheduler="automatic", steps=2)


def test_listings_through_the_client(a1111, live):
    titles = a1111.util_get_model_names()
    assert [t.split(".safetensors")[0] for t in titles] == ["tiny-sd15", "tiny-sdxl"]
    assert a1111.util_get_sampler_names() == sorted(live.services.samplers.samplers)
    assert "karras" in a1111.util_get_scheduler_names()
    assert [lora["name"] for lora in a1111.get_loras()] == ["papercut_v1"]
    assert a1111.get_memory()["ram"]["total"] > 0
    assert isinstance(a1111.get_prompt_styles(), list)
    a1111.refresh_checkpoints()
    a1111.util_wait_for_ready(check_interval=0.1)  # returns at once when nothing runs


def test_txt2img_and_png_info_through_the_client(a1111, live):
    result = a1111.txt2img(
        prompt="a harbour at night", negative_prompt="text", seed=12, width=64, height=64, cfg_scale=5, batch_size=2
    )
    assert len(result.images) == 2 and result.image.size == (64, 64)
    assert result.info["all_seeds"] == [12, 13] and result.info["sampler_name"] == "Euler"
    assert result.info["ignored_fields"] == []  # the client's default payload asks for nothing Easel lacks
    assert result.parameters["steps"] == 2 and result.parameters["negative_prompt"] == "text"
    # the client re-sends an image with its text chunks: png-info reads the infotext back
    info = a1111.png_info(result.image)
    assert info.info == result.info["infotexts"][0]
    # image i of a batch is what a single request with seed + i gives
    again = a1111.txt2img(prompt="a harbour at night", negative_prompt="text", seed=13, width=64, height=64, cfg_scale=5)
    assert np.array_equal(np.asarray(again.image.convert("RGB")), np.asarray(result.images[1].convert("RGB")))
    assert read_metadata(again.image).params["Seed"] == 13


def test_switch_model_progress_and_interrupt_through_the_client(a1111, live):
    try:
        a1111.util_set_model("tiny-sdxl")
        assert a1111.util_get_current_model().startswith("tiny-sdxl.safetensors")
        done = {}
        call = threading.Thread(
            target=lambda: done.setdefault("r", a1111.txt2img(prompt="long", steps=150, width=64, height=64, batch_size=4))
        )
        call.start()
        for _ in range(1200):
            progress = a1111.get_progress()
            if progress["state"]["sampling_step"] > 0:
                break
            threading.Event().wait(0.05)
        assert progress["state"]["job_count"] == 4 and progress["state"]["sampling_steps"] == 150
        a1111.interrupt()
        call.join(120)
        result = done["r"]
        assert result.info["interrupted"] is True and result.info["sd_model_name"] == "tiny-sdxl"
        assert live.services.queue.status(result.info["job_id"]).state is JobState.CANCELLED
    finally:
        a1111.util_set_model("tiny-sd15")
    assert a1111.util_get_current_model().startswith("tiny-sd15.safetensors")
