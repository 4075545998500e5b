"""Fooocus's sampling controls, the refiner and prompt expansion over /sdapi/v1/txt2img: off unless asked for,
so an A1111 client gets A1111's image; named as the Fooocus API names them, and listed in /docs."""

from __future__ import annotations

import base64
import json

import numpy as np

from pipelines.outputs.reading import read_metadata
from tests.api.test_txt2img import SMALL, decode, pixels
from ui.api import PREFIX

XL = {"override_settings": {"sd_model_checkpoint": "tiny-sdxl"}, "steps": 3, "sampler_name": "Euler", "seed": 5, **SMALL}
CONTROLS = {"sharpness": 2, "adaptive_cfg": 7, "adm_scaler_positive": 1.5, "adm_scaler_negative": 0.8, "adm_scaler_end": 0.3}


def txt2img(client, **body):
    answer = client.post(f"{PREFIX}/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    return data, json.loads(data["info"])


def test_controls_are_off_unless_asked_for_and_written_in_fooocus_words(client):
    plain, plain_info = txt2img(client, prompt="a fox", cfg_scale=9, **XL)
    for key in ("Sharpness", "ADM Guidance", "Adaptive CFG", "FreeU", "Fooocus V2 Expansion"):
        assert key not in plain_info["infotexts"][0]
    tuned, info = txt2img(client, prompt="a fox", cfg_scale=9, freeu_enabled=True, **CONTROLS, **XL)
    text = info["infotexts"][0]
    assert 'Sharpness: 2, ADM Guidance: "(1.5, 0.8, 0.3)", Adaptive CFG: 7, FreeU: "(1.01, 1.02, 0.99, 0.95)"' in text
    assert not np.array_equal(pixels(decode(plain["images"][0])), pixels(decode(tuned["images"][0])))
    meta = read_metadata(base64.b64decode(tuned["images"][0]))
    assert meta.request["sharpness"] == 2 and meta.image_params["adm_end"] == 0.3 and meta.image_params["freeu"]


def test_refiner_and_its_swap_method(client):
    _data, info = txt2img(
        client, prompt="a fox", refiner_checkpoint="tiny-sdxl", refiner_switch_at=0.5, refiner_swap_method="vae", **XL
    )
    text = info["infotexts"][0]
    assert "Refiner: tiny-sdxl [" in text and "Refiner switch at: 0.5" in text and "Refiner Swap Method: vae" in text
    assert "refiner_checkpoint" not in info["ignored_fields"]
    bad = client.post(
        f"{PREFIX}/txt2img", json={"prompt": "x", "refiner_checkpoint": "tiny-sdxl", "refiner_swap_method": "odd", **XL}
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "refiner_swap_method"]
    sd15 = client.post(f"{PREFIX}/txt2img", json={"prompt": "x", "refiner_checkpoint": "tiny-sdxl", **SMALL})
    assert sd15.status_code == 422 and sd15.json()["detail"][0]["loc"] == ["body", "refiner_checkpoint"]


def test_fooocus_v2_among_styles_expands_the_prompt(client):
    _data, info = txt2img(client, prompt="a red fox", styles=["Fooocus V2"], **XL)
    prompt = info["all_prompts"][0]
    assert prompt.startswith("a red fox, ") and len(prompt) > len("a red fox, ")
    assert info["styles"] == [] and f"Fooocus V2 Expansion: {json.dumps(prompt)}" in info["infotexts"][0]
    _data, again = txt2img(client, prompt="a red fox", prompt_expansion="free-expansion", **XL)
    assert again["all_prompts"] == [prompt]  # the first model installed, the same seed: the same words
    bad = client.post(f"{PREFIX}/txt2img", json={"prompt": "x", "prompt_expansion": "nope", **XL})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "prompt_expansion"]


def test_docs_list_the_extra_fields(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Txt2ImgRequest"]["properties"]
    for name in ("sharpness", "adaptive_cfg", "adm_scaler_positive", "adm_scaler_negative", "adm_scaler_end",
                 "freeu_enabled", "refiner_swap_method", "prompt_expansion", "refiner_checkpoint"):  # fmt: skip
        assert name in schema and schema[name].get("description"), name
    assert schema["sharpness"]["default"] == 0 and schema["sharpness"]["maximum"] == 30


def test_the_page_endpoint_takes_the_controls_and_the_expansion(page):
    answer, [file] = page.generate(prompt="a red fox", prompt_expansion="Fooocus V2", sharpness=4.0, seed=3)
    assert answer["status"] == "finished", answer["error"]
    meta = read_metadata(file)
    assert meta.request["prompt_expansion"] == "free-expansion" and meta.request["sharpness"] == 4.0
    assert meta.params["Fooocus V2 Expansion"].startswith("a red fox, ") and meta.params["Sharpness"] == 4


def test_token_merging_as_a1111_clients_ask_for_it(client):
    small = {"prompt": "a fox", "steps": 2, "sampler_name": "Euler", "seed": 5, **SMALL}
    plain, _ = txt2img(client, **small)
    merged, info = txt2img(client, override_settings={"token_merging_ratio": 0.5}, **small)
    assert "Token merging ratio: 0.5" in info["infotexts"][0]
    assert not np.array_equal(pixels(decode(plain["images"][0])), pixels(decode(merged["images"][0])))
    _same, easel = txt2img(client, token_merging=0.5, **small)  # Easel's own field
    assert "Token merging ratio: 0.5" in easel["infotexts"][0]
    bad = client.post(f"{PREFIX}/txt2img", json={**small, "token_merging": 0.9})
    assert bad.status_code == 422 and "token_merging" in bad.text
