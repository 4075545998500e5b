"""The UI's pure functions: form values <-> GenerationRequest, image metadata -> form, the size and mode tables."""

from __future__ import annotations

import json

import pytest

from pipelines.config import REPO_ROOT
from pipelines.errors import InvalidRequest
from pipelines.outputs.metadata import encode_image
from pipelines.outputs.reading import read_metadata
from pipelines.performance import PerformanceTable
from pipelines.prompts.styles import StyleLibrary
from pipelines.samplers import SamplerTable
from pipelines.types import Architecture, GenerationRequest, ImageParams, LoraRef, ModelKind, SeedBehavior
from tests.test_metadata import A1111_110, FOOOCUS_A1111, FOOOCUS_JSON, png_with_text
from ui.form import modes
from ui.form.fields import (
    FormTables,
    default_form,
    fields_from_metadata,
    fields_from_record,
    form_from_request,
    loras_from_slots,
    request_from_form,
    restore,
    slots_from_loras,
)
from ui.form.modes import CUSTOM
from ui.form.sizes import AspectRatios, Size

SDXL, SD1 = Architecture.SDXL, Architecture.SD1


def engine_tables() -> FormTables:
    """The tables a running app has: the engine's mode table, sampler table and the shipped style library."""
    samplers = SamplerTable.load()
    return FormTables(AspectRatios.load(), PerformanceTable.load(samplers=samplers), samplers, StyleLibrary(REPO_ROOT / "styles"))


@pytest.fixture(scope="module")
def tables() -> FormTables:
    return engine_tables()


INSTALLED = {
    (ModelKind.CHECKPOINT, "juggernautXL_v8Rundiffusion"): SDXL,
    (ModelKind.CHECKPOINT, "dreamshaper_8"): SD1,
    (ModelKind.CHECKPOINT, "sdxl_refiner"): Architecture.SDXL_REFINER,
    (ModelKind.LORA, "add_detail"): SD1,
    (ModelKind.LORA, "detail"): SDXL,
    (ModelKind.VAE, "sdxl_vae"): SDXL,
}


def lookup(name: str, kind: ModelKind = ModelKind.CHECKPOINT):
    """Stands in for the registry: a few installed files, found by exact name or file name."""
    stem = name.removesuffix(".safetensors")
    return (stem, INSTALLED[(kind, stem)]) if (kind, stem) in INSTALLED else None


# ------------------------------------------------------------------------------------ form <-> request


@pytest.mark.parametrize(
    "request_, architecture",
    [
        (GenerationRequest(prompt="a fox", width=1152, height=896, steps=30, performance="Speed"), SDXL),
        (
            GenerationRequest(
                prompt="a fox",
                width=832,
                height=1216,
                steps=60,
                performance="Quality",
                seed=7,
                seed_behavior=SeedBehavior.FIXED,
                image_count=4,
                cfg_scale=4.5,
                sampler="Euler a",
                scheduler="Automatic",
                clip_skip=2,
                output_format="webp",
            ),
            SDXL,
        ),
        (GenerationRequest(prompt="x", negative_prompt="y", width=512, height=512, steps=17, seed=12345), SD1),
        (GenerationRequest(prompt="custom size", width=64, height=96, steps=3, model="dreamshaper_8"), SD1),
        (
            GenerationRequest(
                prompt="odd",
                width=1000,
                height=1000,
                steps=20,
                styles=("A", "B"),
                loras=(LoraRef("detail", 0.6),),
                refiner="r",
                refiner_switch=0.7,
                vae="v",
            ),
            SDXL,
        ),
        (
            GenerationRequest(
                prompt="fast",
                width=1152,
                height=896,
                performance="Lightning",
                steps=4,
                cfg_scale=1.0,
                sampler="Euler",
                scheduler="SGM Uniform",
                skip_invalid_loras=True,
                loras=(LoraRef("a", -1.5), LoraRef("b", 0.25, enabled=False), LoraRef("c")),
            ),
            SDXL,
        ),
    ],
)
def test_request_survives_form_round_trip(tables, request_, architecture):
    form = {**default_form(tables, architecture), **form_from_request(request_, tables, architecture)}
    assert request_from_form(form, tables) == request_


