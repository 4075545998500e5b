"""Metadata: A1111 infotext written and parsed like A1111 does, our JSON round-trips, foreign files are read."""

from __future__ import annotations

import io
import json
import random
import threading

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pipelines.errors import InvalidRequest
from pipelines.outputs.metadata import encode_image, infotext
from pipelines.outputs.reading import (
    decode_user_comment,
    parse_infotext,
    parse_name_list,
    read_metadata,
    request_fields_from_infotext,
    split_hashed_name,
)
from pipelines.types import AppliedLora, GenerationRequest, ImageParams, LoraRef


def make_params(**changes) -> ImageParams:
    base = dict(
        prompt="a cat on a mat",
        negative_prompt="blurry",
        steps=30,
        sampler="DPM++ 2M",
        scheduler="Karras",
        cfg_scale=7.0,
        seed=123,
        width=512,
        height=768,
        model="dreamshaper_8",
        model_hash="879db523c30d3b9017143d56705015e15a2cb5628762c11d086fed9538abd7fd",
    )
    base.update(changes)
    return ImageParams(**base)


def png_with_text(**chunks: str) -> bytes:
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(out, "PNG", pnginfo=info)
    return out.getvalue()


def jpeg_with_exif(exif: Image.Exif) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(out, "JPEG", exif=exif)
    return out.getvalue()


# ------------------------------------------------------------------------------------------ infotext


def test_infotext_follows_a1111_layout():
    vae_hash = "63aeecb90ff7bc1c115395962d3e803571385b61938377bc7089b36e81e92e2e"
    loras = (AppliedLora("add_detail", 0.6, "7c6bad76eb54"), AppliedLora("film:grain, v2", 1.0, "0123456789abcdef"))
    params = make_params(clip_skip=2, vae="sdxl_vae", vae_hash=vae_hash, loras=loras)
    text = infotext(params)
    lines = text.split("\n")
    assert lines[0] == "a cat on a mat"
    assert lines[1] == "Negative prompt: blurry"
    assert lines[2] == (
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, Size: 512x768, "
        "Model hash: 879db523c3, Model: dreamshaper_8, VAE hash: 63aeecb90f, VAE: sdxl_vae, Clip skip: 2, "
        'Lora hashes: "add_detail: 7c6bad76eb54, filmgrain v2: 0123456789ab", '
        'Lora weights: "add_detail: 0.6, filmgrain v2: 1", Version: Easel 0.1.0'
    )


def test_infotext_omissions_and_numbers():
    text = infotext(make_params(negative_prompt="", cfg_scale=7.5, clip_skip=1))
    assert "Negative prompt" not in text
    assert "Clip skip" not in text and "Lora hashes" not in text and "VAE" not in text
    assert "CFG scale: 7.5," in text
    assert text.split("\n")[0] == "a cat on a mat"


ROUND_TRIP = [
    make_params(),
    make_params(prompt='a "quoted" word, with commas: and colons', negative_prompt='bad, "worse": 1.2'),
    make_params(prompt="first line\nsecond line\n\nfourth, after a blank", negative_prompt="neg one\nneg two"),
    make_params(prompt="猫が座っている, ünïcödé ✓ 🐈", negative_prompt="", model="モデル, v2"),
    make_params(prompt="", negative_prompt="only a negative"),
    make_params(cfg_scale=4.25, seed=4294967295, steps=1, width=1152, height=896, model="sdxl/juggernaut: X"),
    make_params(sampler="Euler a", scheduler="Automatic", model='odd "name"', clip_skip=3),
    make_params(prompt="(masterpiece:1.2), <lora:add_detail:0.5>, [cat|dog]", negative_prompt="\\esc\\ back\\slash"),
]


