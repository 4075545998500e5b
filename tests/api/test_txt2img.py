"""POST /sdapi/v1/txt2img over HTTP: the same images and metadata as the page, A1111's request and answer shapes."""

from __future__ import annotations

import base64
import io
import json

import diffusers
import numpy as np
import torch
from PIL import Image

from pipelines.outputs.reading import read_metadata
from ui.api import PREFIX

SMALL = {"width": 64, "height": 64}
# The page starts from Fooocus's sampling controls; an A1111 request has them off unless it names them.
PAGE_CONTROLS = {
    "sharpness": 2.0,
    "adaptive_cfg": 7.0,
    "adm_scaler_positive": 1.5,
    "adm_scaler_negative": 0.8,
    "adm_scaler_end": 0.3,
}


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def pixels(image) -> np.ndarray:
    with Image.open(image) if not isinstance(image, Image.Image) else image as im:
        return np.asarray(im.convert("RGB"))


def txt2img(client, **body) -> tuple[dict, dict]:
    answer = client.post(f"{PREFIX}/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    return data, json.loads(data["info"])


def test_same_settings_and_seed_give_the_page_s_image_and_infotext(client, page):
    answer, files = page.generate(
        prompt="a red fox in snow",
        negative_prompt="blurry",
        model="tiny-sd15",
        steps=4,
        cfg_scale=6.5,
        sampler="Euler a",
        scheduler="Automatic",
        seed=1234,
    )
    assert answer["status"] == "finished", answer["error"]
    [page_file] = files

    data, info = txt2img(
        client,
        prompt="a red fox in snow",
        negative_prompt="blurry",
        steps=4,
        cfg_scale=6.5,
        sampler_name="Euler a",
        seed=1234,
        override_settings={"sd_model_checkpoint": "tiny-sd15"},
        **PAGE_CONTROLS,
        **SMALL,
    )
    [image_b64] = data["images"]
    api_image = decode(image_b64)
    assert api_image.format == "PNG" and api_image.size == (64, 64)
    assert np.array_equal(pixels(api_image), pixels(page_file))

    page_meta = read_metadata(page_file)
    api_meta = read_metadata(base64.b64decode(image_b64))
    assert page_meta.source_app == api_meta.source_app == "easel"
    assert api_meta.infotext == page_meta.infotext == info["infotexts"][0]
    assert api_meta.image_params == page_meta.image_params  # every parameter, not only the infotext's
    assert (info["seed"], info["all_seeds"], info["sampler_name"], info["scheduler"]) == (1234, [1234], "Euler a", "Automatic")
    assert (info["sd_model_name"], info["sd_model_hash"]) == ("tiny-sd15", page_meta.params["Model hash"])
    assert (info["prompt"], info["negative_prompt"], info["steps"], info["cfg_scale"]) == ("a red fox in snow", "blurry", 4, 6.5)
    assert info["index_of_first_image"] == 0 and info["ignored_fields"] == []


def test_page_endpoint_takes_styles_a_mode_and_loras(client, page, live):
    """`/generate` (gradio_client) goes through the page's own form: styles in order, an engine mode, LoRA slots."""
    styles = ["Photo - Macro Detail", "Cinematic - Film Noir"]
    lora = [{"name": "papercut_v1", "weight": 0.5}]  # written for full-size SD 1.5: it does not fit the tiny model
    failed, files = page.generate(prompt="a beetle", styles=styles, performance="Speed", seed=9, loras=lora)
    assert (failed["status"], files) == ("failed", [])
    assert failed["error"].startswith("papercut_v1.safetensors does not fit the model tiny-sd15")
    answer, files = page.generate(
        prompt="a beetle", styles=styles, performance="Speed", seed=9, loras=lora, skip_invalid_loras=True
    )
    assert answer["status"] == "finished", answer["error"]
    [file] = files
    meta = read_metadata(file)
    styled, negative = live.services.styles.apply(styles, "a beetle", "")
    assert meta.image_params["prompt"] == styled and meta.image_params["negative_prompt"] == negative
    assert meta.params["Performance"] == "Speed" and meta.params["Steps"] == 30  # the mode's steps, not the 3 given
    assert meta.params["Styles"] == styles and meta.image_params["loras"] == []  # left out, as asked
    assert meta.request["loras"] == [{"name": "papercut_v1", "weight": 0.5, "enabled": True}]
    # the same settings over the A1111 API give the same picture
    data, _info = txt2img(
        client,
        prompt=styled,
        negative_prompt=negative,
        steps=30,
        cfg_scale=7.0,
        sampler_name="Euler",
        seed=9,
        override_settings={"sd_model_checkpoint": "tiny-sd15"},
        **PAGE_CONTROLS,
        **SMALL,
    )
    assert np.array_equal(pixels(decode(data["images"][0])), pixels(file))
    # bad values come back as messages, not tracebacks
    bad, files = page.generate(prompt="x", performance="Turbo")
    assert (bad["status"], files) == ("failed", []) and "Unknown performance mode 'Turbo'" in bad["error"]
    bad, _ = page.generate(prompt="x", loras=[{"name": f"l{i}"} for i in range(6)])
    assert bad["error"] == "At most 5 LoRAs can be used at once."
    bad, _ = page.generate(prompt="x", styles=["Nope"])
    assert bad["error"].startswith("No style named 'Nope'")
    bad, _ = page.generate(prompt="x", refiner="tiny-sdxl")
    assert bad["error"].startswith("A refiner works only with an SDXL base model; tiny-sd15 is SD 1.x.")


def test_image_equals_plain_diffusers_with_the_same_seed(client, tiny_sd15_reference):
    data, _info = txt2img(
        client,
        prompt="a cabin",
        negative_prompt="people",
        steps=5,
        cfg_scale=5.5,
        sampler_name="Euler",
        seed=77,
        override_settings={"sd_model_checkpoint": "tiny-sd15.safetensors"},
        **SMALL,
    )
    pipe = tiny_sd15_reference
    scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    plain = type(pipe)(**{**pipe.components, "scheduler": scheduler})
    plain.set_progress_bar_config(disable=True)
    expected = plain(
        "a cabin",
        negative_prompt="people",
        num_inference_steps=5,
        guidance_scale=5.5,
        generator=torch.Generator().manual_seed(77),
        **SMALL,
    ).images[0]
    assert np.array_equal(pixels(decode(data["images"][0])), np.asarray(expected))


def test_a1111_defaults_parameters_echo_and_unknown_fields(client, live):
    data, info = txt2img(client, prompt="p", steps=2, seed=3, some_extension_field={"x": 1}, **SMALL)
    params = data["parameters"]
    assert "some_extension_field" not in params  # ignored, as A1111 does
    assert (params["prompt"], params["steps"], params["seed"], params["cfg_scale"]) == ("p", 2, 3, 7.0)
    assert (params["sampler_index"], params["sampler_name"], params["batch_size"], params["n_iter"]) == ("Euler", None, 1, 1)
    assert (params["send_images"], params["save_images"], params["override_settings"]) == (True, False, {})
    assert info["sampler_name"] == "Euler"  # A1111's default sampler, from sampler_index
    assert info["sd_model_name"] == live.services.manager.default_record().name
    assert info["image_paths"] == []  # save_images defaults to false, as in A1111
    assert not any(e.job_id == info["job_id"] for e in live.services.history.list("", limit=1000))
    assert len(info["job_timestamp"]) == 14 and info["version"].startswith("Easel")


def test_batches_send_images_and_save_images(client, live):
    data, info = txt2img(client, prompt="batch", steps=2, seed=40, batch_size=2, n_iter=2, save_images=True, **SMALL)
    assert len(data["images"]) == 4 and info["all_seeds"] == [40, 41, 42, 43]
    assert len(info["infotexts"]) == len(info["all_prompts"]) == 4
    assert [read_metadata(base64.b64decode(b)).params["Seed"] for b in data["images"]] == [40, 41, 42, 43]
    assert len(info["image_paths"]) == 4
    indexed = {str(e.path) for e in live.services.history.list("batch", limit=100) if e.job_id == info["job_id"]}
    assert indexed == set(info["image_paths"])
    for path, b64 in zip(info["image_paths"], data["images"]):
        with open(path, "rb") as f:
            assert f.read() == base64.b64decode(b64)

    data, info = txt2img(client, prompt="quiet", steps=1, seed=1, send_images=False, **SMALL)
    assert data["images"] == [] and info["all_seeds"] == [1] and len(info["infotexts"]) == 1


def test_sampler_and_schedule_names_as_a1111_clients_send_them(client):
    _, info = txt2img(client, prompt="s", steps=2, seed=1, sampler_name="DPM++ 2M Karras", **SMALL)
    assert (info["sampler_name"], info["scheduler"]) == ("DPM++ 2M", "Karras")
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in info["infotexts"][0]
    _, info = txt2img(client, prompt="s", steps=2, seed=1, sampler_name="DPM++ 2M", scheduler="exponential", **SMALL)
    assert (info["sampler_name"], info["scheduler"]) == ("DPM++ 2M", "Exponential")
    _, info = txt2img(client, prompt="s", steps=2, seed=1, sampler_index="k_euler_a", **SMALL)
    assert info["sampler_name"] == "Euler a"


def test_override_settings_apply_to_this_request_only(client):
    data, info = txt2img(
        client,
        prompt="o",
        steps=2,
        seed=5,
        override_settings={"sd_model_checkpoint": "tiny-sdxl", "CLIP_stop_at_last_layers": 2, "samples_format": "jpg"},
        **SMALL,
    )
    assert info["sd_model_name"] == "tiny-sdxl" and info["clip_skip"] == 2
    assert decode(data["images"][0]).format == "JPEG"
    assert read_metadata(base64.b64decode(data["images"][0])).params["Clip skip"] == 2
    _, info = txt2img(client, prompt="o", steps=1, seed=5, **SMALL)
    assert info["sd_model_name"] == "tiny-sd15" and info["clip_skip"] == 1


def test_styles_are_applied_and_unsupported_features_reported(client, live):
    styles = ["Cinematic - Film Noir", "Cinematic - Film Still"]
    data, info = txt2img(
        client,
        prompt="st",
        negative_prompt="mine",
        steps=1,
        seed=2,
        styles=styles,
        restore_faces=True,
        subseed_strength=0.3,
        **SMALL,
    )
    expected, negative = live.services.styles.apply(styles, "st", "mine")
    assert expected.startswith("cinematic film still of film noir scene of st, ")  # the second wraps the first
    assert info["all_prompts"] == [expected] and info["all_negative_prompts"] == [negative]
    assert info["styles"] == styles and info["infotexts"][0].startswith(expected + "\nNegative prompt: " + negative)
    assert info["ignored_fields"] == ["subseed_strength", "restore_faces"]  # the hires fix exists: tests/api/test_img2img.py
    assert len(data["images"]) == 1


def test_a_job_that_fails_on_the_worker_answers_500_and_the_next_one_runs(client, live, api_models_dir, tiny_models_dir):
    # a checkpoint whose header is whole but whose tensor data is cut short: found and probed, fails to load
    source = (tiny_models_dir / "checkpoints" / "tiny-sd15.safetensors").read_bytes()
    broken = api_models_dir / "checkpoints" / "broken.safetensors"
    broken.write_bytes(source[: len(source) // 2])
    live.services.registry.refresh()
    try:
        answer = client.post(
            f"{PREFIX}/txt2img", json={"prompt": "b", "steps": 1, **SMALL, "override_settings": {"sd_model_checkpoint": "broken"}}
        )
        assert answer.status_code == 500, answer.text
        assert "broken" in answer.json()["detail"]
    finally:
        broken.unlink()
        live.services.registry.refresh()
    _, info = txt2img(client, prompt="after", steps=1, seed=1, **SMALL)
    assert info["all_seeds"] == [1]