def test_form_values_become_the_request(tables):
    form = default_form(tables, SDXL)
    form.update(
        prompt="a lighthouse",
        aspect_ratio="704x1408",
        performance="Quality",
        steps=12,
        random_seed=True,
        seed=99,
        image_count=3.0,
        cfg_scale=5,
        seed_behavior="random",
    )
    request = request_from_form(form, tables)
    assert (request.width, request.height) == (704, 1408)
    assert request.steps == 60 and request.performance == "Quality"  # the mode's steps win over the slider
    assert request.seed == -1 and request.image_count == 3 and request.cfg_scale == 5.0
    assert request.seed_behavior is SeedBehavior.RANDOM
    form.update(performance=CUSTOM, random_seed=False, custom_size=True, width=640, height=64)
    request = request_from_form(form, tables)
    assert request.steps == 12 and request.performance is None and request.seed == 99
    assert (request.width, request.height) == (640, 64)


def test_blank_numbers_fall_back_and_bad_values_name_the_field(tables):
    form = {**default_form(tables, SDXL), "random_seed": False, "seed": None, "cfg_scale": None, "model": ""}
    request = request_from_form(form, tables)
    assert request.seed == GenerationRequest().seed and request.cfg_scale == 7.0 and request.model is None
    with pytest.raises(InvalidRequest) as bad:
        request_from_form({**form, "image_count": 2.5}, tables)
    assert bad.value.field == "image_count"
    with pytest.raises(InvalidRequest, match="Unknown performance mode 'Turbo'. Known: Quality, Speed"):
        request_from_form({**form, "performance": "Turbo"}, tables)
    with pytest.raises(InvalidRequest, match="not a size") as bad:
        request_from_form({**form, "aspect_ratio": "wide"}, tables)
    assert bad.value.field == "aspect_ratio"


def test_sizes_outside_the_list_become_custom(tables):
    values = form_from_request(GenerationRequest(width=1024, height=1024), tables, SDXL)
    assert values["aspect_ratio"] == "1024x1024" and values["custom_size"] is False
    values = form_from_request(GenerationRequest(width=1024, height=1024), tables, SD1)
    assert values["custom_size"] is True and (values["width"], values["height"]) == (1024, 1024)
    assert "aspect_ratio" not in values  # the current choice stays; only the custom size is used


# ------------------------------------------------------------------------------------ restoring images


def our_png(request: GenerationRequest, **params) -> bytes:
    base = dict(
        prompt="a cat, cinematic",
        negative_prompt="blurry",
        steps=30,
        sampler="DPM++ 2M SDE",
        scheduler="Karras",
        cfg_scale=4.0,
        seed=1001,
        width=896,
        height=1152,
        model="juggernautXL_v8Rundiffusion",
        model_hash="aeb7e9e689",
        prompt_template="a cat",
        styles=("Cinematic - Film Still",),
        performance="Speed",
        batch_index=1,
    )
    base.update(params)
    from PIL import Image

    return encode_image(Image.new("RGB", (8, 8)), ImageParams(**base), request, "png")


def test_our_png_restores_the_request_with_that_images_seed(tables):
    sent = GenerationRequest(
        prompt="a cat",
        negative_prompt="blurry",
        styles=("Cinematic - Film Still", "Mood - Foggy Morning"),
        performance="Speed",
        width=896,
        height=1152,
        steps=30,
        cfg_scale=4.0,
        sampler="DPM++ 2M SDE",
        scheduler="Karras",
        seed=-1,
        image_count=3,
        seed_behavior=SeedBehavior.RANDOM,
    )
    meta = read_metadata(our_png(sent))
    result = restore(fields_from_metadata(meta), tables, lookup, SD1, "Easel")
    assert result.notes == []
    form = {**default_form(tables, SD1), **result.values}
    again = request_from_form(form, tables)
    # exactly what was sent, except the seed: this image's own, so a re-run starts with this image
    assert again == sent.replace(seed=1001, model="juggernautXL_v8Rundiffusion")
    assert result.values["random_seed"] is False and result.values["aspect_ratio"] == "896x1152"