@pytest.mark.parametrize("params", ROUND_TRIP)
def test_infotext_round_trip(params):
    parsed = parse_infotext(infotext(params))
    assert parsed["Prompt"] == params.prompt
    assert parsed["Negative prompt"] == params.negative_prompt
    assert parsed["Steps"] == params.steps
    assert parsed["Sampler"] == params.sampler
    assert parsed["Schedule type"] == params.scheduler
    assert parsed["CFG scale"] == params.cfg_scale
    assert parsed["Seed"] == params.seed
    assert (parsed["Size-1"], parsed["Size-2"]) == (params.width, params.height)
    assert parsed["Model"] == params.model
    assert parsed["Model hash"] == params.model_hash[:10]
    assert parsed.get("Clip skip", 1) == params.clip_skip
    assert parsed["Version"] == "Easel 0.1.0"
    fields = request_fields_from_infotext(infotext(params))
    assert fields == {
        "prompt": params.prompt,
        "negative_prompt": params.negative_prompt,
        "steps": params.steps,
        "sampler": params.sampler,
        "scheduler": params.scheduler,
        "cfg_scale": params.cfg_scale,
        "seed": params.seed,
        "width": params.width,
        "height": params.height,
        "model": params.model,
        "clip_skip": params.clip_skip,
        "step_cache": 0,  # CPU Turbo's switches: off unless the infotext names them
        "token_merging": 0.0,
        "fast_decode": False,
    }


def test_styles_and_loras_round_trip():
    params = make_params(
        styles=("Fooocus V2", "Artist's, Cinematic"),
        loras=(AppliedLora("detail", 0.8, "aaaabbbbcccc"), AppliedLora("sub/style", -0.25, "ddddeeeeffff")),
    )
    parsed = parse_infotext(infotext(params))
    assert parsed["Styles"] == ["Fooocus V2", "Artist's, Cinematic"]
    assert parse_name_list(parsed["Lora hashes"]) == [("detail", "aaaabbbbcccc"), ("sub/style", "ddddeeeeffff")]
    assert parse_name_list(parsed["Lora weights"]) == [("detail", "0.8"), ("sub/style", "-0.25")]


def test_hash_like_values_stay_text():
    parsed = parse_infotext(
        "p\nSteps: 20, Seed: 5, Size: 64x64, Model hash: 1234567890, Model: 2024, Version: 1.10, "
        "Refiner: 2025, Refiner switch at: 0.8, Lora weights: 1"
    )
    assert parsed["Model hash"] == "1234567890" and parsed["Model"] == "2024" and parsed["Version"] == "1.10"
    assert parsed["Refiner"] == "2025" and parsed["Refiner switch at"] == 0.8 and parsed["Lora weights"] == "1"


def test_refiner_and_vae_fields_as_a1111_writes_them():
    refiner_hash = "7440042bbdc8a24813002c09b6b69b64dc90fded4472613437b7f55f9b7d9c5f"
    params = make_params(
        vae="sdxl_vae.safetensors",
        vae_hash="235745af8d86bf4a4c1b5b4f529868b37019a10f7c0b2e79ad0abca3a22bc6e1",
        refiner="sd_xl_refiner_1.0",
        refiner_hash=refiner_hash,
        refiner_switch=0.8,
    )
    line = infotext(params).split("\n")[-1]
    # A1111 1.6+: `Refiner: <name> [<sha256[:10]>], Refiner switch at: 0.8`; the VAE as a file name
    assert "VAE hash: 235745af8d, VAE: sdxl_vae.safetensors, " in line
    assert "Refiner: sd_xl_refiner_1.0 [7440042bbd], Refiner switch at: 0.8, " in line
    parsed = parse_infotext(infotext(params))
    assert parsed["Refiner"] == "sd_xl_refiner_1.0 [7440042bbd]" and parsed["Refiner switch at"] == 0.8
    assert split_hashed_name(parsed["Refiner"]) == ("sd_xl_refiner_1.0", "7440042bbd")
    fields = request_fields_from_infotext(infotext(params))
    assert (fields["vae"], fields["refiner"], fields["refiner_switch"]) == ("sdxl_vae.safetensors", "sd_xl_refiner_1.0", 0.8)
    # without a hash (an unknown file) the name stands alone
    assert "Refiner: sub/my refiner, " in infotext(make_params(refiner="sub/my refiner", refiner_switch=0.5))


def test_split_hashed_name():
    assert split_hashed_name("model [0123abcdef]") == ("model", "0123abcdef")
    assert split_hashed_name("odd [name] v2") == ("odd [name] v2", None)  # not a hash at the end
    assert split_hashed_name("  plain  ") == ("plain", None)
    assert split_hashed_name(None) == ("", None)


