"""`/generate` (gradio_client) with an input image and mask: the same pictures /sdapi/v1/img2img makes.

The files go up as gradio_client sends them (`handle_file`), and each answer is compared with the A1111
route's for the same picture, mask, strength and seed, which tests/api/test_img2img.py and test_inpaint.py
check against the engine.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import handle_file

from pipelines.errors import InvalidRequest
from pipelines.outputs.reading import read_metadata
from tests.api.test_img2img import SMALL, b64, decoded, picture
from tests.api.test_inpaint import rectangle
from tests.api.test_txt2img import PAGE_CONTROLS, pixels
from ui.api import PREFIX
from ui.api.gradio_endpoint import uploaded_path

CALL = {"steps": 3, "sampler": "Euler", "cfg_scale": 5.0, "negative_prompt": ""}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate-inputs")
    image, mask = root / "harbour.png", root / "door-mask.png"
    picture(seed=1).save(image)
    rectangle(64, 64, (16, 16, 48, 40)).save(mask)
    (root / "notes.png").write_text("not a picture")
    return image, mask, root / "notes.png"


def test_an_input_image_makes_a1111s_img2img_picture(client, page, files):
    image, _, _ = files
    answer, [file] = page.generate(prompt="a harbour", input_image=handle_file(str(image)), denoise=0.5, seed=7, **CALL)
    assert answer["status"] == "finished", answer["error"]
    body = {"prompt": "a harbour", "init_images": [b64(image.read_bytes())], "denoising_strength": 0.5, "seed": 7}
    reply = client.post(f"{PREFIX}/img2img", json={**body, **SMALL, **PAGE_CONTROLS})
    assert reply.status_code == 200, reply.text
    assert np.array_equal(pixels(decoded(reply.json()["images"][0])), pixels(file))
    meta = read_metadata(file)
    assert meta.params["Denoising strength"] == 0.5 and meta.image_params["input_mode"] == "Image to image"


def test_a_mask_makes_the_same_inpaint_as_a1111s_route(client, page, files):
    image, mask, _ = files
    answer, [file] = page.generate(
        prompt="a red door", input_image=handle_file(str(image)), mask=handle_file(str(mask)), denoise=0.9, seed=5, **CALL
    )
    assert answer["status"] == "finished", answer["error"]
    fields = dict(mask_blur=4, inpainting_fill=0, inpaint_full_res=False, denoising_strength=0.9, **PAGE_CONTROLS)
    body = {"prompt": "a red door", "init_images": [b64(image.read_bytes())], "mask": b64(mask.read_bytes()), "seed": 5}
    reply = client.post(f"{PREFIX}/img2img", json={**body, **SMALL, **fields})
    assert reply.status_code == 200, reply.text
    made = pixels(file)
    assert np.array_equal(pixels(decoded(reply.json()["images"][0])), made)
    original = pixels(picture(seed=1))
    assert np.array_equal(made[:2], original[:2]) and np.array_equal(made[60:], original[60:])  # far from the mask: kept
    assert np.abs(made[20:36, 20:44].astype(int) - original[20:36, 20:44]).mean() > 5  # under it, re-made


def test_modes_by_label_and_fooocus_inpaint_and_outpaint(page, files):
    image, mask, _ = files
    answer, [file] = page.generate(prompt="a harbour", input_image=handle_file(str(image)), input_mode="Vary (Subtle)", seed=3)
    assert answer["status"] == "finished", answer["error"]
    meta = read_metadata(file)
    assert meta.image_params["input_mode"] == "Vary (Subtle)" and meta.params["Denoising strength"] == 0.5
    answer, [wider] = page.generate(
        prompt="a harbour", input_image=handle_file(str(image)), input_mode="inpaint", outpaint=["Right"], seed=3, **CALL
    )
    assert answer["status"] == "finished", answer["error"]
    assert decoded_size(wider)[0] > 64  # the canvas grew to the right


def decoded_size(path) -> tuple[int, int]:
    return pixels(path).shape[1::-1]


def test_bad_image_fields_fail_naming_them_and_the_next_call_works(page, files):
    image, mask, junk = files
    failed, out = page.generate(prompt="x", input_mode="img2img")
    assert (failed["status"], out) == ("failed", []) and failed["error"] == "input_mode needs an input_image."
    failed, _ = page.generate(prompt="x", input_image=handle_file(str(junk)))
    assert failed["status"] == "failed" and failed["error"].startswith("input_image:")
    failed, _ = page.generate(prompt="x", input_image=handle_file(str(image)), mask=handle_file(str(junk)))
    assert failed["status"] == "failed" and failed["error"].startswith("mask:")
    failed, _ = page.generate(prompt="x", input_image=handle_file(str(image)), input_mode="Sharpen")
    assert failed["status"] == "failed" and "Sharpen" in failed["error"]
    failed, _ = page.generate(prompt="x", input_image=handle_file(str(image)), input_mode="inpaint")
    assert failed["status"] == "failed" and "mask" in failed["error"]
    answer, [_] = page.generate(prompt="a harbour", input_image=handle_file(str(image)), seed=2, **CALL)
    assert answer["status"] == "finished", answer["error"]


def test_only_files_uploaded_with_the_call_are_read():
    with pytest.raises(InvalidRequest) as err:
        uploaded_path({"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}}, "input_image")
    assert err.value.field == "input_image" and "only files uploaded with this call" in str(err.value)
    with pytest.raises(InvalidRequest):
        uploaded_path({"url": "http://example.com/x.png"}, "mask")
