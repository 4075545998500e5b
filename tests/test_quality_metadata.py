"""Fooocus's sampling controls in image metadata: written in Fooocus's keys and forms, read back by our reader
and readable the way Fooocus's own parser reads them (its key table and `eval` of the tuples, emulated here
with `ast.literal_eval`)."""

from __future__ import annotations

import ast
import json

import pytest

from pipelines.outputs.fooocus_controls import control_request_fields
from pipelines.outputs.metadata import infotext
from pipelines.outputs.reading import parse_infotext, read_metadata
from pipelines.types import ImageParams
from tests.test_metadata import FOOOCUS_A1111, FOOOCUS_JSON, FOOOCUS_LABELS, png_with_text

# Fooocus's A1111-scheme keys for these controls (modules/meta_parser.py, A1111MetadataParser.fooocus_to_a1111)
FOOOCUS_READS = {"Sharpness": "sharpness", "ADM Guidance": "adm_guidance", "Adaptive CFG": "adaptive_cfg",
                 "FreeU": "freeu", "Refiner Swap Method": "refiner_swap_method"}  # fmt: skip

BASE = dict(
    prompt="a fox, misty dawn",
    negative_prompt="blurry",
    steps=30,
    sampler="DPM++ 2M SDE",
    scheduler="Karras",
    cfg_scale=9.0,
    seed=7,
    width=1024,
    height=1024,
    model="xl",
    model_hash="0123456789",
)
TUNED = ImageParams(
    **BASE,
    sharpness=2.0,
    adaptive_cfg=7.0,
    adm_positive=1.5,
    adm_negative=0.8,
    adm_end=0.3,
    freeu=True,
    freeu_b1=1.1,
    freeu_b2=1.2,
    freeu_s1=0.9,
    freeu_s2=0.2,
    refiner="xl-refiner",
    refiner_switch=0.8,
    refiner_swap="joint",
    prompt_expansion="a fox, misty dawn",
    expansion_model="fooocus_expansion",
    prompt_template="a fox",
)


def test_written_in_fooocus_keys_and_forms():
    params = parse_infotext(infotext(TUNED))
    assert params["Sharpness"] == 2 and params["ADM Guidance"] == "(1.5, 0.8, 0.3)" and params["Adaptive CFG"] == 7
    assert params["FreeU"] == "(1.1, 1.2, 0.9, 0.2)" and params["Refiner Swap Method"] == "joint"
    assert params["Fooocus V2 Expansion"] == "a fox, misty dawn"
    # what Fooocus's own parser does with them: float() of numbers, eval() of the tuples
    fooocus = {FOOOCUS_READS[k]: v for k, v in params.items() if k in FOOOCUS_READS}
    assert float(fooocus["sharpness"]) == 2.0 and float(fooocus["adaptive_cfg"]) == 7.0
    assert ast.literal_eval(fooocus["adm_guidance"]) == (1.5, 0.8, 0.3)
    assert ast.literal_eval(fooocus["freeu"]) == (1.1, 1.2, 0.9, 0.2)
    assert fooocus["refiner_swap_method"] in ("joint", "separate", "vae")


def test_our_reader_restores_them_from_the_infotext_alone():
    fields = control_request_fields(parse_infotext(infotext(TUNED)), "easel")
    assert fields == {
        "sharpness": 2.0,
        "adaptive_cfg": 7.0,
        "adm_positive": 1.5,
        "adm_negative": 0.8,
        "adm_end": 0.3,
        "freeu": True,
        "freeu_b1": 1.1,
        "freeu_b2": 1.2,
        "freeu_s1": 0.9,
        "freeu_s2": 0.2,
        "refiner_swap": "joint",
        "prompt_expansion": "Fooocus V2",
    }


def test_the_exact_record_round_trips(tmp_path):
    from PIL import Image

    from pipelines.outputs.metadata import encode_image

    data = encode_image(Image.new("RGB", (8, 8)), TUNED, None, "png")
    meta = read_metadata(data)
    assert ImageParams.from_dict(meta.image_params) == TUNED


def test_an_image_made_without_them_says_nothing_of_them():
    text = infotext(ImageParams(**BASE))
    for key in (*FOOOCUS_READS, "Fooocus V2 Expansion"):
        assert key not in text
    # and reads back as off; an older Easel image with a refiner was made the `separate` way
    fields = control_request_fields(parse_infotext(text), "easel")
    assert (fields["sharpness"], fields["adaptive_cfg"], fields["adm_end"], fields["freeu"]) == (0, 0, 0, False)
    assert fields["refiner_swap"] == "separate" and fields["prompt_expansion"] == ""
    assert ImageParams.from_dict({**ImageParams(**BASE).to_dict()}).sharpness == 0.0


@pytest.mark.parametrize(
    "png",
    [
        png_with_text(parameters=FOOOCUS_A1111, fooocus_scheme="a1111"),
        png_with_text(parameters=json.dumps(FOOOCUS_JSON), fooocus_scheme="fooocus"),
        png_with_text(parameters=json.dumps(FOOOCUS_LABELS), fooocus_scheme="fooocus"),
    ],
    ids=["a1111-scheme", "json-scheme", "label-keys"],
)
def test_fooocus_images_read_as_fooocus_meant_them(png):
    meta = read_metadata(png)
    fields = control_request_fields(meta.params, meta.source_app)
    assert (fields["sharpness"], fields["adm_positive"], fields["adm_negative"], fields["adm_end"]) == (2, 1.5, 0.8, 0.3)
    assert fields["adaptive_cfg"] == 7.0 and fields["refiner_swap"] == "joint"  # what Fooocus leaves out
    assert fields["freeu"] is False and fields["prompt_expansion"] == "Fooocus V2"


def test_fooocus_json_with_every_control():
    data = {
        **FOOOCUS_JSON,
        "adaptive_cfg": 5.5,
        "freeu": "(1.01, 1.02, 0.99, 0.95)",
        "refiner_swap_method": "separate",
        "prompt_expansion": "a cat, warm light",
        "styles": "['Fooocus Enhance']",
    }
    meta = read_metadata(png_with_text(parameters=json.dumps(data), fooocus_scheme="fooocus"))
    fields = control_request_fields(meta.params, meta.source_app)
    assert fields["adaptive_cfg"] == 5.5 and fields["refiner_swap"] == "separate"
    assert fields["freeu"] and (fields["freeu_b1"], fields["freeu_s2"]) == (1.01, 0.95)
    assert fields["prompt_expansion"] == "Fooocus V2"  # the expansion key says it was on
    labels = {**FOOOCUS_LABELS, "CFG Mimicking from TSNR": 4.0}
    meta = read_metadata(png_with_text(parameters=json.dumps(labels), fooocus_scheme="fooocus"))
    assert control_request_fields(meta.params, meta.source_app)["adaptive_cfg"] == 4.0