def test_no_vae_or_refiner_words_are_not_restored():
    for text in ("VAE: Default (model)", "VAE: None", "Refiner: None, Refiner switch at: 0.8", "VAE: Automatic"):
        fields = request_fields_from_infotext(f"p\nSteps: 20, Seed: 5, Size: 64x64, {text}")
        assert "vae" not in fields and "refiner" not in fields and "refiner_switch" not in fields, text


# ---------------------------------------------------------------------------------- real-world samples

A1111_110 = (
    'masterpiece, best quality, 1girl, "smile", solo\n<lora:add_detail:0.6>\n'
    "Negative prompt: lowres, bad anatomy, (worst quality:1.4)\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3456789012, Size: 832x1216, "
    "Model hash: 529c72f6c3, Model: ponyDiffusionV6XL, VAE hash: 735e4c3a44, VAE: sdxl_vae.safetensors, "
    "Denoising strength: 0.4, Clip skip: 2, Hires upscale: 1.5, Hires steps: 12, Hires upscaler: 4x-UltraSharp, "
    'Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "easynegative: c74b4e810b03", Version: v1.10.1'
)
A1111_OLD = (
    "girl with an artist's beret, determined, blue eyes, desert scene\n"
    "Negative prompt: ugly, fat, obese\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b, "
    "Model: v1-5-pruned-emaonly, Version: v1.5.1"
)
FORGE_UNQUOTED_JSON = (
    "1girl, solo\nNegative prompt: 3d\n"
    "Steps: 24, Sampler: Euler a, CFG scale: 7, Seed: 2340366286, Size: 832x1216, Model hash: 529c72f6c3, "
    'Model: mfcgPDXL_v10, Hashes: {"vae": "63aeecb90f", "lora:EPhsrKafka": "5a3385485b"}, Version: f0.0.17v1.8.0rc'
)
FOOOCUS_A1111 = (
    "a cat sitting on a windowsill, cinematic, highly detailed, sharp focus\n"
    "Negative prompt: (worst quality, low quality:1.4)\n"
    "Steps: 30, Sampler: DPM++ 2M SDE Karras, Seed: 1234567890, Size: 1152x896, CFG scale: 4, Sharpness: 2, "
    'ADM Guidance: "(1.5, 0.8, 0.3)", Model: juggernautXL_v8Rundiffusion, Model hash: aeb7e9e689, '
    "Performance: Speed, Scheduler: karras, VAE: Default (model), Raw prompt: a cat sitting on a windowsill, "
    "Raw negative prompt: , Styles: \"['Fooocus V2', 'Fooocus Enhance', 'Fooocus Sharp']\", "
    'Lora hashes: "sd_xl_offset_example-lora_1.0: 4852686128", Lora weights: "sd_xl_offset_example-lora_1.0: 0.1", '
    "Version: Fooocus v2.5.5"
)
FOOOCUS_JSON = {
    "adm_guidance": "(1.5, 0.8, 0.3)",
    "base_model": "juggernautXL_v8Rundiffusion.safetensors",
    "base_model_hash": "aeb7e9e689",
    "full_negative_prompt": ["(worst quality, low quality:1.4)"],
    "full_prompt": ["a cat", "cinematic, highly detailed"],
    "guidance_scale": 4.0,
    "loras": [["sd_xl_offset_example-lora_1.0.safetensors", 0.1, "4852686128"]],
    "negative_prompt": "",
    "performance": "Speed",
    "prompt": "a cat",
    "refiner_model": "None",
    "resolution": "(1152, 896)",
    "sampler": "dpmpp_2m_sde_gpu",
    "scheduler": "karras",
    "seed": "1234567890",
    "sharpness": 2.0,
    "steps": 30,
    "styles": "['Fooocus V2', 'Fooocus Enhance']",
    "vae": "Default (model)",
    "version": "Fooocus v2.5.5",
}
FOOOCUS_LABELS = {  # Fooocus 2.1's label-keyed log
    "Prompt": "a red fox",
    "Negative Prompt": "cartoon",
    "Fooocus V2 Expansion": "a red fox, intricate",
    "Styles": "['Fooocus V2', 'Fooocus Photograph']",
    "Performance": "Quality",
    "Resolution": "(1024, 1024)",
    "Sharpness": 2.0,
    "Guidance Scale": 7.0,
    "ADM Guidance": "(1.5, 0.8, 0.3)",
    "Base Model": "sd_xl_base_1.0_0.9vae.safetensors",
    "Refiner Model": "None",
    "Refiner Switch": 0.8,
    "Sampler": "dpmpp_2m_sde_gpu",
    "Scheduler": "karras",
    "Seed": 77,
    "LoRA 1": "sd_xl_offset_example-lora_1.0.safetensors : 0.1",
    "Version": "v2.1.865",
}