def test_our_png_without_the_request_uses_the_typed_prompt(tables):
    meta = read_metadata(our_png(None))
    values = restore(fields_from_metadata(meta), tables, lookup, SDXL).values
    assert values["prompt"] == "a cat" and values["styles"] == ["Cinematic - Film Still"]
    assert values["performance"] == "Speed" and values["steps"] == 30


def test_a1111_png_restores_what_it_says(tables):
    meta = read_metadata(png_with_text(parameters=A1111_110))
    result = restore(fields_from_metadata(meta), tables, lookup, SDXL, "A1111")
    v = result.values
    assert v["prompt"] == 'masterpiece, best quality, 1girl, "smile", solo\n<lora:add_detail:0.6>'
    assert v["negative_prompt"] == "lowres, bad anatomy, (worst quality:1.4)"
    assert (v["steps"], v["performance"], v["sampler"], v["scheduler"]) == (28, CUSTOM, "DPM++ 2M", "Karras")
    assert (v["cfg_scale"], v["seed"], v["random_seed"], v["clip_skip"]) == (6.5, 3456789012, False, 2)
    assert v["aspect_ratio"] == "832x1216" and v["custom_size"] is False
    assert "model" not in v and "styles" not in v
    assert any("ponyDiffusionV6XL" in note and "not installed" in note for note in result.notes)


@pytest.mark.parametrize(
    "png",
    [
        png_with_text(parameters=FOOOCUS_A1111, fooocus_scheme="a1111"),
        png_with_text(parameters=json.dumps(FOOOCUS_JSON), fooocus_scheme="fooocus"),
    ],
    ids=["a1111-scheme", "json-scheme"],
)
def test_fooocus_png_restores_mode_styles_and_sampler(tables, png):
    meta = read_metadata(png)
    result = restore(fields_from_metadata(meta), tables, lookup, SD1, "Fooocus")
    v = result.values
    assert v["model"] == "juggernautXL_v8Rundiffusion"  # installed: picked, and its SDXL size list used
    assert (v["sampler"], v["scheduler"]) == ("DPM++ 2M SDE", "Karras")
    assert (v["performance"], v["steps"], v["cfg_scale"], v["seed"]) == ("Speed", 30, 4.0, 1234567890)
    assert v["aspect_ratio"] == "1152x896" and v["styles"] == []  # Fooocus's own styles are not in our library
    assert v["prompt"].startswith("a cat") and "cinematic" not in v["prompt"]  # the raw prompt
    # "Fooocus V2" is the prompt expansion, not a style: it asks for an expansion model, none is installed here
    assert "not in the style library, left out: Fooocus Enhance" in result.notes[0]
    # its LoRA slot: read, and explained since the file is not installed
    assert result.notes[1] == "LoRA 'sd_xl_offset_example-lora_1.0' is not installed; its slot is left empty."
    assert result.notes[2].startswith("Prompt expansion (Fooocus V2) is not installed here")
    assert v["lora_1_name"] == "None" and len(result.notes) == 3 and v["prompt_expansion"] == ""
    # Fooocus's sampling controls: as written, and Fooocus's meaning of what it leaves out (adaptive CFG 7, joint)
    assert (v["sharpness"], v["adm_positive"], v["adm_negative"], v["adm_end"]) == (2, 1.5, 0.8, 0.3)
    assert (v["adaptive_cfg"], v["refiner_swap"], v["freeu"]) == (7.0, "joint", False)


def test_unknown_sampler_and_mode_are_explained_not_restored(tables):
    fields = {"prompt": "p", "sampler": "Restart", "scheduler": "Karras", "steps": 8, "performance": "Turbo"}
    result = restore(fields, tables, lookup, SDXL)
    assert "sampler" not in result.values and result.values["performance"] == CUSTOM and result.values["steps"] == 8
    assert any("Unknown sampler 'Restart'" in n for n in result.notes)
    assert any("'Turbo' is not available" in n for n in result.notes)


