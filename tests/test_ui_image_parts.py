"""The form's Input Image and hires-fix fields <-> the request's parts, both ways."""

from __future__ import annotations

import pytest

from pipelines.errors import InvalidRequest
from pipelines.types import GenerationRequest, HiresFix, ImageInput
from ui.form.image_parts import PART_DEFAULTS, form_from_parts, parts_from_form

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
        "input_mode": "vary_strong",
        "input_denoise": 0.9,
        "input_scale": -1.0,
        "input_upscaler": "Automatic",
        "hires_enabled": False,
    }
    hires = form_from_parts({"hires": {"scale": 2.5, "upscaler": "Latent (bicubic)", "denoise": 0.4}})
    assert hires["hires_enabled"] and hires["hires_scale"] == 2.5 and hires["hires_upscaler"] == "Latent (bicubic)"