def test_parses_a1111_110_png():
    meta = read_metadata(png_with_text(parameters=A1111_110))
    assert meta.source_app == "a1111"
    assert meta.infotext == A1111_110
    p = meta.params
    assert p["Prompt"] == 'masterpiece, best quality, 1girl, "smile", solo\n<lora:add_detail:0.6>'
    assert p["Negative prompt"] == "lowres, bad anatomy, (worst quality:1.4)"
    assert (p["Steps"], p["CFG scale"], p["Seed"], p["Size-1"], p["Size-2"]) == (28, 6.5, 3456789012, 832, 1216)
    assert p["Lora hashes"] == "add_detail: 7c6bad76eb54" and p["Hires upscale"] == 1.5
    assert p["VAE"] == "sdxl_vae.safetensors" and p["Version"] == "v1.10.1"
    fields = meta.request_fields()
    assert fields["sampler"] == "DPM++ 2M" and fields["scheduler"] == "Karras" and fields["clip_skip"] == 2
    assert fields["model"] == "ponyDiffusionV6XL" and fields["width"] == 832
    assert fields["vae"] == "sdxl_vae.safetensors" and "refiner" not in fields


def test_parses_old_a1111_combined_sampler():
    fields = request_fields_from_infotext(A1111_OLD)
    assert fields["sampler"] == "DPM++ 2M" and fields["scheduler"] == "Karras"
    assert fields["clip_skip"] == 1 and fields["seed"] == 965400086 and fields["cfg_scale"] == 7.0
    assert fields["prompt"].startswith("girl with an artist's beret")


def test_parses_forge_with_unquoted_json_value():
    p = parse_infotext(FORGE_UNQUOTED_JSON)
    assert p["Steps"] == 24 and p["Model"] == "mfcgPDXL_v10" and p["Version"] == "f0.0.17v1.8.0rc"
    assert p["Negative prompt"] == "3d"


def test_parses_fooocus_a1111_scheme_png():
    meta = read_metadata(png_with_text(parameters=FOOOCUS_A1111, fooocus_scheme="a1111"))
    assert meta.source_app == "fooocus"
    p = meta.params
    assert p["Styles"] == ["Fooocus V2", "Fooocus Enhance", "Fooocus Sharp"]
    assert p["ADM Guidance"] == "(1.5, 0.8, 0.3)" and p["Raw negative prompt"] == ""
    fields = meta.request_fields()
    assert fields["prompt"] == "a cat sitting on a windowsill"  # the raw prompt, not the expanded one
    assert fields["negative_prompt"] == "" and fields["scheduler"] == "karras"
    assert (fields["width"], fields["height"], fields["cfg_scale"], fields["steps"]) == (1152, 896, 4.0, 30)


def test_parses_fooocus_json_scheme_png():
    meta = read_metadata(png_with_text(parameters=json.dumps(FOOOCUS_JSON), fooocus_scheme="fooocus"))
    assert meta.source_app == "fooocus" and meta.infotext is None
    p = meta.params
    assert p["Prompt"] == "a cat" and p["Full prompt"] == "a cat, cinematic, highly detailed"
    assert (p["Size-1"], p["Size-2"], p["Seed"], p["CFG scale"]) == (1152, 896, 1234567890, 4.0)
    assert p["Model"] == "juggernautXL_v8Rundiffusion" and "Refiner" not in p
    assert p["Styles"] == ["Fooocus V2", "Fooocus Enhance"]
    assert parse_name_list(p["Lora weights"]) == [("sd_xl_offset_example-lora_1.0", "0.1")]
    fields = meta.request_fields()
    assert fields["seed"] == 1234567890 and fields["sampler"] == "dpmpp_2m_sde_gpu" and fields["steps"] == 30