def test_history_record_without_request(tables):
    params = ImageParams(
        prompt="styled a dog",
        negative_prompt="",
        steps=9,
        sampler="Euler",
        scheduler="Automatic",
        cfg_scale=3.0,
        seed=5,
        width=512,
        height=512,
        model="dreamshaper_8",
        model_hash="",
        prompt_template="a dog",
    )
    values = restore(fields_from_record(params, None), tables, lookup, SDXL).values
    assert values["prompt"] == "a dog" and values["model"] == "dreamshaper_8" and values["aspect_ratio"] == "512x512"
    assert values["seed"] == 5 and values["steps"] == 9


# ------------------------------------------------------------------------------------------- tables


def test_aspect_ratio_lists_fit_each_architecture():
    sizes = AspectRatios.load()
    sdxl = sizes.sizes(SDXL)
    assert sdxl[0] == Size(704, 1408) and sdxl[-1] == Size(1728, 576) and Size(1024, 1024) in sdxl
    assert all(0.85 <= s.width * s.height / 1024**2 <= 1.2 for s in sdxl)
    assert all(0.85 <= s.width * s.height / 512**2 <= 1.1 for s in sizes.sizes(SD1))
    assert sizes.sizes(Architecture.SDXL_REFINER) == sdxl and sizes.sizes(Architecture.UNKNOWN) == sdxl
    assert Size(512, 512) in sizes.sizes(SD1) and sizes.default(SD1) == Size(512, 512)
    assert ("1152×896  ∣  9:7", "1152x896") in sizes.choices(SDXL)
    assert Size(1728, 576).ratio == "3:1" and Size.parse("1024*1024") == Size(1024, 1024)
    assert sizes.pick(SD1, "1152x896") == "512x512" and sizes.pick(SDXL, "1152x896") == "1152x896"
    assert sizes.pick(SDXL, None) == sizes.default(SDXL).key


@pytest.mark.parametrize(
    "data, message",
    [
        ({"families": {"a": {"default": "64x64", "sizes": ["64x64", "100x64"]}}}, "multiples of 8"),
        ({"families": {"a": {"default": "128x128", "sizes": ["64x64"]}}}, "not one of its sizes"),
        ({"families": {"a": {"default": "64x64", "sizes": ["64x64"]}}, "architectures": {}}, "must map to one of a"),
        ({"families": {"a": {"default": "big", "sizes": ["64x64"]}}}, "'big' is not a size"),
        ({}, "needs a `families` mapping"),
    ],
)
def test_bad_aspect_ratio_tables_are_refused(data, message):
    with pytest.raises(ValueError, match=message):
        AspectRatios(data)


def test_modes_are_the_engines(tables):
    table = tables.performance
    assert modes.choices(table, {}) == [(m, m) for m in table.names()] + [(CUSTOM, CUSTOM)]
    marked = modes.choices(table, {"Lightning": "Lightning needs an SDXL model."})
    assert ("Lightning (unavailable)", "Lightning") in marked and ("Speed", "Speed") in marked
    # every mode sets CPU Turbo's approximations too (off unless it names them), so leaving Turbo turns them off
    assert modes.mode_fields(table, "Quality") == {"steps": 60, "step_cache": 0, "token_merging": 0.0, "fast_decode": False}
    assert modes.mode_fields(table, CUSTOM) == {}
    assert modes.mode_fields(table, "lightning") == {
        **{"steps": 4, "cfg_scale": 1.0, "sampler": "Euler", "scheduler": "SGM Uniform"},
        **{"step_cache": 0, "token_merging": 0.0, "fast_decode": False},
    }
    assert modes.canonical(table, "extreme speed") == "Extreme Speed" and modes.canonical(table, "Turbo") is None
    assert modes.matching(table, "Speed", {"steps": 30}) == "Speed"
    assert modes.matching(table, "Speed", {"steps": 31}) == CUSTOM
    assert modes.matching(table, "Lightning", {"steps": 4, "cfg_scale": 7.0}) == CUSTOM
    notes = modes.notes_markdown(table, "Lightning", {"Hyper-SD": "no <file>"})
    assert notes.startswith("**Lightning**: 4 steps") and "*Hyper-SD is unavailable*: no &lt;file&gt;" in notes
    with pytest.raises(InvalidRequest, match="Unknown performance mode"):
        modes.mode_fields(table, "Turbo")


