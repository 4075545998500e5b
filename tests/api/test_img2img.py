"""/sdapi/v1/img2img, the hires fix, the upscaler listings and extras over real HTTP, and webuiapi unchanged.

Answers are checked against A1111's documented shapes (modules/api/models.py: ImageToImageResponse,
ExtrasSingleImageResponse, ExtrasBatchImagesResponse, UpscalerItem, LatentUpscalerModeItem) field by field,
and images against what the engine makes for the same request.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import webuiapi
from PIL import Image

from ui.api import PREFIX

SMALL = {"width": 64, "height": 64, "steps": 3, "sampler_name": "Euler", "cfg_scale": 5}


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def b64(data: bytes, prefix: bool = False) -> str:
    text = base64.b64encode(data).decode()
    return f"data:image/png;base64,{text}" if prefix else text


def picture(width: int = 64, height: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8)).resize((width, height))


def decoded(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB")


def test_img2img_answers_in_a1111_shape(client, live):
    init = b64(encoded(picture(seed=1)), prefix=True)
    body = {"prompt": "a harbour", "init_images": [init], "denoising_strength": 0.5, "seed": 7, "batch_size": 2, **SMALL}
    answer = client.post(f"{PREFIX}/img2img", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert set(data) == {"images", "parameters", "info"}
    assert len(data["images"]) == 2 and decoded(data["images"][0]).size == (64, 64)
    assert data["parameters"]["init_images"] is None and data["parameters"]["denoising_strength"] == 0.5
    info = json.loads(data["info"])
    assert info["all_seeds"] == [7, 8] and info["denoising_strength"] == 0.5
    assert "Denoising strength: 0.5" in info["infotexts"][0]
    # without the data-URL prefix, the same image: the same result
    again = client.post(f"{PREFIX}/img2img", json={**body, "init_images": [init.split(",", 1)[1]], "batch_size": 1}).json()
    assert np.array_equal(np.asarray(decoded(again["images"][0])), np.asarray(decoded(data["images"][0])))
    kept = client.post(f"{PREFIX}/img2img", json={**body, "batch_size": 1, "include_init_images": True}).json()
    assert kept["parameters"]["init_images"] == [init]
    two = client.post(f"{PREFIX}/img2img", json={**body, "batch_size": 1, "init_images": [init, init]}).json()
    assert json.loads(two["info"])["ignored_fields"] == ["init_images"]  # the first image is used, and it says so


def test_the_inpaint_fields_clients_send_with_their_defaults_mean_nothing_without_a_mask(client):
    init = b64(encoded(picture(seed=2)))
    defaults = {
        "mask_blur": 4,
        "inpainting_fill": 0,
        "inpaint_full_res": True,
        "inpaint_full_res_padding": 0,
        "inpainting_mask_invert": 0,
        "initial_noise_multiplier": 1,
        "image_cfg_scale": 1.5,
    }
    ok = client.post(f"{PREFIX}/img2img", json={"init_images": [init], **defaults, **SMALL, "seed": 3})
    plain = client.post(f"{PREFIX}/img2img", json={"init_images": [init], **SMALL, "seed": 3})
    assert ok.status_code == plain.status_code == 200, ok.text
    assert np.array_equal(np.asarray(decoded(ok.json()["images"][0])), np.asarray(decoded(plain.json()["images"][0])))
    assert json.loads(ok.json()["info"])["ignored_fields"] == []


def bomb() -> bytes:
    return encoded(Image.new("1", (40000, 40000)))


@pytest.mark.parametrize(
    "init, field, words",
    [
        (lambda: b64(b"this is not an image"), "init_images", "not an image"),
        (lambda: b64(encoded(picture(seed=3))[:200]), "init_images", "truncated"),
        (lambda: b64(bomb()), "init_images", "bomb|megapixels"),
        (lambda: b64(encoded(Image.new("RGB", (4100, 4100)))), "init_images", "limit is 16"),
        (lambda: "not base64 at all!", "init_images", "base64"),
    ],
)
def test_bad_images_answer_422_naming_the_field_and_the_worker_goes_on(client, init, field, words):
    import re

    answer = client.post(f"{PREFIX}/img2img", json={"init_images": [init()], **SMALL})
    assert answer.status_code == 422, answer.text
    [item] = answer.json()["detail"]
    assert item["loc"] == ["body", field] and re.search(words, item["msg"]), item
    good = client.post(f"{PREFIX}/img2img", json={"init_images": [b64(encoded(picture(seed=4)))], **SMALL, "steps": 1})
    assert good.status_code == 200


@pytest.mark.parametrize(
    "body, loc",
    [
        ({"denoising_strength": 1.5}, ["body", "denoising_strength"]),
        ({"init_images": []}, ["body", "init_images"]),
        ({"resize_mode": 7}, ["body", "resize_mode"]),
    ],
)
def test_bad_img2img_fields_answer_422(client, body, loc):
    payload = {"init_images": [b64(encoded(picture(seed=5)))], **SMALL, **body}
    answer = client.post(f"{PREFIX}/img2img", json=payload)
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == loc, answer.text


def test_txt2img_hires_fix(client, live):
    body = {
        "prompt": "a tower",
        "seed": 3,
        "enable_hr": True,
        "hr_scale": 2,
        "hr_upscaler": "4x-Tiny",
        "hr_second_pass_steps": 2,
        "denoising_strength": 0.55,
        **SMALL,
    }
    answer = client.post(f"{PREFIX}/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert decoded(data["images"][0]).size == (128, 128)
    info = json.loads(data["info"])
    assert "enable_hr" not in info["ignored_fields"]
    assert "Denoising strength: 0.55, Hires upscale: 2, Hires steps: 2, Hires upscaler: 4x-Tiny" in info["infotexts"][0]
    bad = client.post(f"{PREFIX}/txt2img", json={**body, "hr_upscaler": "R-ESRGAN 9x"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "hr_upscaler"]
    bad = client.post(f"{PREFIX}/txt2img", json={**body, "denoising_strength": -1})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "denoising_strength"]


def test_upscaler_listings_in_a1111_shape(client, live):
    items = client.get(f"{PREFIX}/upscalers").json()
    assert [i["name"] for i in items] == ["None", "Lanczos", "Nearest", "4x-Tiny"]
    assert all(set(i) == {"name", "model_name", "model_path", "model_url", "scale"} for i in items)
    tiny = items[-1]
    assert tiny["model_path"].endswith("ESRGAN/4x-Tiny.pth") and tiny["scale"] == 4 and tiny["model_name"] == "ESRGAN"
    modes = client.get(f"{PREFIX}/latent-upscale-modes").json()
    assert modes[0] == {"name": "Latent"} and {"name": "Latent (bicubic antialiased)"} in modes


def test_extras_single_and_batch(client, live):
    image = picture(40, 24, seed=6)
    answer = client.post(
        f"{PREFIX}/extra-single-image", json={"image": b64(encoded(image)), "upscaler_1": "4x-Tiny", "upscaling_resize": 2}
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert set(data) == {"html_info", "image"} and "4x-Tiny" in data["html_info"]
    expected = live.services.upscalers.upscale(image, 80, 48, "4x-Tiny")
    assert np.array_equal(np.asarray(decoded(data["image"])), np.asarray(expected))
    # resize_mode 1: to a size, cropped to its proportions
    sized = client.post(
        f"{PREFIX}/extra-single-image",
        json={
            "image": b64(encoded(image)),
            "resize_mode": 1,
            "upscaling_resize_w": 64,
            "upscaling_resize_h": 64,
            "upscaler_1": "Lanczos",
        },
    ).json()
    assert decoded(sized["image"]).size == (64, 64)
    batch = client.post(
        f"{PREFIX}/extra-batch-images",
        json={
            "imageList": [{"data": b64(encoded(image)), "name": "a"}, {"data": b64(encoded(picture(seed=7))), "name": "b"}],
            "upscaler_1": "Nearest",
            "upscaling_resize": 1.5,
        },
    ).json()
    assert [decoded(i).size for i in batch["images"]] == [(56, 32), (96, 96)]  # A1111: sides down to multiples of 8
    bad = client.post(f"{PREFIX}/extra-single-image", json={"image": b64(encoded(image)), "upscaler_1": "Nope"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "upscaler_1"]


def test_extras_match_a1111s_sizes_downscale_and_canvas(client, live):
    image = picture(40, 24, seed=6)

    def single(**fields) -> Image.Image:
        answer = client.post(
            f"{PREFIX}/extra-single-image", json={"image": b64(encoded(image)), "upscaler_1": "4x-Tiny", **fields}
        )
        assert answer.status_code == 200, answer.text
        return decoded(answer.json()["image"])

    # by 1.5: 60x36 rounds down to 56x32; the model runs once (40x24 -> 160x96), then Lanczos to 56x32
    once = live.services.upscalers.run_model(
        live.services.upscalers.loader.get(live.services.upscalers.resolve("4x-Tiny").record), image
    )
    assert once.size == (160, 96)
    expected = once.resize((56, 32), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(single(upscaling_resize=1.5)), np.asarray(expected))
    # below 1: no model pass, a plain Lanczos downscale (20x12 rounds down to 16x8)
    expected = image.resize((16, 8), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(single(upscaling_resize=0.5)), np.asarray(expected))
    # to a size: the larger ratio (41/40, 30/24 -> 1.25: 50x30 rounds to 48x24), centred on a black 41x30 canvas
    made = single(resize_mode=1, upscaling_resize_w=41, upscaling_resize_h=30, upscaling_crop=True)
    assert made.size == (41, 30)
    pixels = np.asarray(made)
    assert pixels[:3].max() == 0 and pixels[-3:].max() == 0 and pixels[3:27].max() > 0  # 24 rows pasted at row 3
    kept = single(resize_mode=1, upscaling_resize_w=41, upscaling_resize_h=30, upscaling_crop=False)
    assert kept.size == (48, 24)  # without crop A1111 keeps the upscaled size
    small = client.post(f"{PREFIX}/extra-single-image", json={"image": b64(encoded(image)), "upscaling_resize": 0.1})
    assert small.status_code == 422 and small.json()["detail"][0]["loc"] == ["body", "upscaling_resize"]
    assert "rounds down to 0x0" in small.json()["detail"][0]["msg"]


def test_webuiapi_img2img_extras_and_hires_unchanged(live):
    from urllib.parse import urlparse

    api = webuiapi.WebUIApi(host="127.0.0.1", port=urlparse(live.url).port, sampler="Euler", scheduler="automatic", steps=2)
    result = api.img2img(images=[picture(seed=8)], prompt="a boat", denoising_strength=0.6, seed=5, width=64, height=64)
    assert result.image.size == (64, 64) and result.info["denoising_strength"] == 0.6
    assert result.info["ignored_fields"] == []
    extra = api.extra_single_image(image=picture(32, 32, seed=9), upscaler_1="4x-Tiny", upscaling_resize=2)
    assert extra.image.size == (64, 64)
    hires = api.txt2img(
        prompt="a tower",
        seed=2,
        width=64,
        height=64,
        enable_hr=True,
        hr_scale=1.5,
        hr_upscaler=webuiapi.HiResUpscaler.Latent,
        denoising_strength=0.6,
    )
    assert hires.image.size == (96, 96) and "Hires upscaler: Latent" in hires.info["infotexts"][0]