def test_parses_fooocus_label_keys():
    meta = read_metadata(png_with_text(parameters=json.dumps(FOOOCUS_LABELS), fooocus_scheme="fooocus"))
    p = meta.params
    assert p["Prompt"] == "a red fox" and p["Negative prompt"] == "cartoon"
    assert (p["Size-1"], p["CFG scale"], p["Seed"], p["Model"]) == (1024, 7.0, 77, "sd_xl_base_1.0_0.9vae")
    assert p["Styles"] == ["Fooocus V2", "Fooocus Photograph"]
    assert p["Lora weights"] == "sd_xl_offset_example-lora_1.0: 0.1"


def test_parses_fooocus_jpeg_exif():
    exif = Image.Exif()
    exif[0x9286] = FOOOCUS_A1111  # Fooocus puts UserComment in IFD0 as a plain string
    exif[0x0131] = "Fooocus v2.5.5"
    exif[0x927C] = "a1111"
    meta = read_metadata(jpeg_with_exif(exif))
    assert meta.source_app == "fooocus" and meta.params["Seed"] == 1234567890


@pytest.mark.parametrize(
    "prefix,encoding", [(b"UNICODE\0", "utf-16-be"), (b"UNICODE\0", "utf-16-le"), (b"ASCII\0\0\0", "ascii"), (b"", "utf-8")]
)
def test_reads_a1111_jpeg_user_comment_encodings(prefix, encoding):
    text = A1111_OLD if encoding == "ascii" else A1111_OLD.replace("desert", "désert ✓")
    exif = Image.Exif()
    exif[0x8769] = {0x9286: prefix + text.encode(encoding)}
    meta = read_metadata(jpeg_with_exif(exif))
    assert meta.source_app == "a1111" and meta.infotext == text
    assert meta.params["Seed"] == 965400086


def test_decode_user_comment_bom():
    assert decode_user_comment(b"UNICODE\0" + "héllo".encode("utf-16")) == "héllo"


# ------------------------------------------------------------------------------------- encode / read

REQUEST = GenerationRequest(
    prompt="a __animal__ on a mat",
    negative_prompt="blurry",
    styles=("Cinematic",),
    model="dreamshaper_8",
    loras=(LoraRef("add_detail", 0.6),),
    width=512,
    height=768,
    seed=123,
    output_format="png",
)


@pytest.mark.parametrize("fmt,pil_format", [("png", "PNG"), ("jpeg", "JPEG"), ("jpg", "JPEG"), ("webp", "WEBP")])
def test_encode_read_round_trip(fmt, pil_format):
    params = make_params(
        prompt='a cat, "on" a mat: ✓\nline two',
        styles=("Cinematic",),
        clip_skip=2,
        loras=(AppliedLora("add_detail", 0.6, "7c6bad76eb54"),),
        vae="sdxl_vae",
        vae_hash="abc",
        refiner="sdxl_refiner",
        refiner_switch=0.8,
        performance="Quality",
        prompt_template="a __animal__",
    )
    data = encode_image(Image.new("RGBA", (32, 24), (200, 10, 10, 128)), params, REQUEST, fmt)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == pil_format and img.size == (32, 24)
        img.load()
        if pil_format != "PNG":
            exif = img.getexif()
            comment = exif.get_ifd(0x8769)[0x9286]
            assert comment.startswith(b"UNICODE\0")
            assert comment[8:].decode("utf-16-be") == infotext(params)
            assert json.loads(exif[0x010E])["request"] == REQUEST.to_dict()
        else:
            assert img.text["parameters"] == infotext(params)
    meta = read_metadata(data)
    assert meta.source_app == "easel"
    assert meta.request == REQUEST.to_dict()
    assert GenerationRequest.from_dict(meta.request) == REQUEST
    assert ImageParams.from_dict(meta.image_params) == params
    assert meta.infotext == infotext(params)
    assert meta.params["Prompt"] == params.prompt and meta.params["Seed"] == 123
    assert meta.raw["easel" if fmt == "png" else "exif_image_description"]