def test_lora_slots_map_to_the_request_both_ways():
    slots = {
        "lora_1_enabled": True,
        "lora_1_name": "None",
        "lora_1_weight": 0.3,
        "lora_2_enabled": False,
        "lora_2_name": "paper",
        "lora_2_weight": -0.5,
        "lora_3_enabled": True,
        "lora_3_name": "detail",
        "lora_3_weight": None,
    }
    assert loras_from_slots(slots) == (LoraRef("paper", -0.5, enabled=False), LoraRef("detail", 1.0))
    back = slots_from_loras([LoraRef("paper", -0.5, enabled=False), {"name": "detail", "weight": 2}])
    assert back["lora_1_name"] == "paper" and back["lora_1_enabled"] is False and back["lora_1_weight"] == -0.5
    assert back["lora_2_name"] == "detail" and back["lora_2_weight"] == 2.0
    assert [back[f"lora_{n}_name"] for n in (3, 4, 5)] == ["None"] * 3 and back["lora_5_weight"] == 1.0
    with pytest.raises(InvalidRequest) as bad:
        loras_from_slots({"lora_1_name": "paper", "lora_1_weight": "heavy"})
    assert bad.value.field == "lora_1_weight"


def test_refiner_vae_and_loras_are_restored_when_installed(tables):
    fields = {
        "prompt": "p",
        "refiner": "sdxl_refiner.safetensors",
        "refiner_switch": 0.7,
        "vae": "sdxl_vae.safetensors",
        "loras": [
            {"name": "add_detail.safetensors", "weight": 0.5},
            {"name": "gone", "weight": 1.0},
            {"name": "detail", "weight": -1, "enabled": False},
        ],
    }
    result = restore(fields, tables, lookup, SDXL)
    v = result.values
    assert (v["refiner"], v["refiner_switch"], v["vae"]) == ("sdxl_refiner", 0.7, "sdxl_vae")
    assert (v["lora_1_name"], v["lora_1_weight"], v["lora_2_name"], v["lora_2_enabled"]) == ("add_detail", 0.5, "detail", False)
    assert v["lora_3_name"] == "None" and result.notes == ["LoRA 'gone' is not installed; its slot is left empty."]
    request = request_from_form({**default_form(tables, SDXL), **v}, tables)
    assert request.refiner == "sdxl_refiner" and request.vae == "sdxl_vae"
    assert request.loras == (LoraRef("add_detail", 0.5), LoraRef("detail", -1.0, enabled=False))
    gone = restore({"refiner": "dreamshaper_8", "vae": "missing_vae"}, tables, lookup, SDXL)
    assert gone.values["refiner"] == "None" and gone.values["vae"] == "Automatic"
    assert gone.notes == [
        "Refiner 'dreamshaper_8' is SD 1.x, not an SDXL model; no refiner is used.",
        "VAE 'missing_vae' is not installed; the model's own VAE is used.",
    ]
    form = {**default_form(tables, SDXL), "refiner": "None", "vae": "Automatic"}
    assert request_from_form(form, tables).refiner is None and request_from_form(form, tables).vae is None


def test_a1111_restore_empties_the_lora_slots(tables):
    """A1111's LoRAs are <lora:…> tags in the prompt, which is restored as is: slots would apply them twice."""
    v = restore(fields_from_metadata(read_metadata(png_with_text(parameters=A1111_110))), tables, lookup, SDXL).values
    assert "<lora:add_detail:0.6>" in v["prompt"] and v["lora_1_name"] == "None"
