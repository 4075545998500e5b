"""The form's Input Image and hires-fix fields <-> the request's parts, both ways."""

from __future__ import annotations

import pytest

from pipelines.errors import InvalidRequest
from pipelines.types import GenerationRequest, HiresFix, ImageInput
from ui.form.image_parts import PART_DEFAULTS, form_from_parts, parts_from_form
from ui.form.inpaint_parts import method_values, methods

HASH = "a" * 64


def test_input_fields_make_the_input_part_with_overrides_only_when_set():
    form = {**PART_DEFAULTS, "input_enabled": True, "input_mode": "upscale_2"}
    part = parts_from_form(form, HASH, "/out/x.png")["input"]
    assert part == ImageInput(HASH, mode="upscale_2", source="/out/x.png")  # -1: the mode's own strength and factor
    form.update(input_denoise=0.3, input_scale=1.25, input_upscaler="4x-UltraSharp")
    part = parts_from_form(form, HASH)["input"]
    assert (part.denoise, part.scale, part.upscaler) == (0.3, 1.25, "4x-UltraSharp")
    with pytest.raises(InvalidRequest) as info:
        parts_from_form(form, None)
    assert info.value.field == "input_image"
    assert parts_from_form({**form, "input_enabled": False}, HASH) == {"input": None, "hires": None}


def test_hires_fields_make_the_hires_part_and_input_wins():
    form = {**PART_DEFAULTS, "hires_enabled": True, "hires_scale": 1.5, "hires_steps": 12, "hires_sampler": "DPM++ 2M"}
    assert parts_from_form(form, None)["hires"] == HiresFix(scale=1.5, steps=12, sampler="DPM++ 2M")
    assert parts_from_form({**form, "input_enabled": True}, HASH)["hires"] is None  # no hires fix with an input image


def test_a_restored_request_puts_mode_and_strength_back():
    request = GenerationRequest(input=ImageInput(HASH, mode="vary_strong", denoise=0.9), hires=None)
    back = form_from_parts(GenerationRequest.from_dict(request.to_dict()).to_dict())
    assert back == {
        "input_enabled": True,
        "input_tab": "uov",  # the tab of Vary and Upscale is shown again
        "input_mode": "vary_strong",
        "input_denoise": 0.9,
        "input_scale": -1.0,
        "input_upscaler": "Automatic",
        "hires_enabled": False,
    }
    hires = form_from_parts({"hires": {"scale": 2.5, "upscaler": "Latent (bicubic)", "denoise": 0.4}})
    assert hires["hires_enabled"] and hires["hires_scale"] == 2.5 and hires["hires_upscaler"] == "Latent (bicubic)"


MASK = "b" * 64


def test_the_inpaint_tab_makes_an_inpaint_part_and_a_restored_one_comes_back_to_it():
    form = {
        **PART_DEFAULTS,
        "input_enabled": True,
        "input_tab": "inpaint",
        "inpaint_method": "inpaint_detail",
        "inpaint_prompt": "a smiling face",
        "outpaint": ["top", "left"],
        "inpaint_denoise": 0.5,
        "inpaint_fill": "original",
        "only_masked": True,
        "only_masked_padding": 48,
        "mask_blur": 6,
        "invert_mask": True,
        "inpaint_model": "sd-v1-5-inpainting",
    }
    part = parts_from_form(form, HASH, source="out/1.png", mask=MASK)["input"]
    assert part == ImageInput(
        HASH,
        mode="inpaint_detail",
        denoise=0.5,
        source="out/1.png",
        mask=MASK,
        mask_blur_x=6,
        mask_blur_y=6,
        invert_mask=True,
        inpaint_fill="original",
        only_masked=True,
        only_masked_padding=48,
        outpaint=("top", "left"),
        inpaint_prompt="a smiling face",
        inpaint_model="sd-v1-5-inpainting",
    )
    back = form_from_parts(GenerationRequest.from_dict(GenerationRequest(input=part).to_dict()).to_dict())
    assert {k: back[k] for k in form if k in back and k not in ("input_mode",)} == {
        k: v for k, v in form.items() if k in back and k != "input_mode"
    }
    same = parts_from_form({**form, "inpaint_model": "Same as the model"}, HASH, mask=MASK)["input"]
    assert same.inpaint_model is None


def test_an_inpaint_without_a_mask_or_a_side_names_the_mask_and_methods_set_their_own_values():
    form = {**PART_DEFAULTS, "input_enabled": True, "input_tab": "inpaint"}
    with pytest.raises(InvalidRequest) as info:
        parts_from_form(form, HASH, mask=None)
    assert info.value.field == "inpaint_mask"
    assert parts_from_form({**form, "outpaint": ["right"]}, HASH)["input"].outpaint == ("right",)
    assert [key for _, key in methods()] == ["inpaint", "inpaint_detail", "inpaint_modify"]
    assert method_values("inpaint_detail") == {"inpaint_denoise": 0.5, "inpaint_fill": "original", "only_masked": True}
    assert method_values("inpaint") == {"inpaint_denoise": 1.0, "inpaint_fill": "fill", "only_masked": False}