def test_encode_without_request_and_read_from_path(tmp_path):
    path = tmp_path / "x.webp"
    path.write_bytes(encode_image(Image.new("RGB", (8, 8)), make_params(), None, "webp"))
    meta = read_metadata(path)
    assert meta.source_app == "easel" and meta.request is None
    assert ImageParams.from_dict(meta.image_params) == make_params()
    with Image.open(path) as img:
        assert read_metadata(img).source_app == "easel"


def test_huge_prompt_jpeg_keeps_parameters_line():
    params = make_params(prompt="word " * 20000)
    data = encode_image(Image.new("RGB", (8, 8)), params, REQUEST, "jpeg")
    meta = read_metadata(data)
    assert meta.source_app == "easel" and meta.request is None  # the JSON did not fit; the infotext did
    assert meta.params["Seed"] == 123 and meta.params["Prompt"].startswith("word word")


@pytest.mark.parametrize("fmt", ["gif", "", "bmp", None])
def test_unknown_format_is_invalid_request(fmt):
    with pytest.raises(InvalidRequest) as err:
        encode_image(Image.new("RGB", (8, 8)), make_params(), None, fmt)
    assert err.value.field == "output_format"


# ------------------------------------------------------------------------------------------- garbage


def test_unreadable_bytes_raise_invalid_request(tmp_path):
    with pytest.raises(InvalidRequest):
        read_metadata(b"this is not an image")
    with pytest.raises(InvalidRequest):
        read_metadata(tmp_path / "missing.png")


def test_foreign_and_damaged_metadata_never_crash():
    assert read_metadata(png_with_text()).source_app == "unknown"
    assert read_metadata(png_with_text(parameters="just some words")).source_app == "unknown"
    assert read_metadata(png_with_text(easel="{not json", parameters="")).source_app == "unknown"
    assert read_metadata(png_with_text(easel='{"app": "Easel", "params": 5}')).source_app == "unknown"
    odd_json = png_with_text(parameters='{"prompt": [1, {"x": null}], "seed": "abc"}')
    assert read_metadata(odd_json).source_app == "fooocus"
    exif = Image.Exif()
    exif[0x8769] = {0x9286: b"UNICODE\0\xff"}
    assert read_metadata(jpeg_with_exif(exif)).source_app == "unknown"
    good = png_with_text(parameters=A1111_OLD)
    truncated = good[: len(good) - 30]
    try:
        assert read_metadata(truncated).source_app in ("a1111", "unknown")
    except InvalidRequest:
        pass


def test_parse_infotext_fuzz_never_raises():
    rng = random.Random(1234)
    alphabet = "abc ,:\"\\\n-x0123456789.{}[]()'Steps:Negative prompt:Size: 5x5\0\r✓"
    samples = [A1111_110, FOOOCUS_A1111, FORGE_UNQUOTED_JSON]
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 200)))
        parse_infotext(text)
        request_fields_from_infotext(text)
        sample = rng.choice(samples)
        cut = rng.randrange(len(sample))
        parse_infotext(sample[:cut] + text + sample[cut:])
    assert parse_infotext("") == {"Prompt": "", "Negative prompt": ""}
    assert parse_infotext(None) == {}  # type: ignore[arg-type]


def test_pathological_long_line_does_not_backtrack():
    """Inputs that make a backtracking pattern take quadratic time or worse (hours at these sizes) are parsed
    in one pass: a linear parser needs a fraction of a second here on any machine, so the 120 s watchdog
    can only be reached by the bug, not by a slow or busy machine."""
    done = threading.Event()

    def parse() -> None:
        parse_infotext("word " * 200000)
        parse_infotext("x" * 60000 + ", Steps: 1, Seed: 2, Size: 8x8")
        done.set()

    threading.Thread(target=parse, daemon=True).start()
    assert done.wait(120), "parsing a long line did not finish: a pattern backtracks"
