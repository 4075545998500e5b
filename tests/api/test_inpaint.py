"""/sdapi/v1/img2img with a mask over real HTTP, and webuiapi's img2img(mask_image=...) unchanged: A1111's inpaint
fields (mask_blur and _x/_y, inpainting_fill, inpaint_full_res and its padding, inpainting_mask_invert,
initial_noise_multiplier, include_init_images), a mask of another size, and masks that are not images."""

from __future__ import annotations

import json
from urllib.parse import urlparse

import numpy as np
import pytest
import webuiapi
from PIL import Image

from tests.api.test_img2img import SMALL, b64, decoded, encoded, picture
from ui.api import PREFIX


def rectangle(width: int, height: int, box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, box)
    return mask


def inpaint(client, image: Image.Image, mask: Image.Image | bytes, **fields):
    data = mask if isinstance(mask, bytes) else encoded(mask)
    body = {"prompt": "a red door", "init_images": [b64(encoded(image))], "mask": b64(data), "seed": 5, **SMALL, **fields}
    return client.post(f"{PREFIX}/img2img", json=body)


def test_a_mask_makes_it_an_inpaint_that_keeps_the_rest_of_the_picture(client):
    image, mask = picture(seed=11), rectangle(64, 64, (20, 16, 44, 48))
    answer = inpaint(client, image, mask, mask_blur=0, inpainting_fill=1, inpaint_full_res=False, denoising_strength=0.9)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    result, where = np.asarray(decoded(data["images"][0])), np.asarray(mask) > 0
    assert np.array_equal(result[~where], np.asarray(image)[~where])
    assert (result[where] != np.asarray(image)[where]).mean() > 0.9
    assert data["parameters"]["mask"] is None and data["parameters"]["init_images"] is None
    info = json.loads(data["info"])
    assert "Mask blur: 0" in info["infotexts"][0] and "Masked content: original" in info["infotexts"][0]
    assert info["ignored_fields"] == []
    kept = inpaint(client, image, mask, mask_blur=0, include_init_images=True).json()
    assert kept["parameters"]["mask"] == b64(encoded(mask))


def test_a1111s_fields_map_to_the_engines_and_a_smaller_mask_is_stretched(client):
    image = picture(seed=12)
    small = rectangle(32, 32, (10, 8, 22, 24))  # half size: stretched to (20, 16, 44, 48)
    full = rectangle(64, 64, (20, 16, 44, 48))
    fields = dict(mask_blur_x=2, mask_blur_y=0, inpainting_fill=2, inpaint_full_res=True, inpaint_full_res_padding=8)
    a, b = inpaint(client, image, small, **fields), inpaint(client, image, full, **fields)
    assert a.status_code == b.status_code == 200, a.text
    assert np.array_equal(np.asarray(decoded(a.json()["images"][0])), np.asarray(decoded(b.json()["images"][0])))
    text = json.loads(a.json()["info"])["infotexts"][0]
    for words in (
        "Mask blur x: 2, Mask blur y: 0",
        "Masked content: latent noise",
        "Inpaint area: Only masked",
        "Masked area padding: 8",
    ):
        assert words in text
    inverted = inpaint(client, image, full, mask_blur=0, inpainting_mask_invert=1, inpaint_full_res=False)
    result, where = np.asarray(decoded(inverted.json()["images"][0])), np.asarray(full) > 0
    assert np.array_equal(result[where], np.asarray(image)[where])  # the painted part is what is kept
    assert "Mask mode: Inpaint not masked" in json.loads(inverted.json()["info"])["infotexts"][0]
    louder = inpaint(client, image, full, initial_noise_multiplier=1.2)
    assert "Noise multiplier: 1.2" in json.loads(louder.json()["info"])["infotexts"][0]


@pytest.mark.parametrize(
    "mask, fields, loc, words",
    [
        (b"not an image", {}, "mask", "not an image"),
        (encoded(Image.new("L", (64, 64), 0)), {}, "mask", "empty"),
        (encoded(rectangle(64, 64, (0, 0, 8, 8))), {"inpainting_fill": 5}, "inpainting_fill", ""),
        (encoded(rectangle(64, 64, (0, 0, 8, 8))), {"mask_blur": -1}, "mask_blur", ""),
        (encoded(rectangle(64, 64, (0, 0, 8, 8))), {"inpaint_full_res_padding": 999}, "inpaint_full_res_padding", ""),
        (encoded(rectangle(64, 64, (0, 0, 8, 8))), {"initial_noise_multiplier": 7}, "initial_noise_multiplier", ""),
    ],
)
def test_bad_masks_and_fields_answer_422_naming_the_field(client, mask, fields, loc, words):
    answer = inpaint(client, picture(seed=13), mask, **fields)
    assert answer.status_code == 422, answer.text
    [item] = answer.json()["detail"]
    assert item["loc"] == ["body", loc] and words in item["msg"], item


def test_webuiapi_img2img_with_a_mask_image_unchanged(live):
    a1111 = webuiapi.WebUIApi(host="127.0.0.1", port=urlparse(live.url).port, sampler="Euler", scheduler="automatic", steps=2)
    image, mask = picture(seed=14).convert("RGB"), rectangle(64, 64, (24, 24, 40, 40))
    # the client's defaults: mask_blur 4, inpainting_fill 0 (fill), only masked with padding 0
    result = a1111.img2img(images=[image], mask_image=mask, prompt="a window", seed=3, width=64, height=64, cfg_scale=5)
    out = np.asarray(result.image.convert("RGB"))
    reach = np.zeros((64, 64), bool)
    reach[24 - 11 : 40 + 11, 24 - 11 : 40 + 11] = True  # a blur of 4 reaches int(2.5 * 4 + 0.5) = 10 pixels
    assert np.array_equal(out[~reach], np.asarray(image)[~reach])
    assert (out[24:40, 24:40] != np.asarray(image)[24:40, 24:40]).mean() > 0.9
    assert "Mask blur: 4" in result.info["infotexts"][0] and "Inpaint area: Only masked" in result.info["infotexts"][0]
