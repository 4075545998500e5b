"""Every /sdapi/v1 route over real HTTP on loopback, against the running app (page + API on one server).

Answers are checked against what the app itself holds (the registry's files, the sampler table, the
hashes of the files on disk, the metadata writer), not against typed-in copies.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pipelines.types import ModelKind
from ui.api import PREFIX

from .conftest import LORA_METADATA

A1111_INFOTEXT = (
    "masterpiece, a castle on a hill, <lora:papercut_v1:0.7>\n"
    "Negative prompt: lowres, blurry\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567, Size: 832x1216, "
    'Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Lora hashes: "papercut_v1: 0123456789ab", Version: v1.10.1'
)


def png_b64(image: Image.Image, **text: str) -> str:
    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    return base64.b64encode(out.getvalue()).decode()


def test_sd_models_lists_the_checkpoints_in_a1111_shape(client, live, api_models_dir):
    models = client.get(f"{PREFIX}/sd-models").json()
    records = {r.name: r for r in live.services.registry.checkpoints()}
    assert {m["model_name"] for m in models} == set(records) == {"tiny-sd15", "tiny-sdxl"}
    for item in models:
        record = records[item["model_name"]]
        assert item["filename"] == str(record.path)
        assert item["title"].startswith(f"{item['model_name']}.safetensors")
        if item["sha256"] is not None:  # known once the model was loaded: the real sha256 of the file
            assert item["sha256"] == hashlib.sha256(record.path.read_bytes()).hexdigest()
            assert item["hash"] == item["sha256"][:10] and item["title"].endswith(f"[{item['hash']}]")


def test_a_loaded_model_shows_its_hash_in_title_options_and_info(client, live):
    answer = client.post(
        f"{PREFIX}/txt2img",
        json={"prompt": "x", "steps": 1, "width": 64, "height": 64, "override_settings": {"sd_model_checkpoint": "tiny-sdxl"}},
    )
    assert answer.status_code == 200, answer.text
    path = live.services.registry.find(ModelKind.CHECKPOINT, "tiny-sdxl").path
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    [item] = [m for m in client.get(f"{PREFIX}/sd-models").json() if m["model_name"] == "tiny-sdxl"]
    assert item["sha256"] == sha256 and item["title"] == f"tiny-sdxl.safetensors [{sha256[:10]}]"
    assert json.loads(answer.json()["info"])["sd_model_hash"] == sha256[:10]


def test_refresh_checkpoints_and_loras_rescan_the_folder(client, live, api_models_dir, tiny_models_dir):
    assert client.post(f"{PREFIX}/refresh-checkpoints").status_code == 200
    link = api_models_dir / "checkpoints" / "extra" / "tiny-copy.safetensors"
    link.parent.mkdir()
    shutil.copyfile(tiny_models_dir / "checkpoints" / "tiny-sd15.safetensors", link)  # a link would be the same file
    try:
        assert "extra_tiny-copy" not in [m["model_name"] for m in client.get(f"{PREFIX}/sd-models").json()]
        assert client.post(f"{PREFIX}/refresh-checkpoints").status_code == 200
        titles = [m["title"] for m in client.get(f"{PREFIX}/sd-models").json()]
        assert any(t.startswith("extra/tiny-copy.safetensors") for t in titles)
    finally:
        link.unlink()
        link.parent.rmdir()
        assert client.post(f"{PREFIX}/refresh-loras").status_code == 200
    assert len(client.get(f"{PREFIX}/sd-models").json()) == 2


def test_loras_carry_name_alias_path_and_file_metadata(client, api_models_dir):
    [lora] = client.get(f"{PREFIX}/loras").json()
    assert lora["name"] == "papercut_v1"
    assert lora["alias"] == LORA_METADATA["ss_output_name"]
    assert lora["path"] == str(api_models_dir / "loras" / "styles" / "papercut_v1.safetensors")
    assert lora["metadata"]["ss_network_dim"] == "4"
    assert lora["metadata"]["ss_tag_frequency"] == json.loads(LORA_METADATA["ss_tag_frequency"])  # JSON decoded


def test_samplers_and_schedulers_come_from_the_sampler_table(client, live):
    table = live.services.samplers
    samplers = client.get(f"{PREFIX}/samplers").json()
    assert [s["name"] for s in samplers] == table.samplers
    euler = next(s for s in samplers if s["name"] == "Euler")
    assert "k_euler" in euler["aliases"] and "karras" in euler["options"]["schedulers"]
    schedulers = client.get(f"{PREFIX}/schedulers").json()
    assert [s["label"] for s in schedulers] == table.schedules
    assert {"name": "sgm_uniform", "label": "SGM Uniform"}.items() <= next(
        s for s in schedulers if s["label"] == "SGM Uniform"
    ).items()
    # every listed name is accepted back by the engine
    for item in schedulers:
        assert table.resolve("Euler", item["name"]).schedule in table.schedules
    for item in samplers:
        for alias in item["aliases"]:
            assert table.resolve(alias, None).sampler == item["name"]


def test_prompt_styles_list_the_style_library(client, live):
    listed = client.get(f"{PREFIX}/prompt-styles").json()
    library = live.services.styles.all()
    assert len(listed) == len(library) >= 100
    assert listed == [{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt} for s in library]
    assert all("{prompt}" in item["prompt"] for item in listed)


def test_options_get_and_post_switch_the_default_model(client, live):
    options = client.get(f"{PREFIX}/options").json()
    assert options["sd_model_checkpoint"].startswith("tiny-sd15.safetensors")
    assert options["samples_format"] == "png" and options["CLIP_stop_at_last_layers"] == 1
    assert options["token_merging_ratio"] == 0
    assert options["outdir_samples"] == str(live.services.config.output_dir)
    try:
        # a title as A1111 clients send it back, with unknown options beside it (ignored)
        sent = {
            "sd_model_checkpoint": "tiny-sdxl.safetensors [0123456789]",
            "samples_format": "webp",
            "CLIP_stop_at_last_layers": 2,
            "token_merging_ratio": 0.5,
            "show_progressbar": True,
        }
        answer = client.post(f"{PREFIX}/options", json=sent)
        assert answer.status_code == 200 and answer.json() is None
        options = client.get(f"{PREFIX}/options").json()
        assert options["sd_model_checkpoint"].startswith("tiny-sdxl.safetensors")
        assert live.services.manager.default_record().name == "tiny-sdxl"
        # the next job without a model uses it, in the new default format and clip skip
        answer = client.post(f"{PREFIX}/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64})
        info = json.loads(answer.json()["info"])
        assert info["sd_model_name"] == "tiny-sdxl" and info["clip_skip"] == 2
        assert "Clip skip: 2" in info["infotexts"][0] and "Token merging ratio: 0.5" in info["infotexts"][0]
        answer = client.post(f"{PREFIX}/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64, "token_merging": 0})
        assert "Token merging ratio" not in json.loads(answer.json()["info"])["infotexts"][0]  # the request's own 0 wins
        assert Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0]))).format == "WEBP"
        # a bad value changes nothing, not even the valid ones sent with it
        bad = client.post(f"{PREFIX}/options", json={"samples_format": "png", "sd_model_checkpoint": "missing"})
        assert bad.status_code == 404 and "missing" in bad.json()["detail"]
        bad = client.post(f"{PREFIX}/options", json={"sd_model_checkpoint": "tiny-sd15", "samples_format": "gif"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "samples_format"]
        bad = client.post(f"{PREFIX}/options", json={"CLIP_stop_at_last_layers": 99})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "CLIP_stop_at_last_layers"]
        bad = client.post(f"{PREFIX}/options", json={"token_merging_ratio": 0.9})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "token_merging_ratio"]
        assert client.get(f"{PREFIX}/options").json()["samples_format"] == "webp"
        assert live.services.manager.default_record().name == "tiny-sdxl"
    finally:
        client.post(
            f"{PREFIX}/options",
            json={
                "sd_model_checkpoint": "tiny-sd15",
                "samples_format": "png",
                "CLIP_stop_at_last_layers": 1,
                "token_merging_ratio": 0,
            },
        )
    assert client.get(f"{PREFIX}/options").json()["sd_model_checkpoint"].startswith("tiny-sd15.safetensors")


def test_png_info_reads_an_a1111_image(client):
    image = png_b64(Image.new("RGB", (8, 8), "red"), parameters=A1111_INFOTEXT, extra="kept")
    answer = client.post(f"{PREFIX}/png-info", json={"image": "data:image/png;base64," + image})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["info"] == A1111_INFOTEXT
    assert body["items"] == {"extra": "kept"}
    params = body["parameters"]
    assert params["Prompt"] == "masterpiece, a castle on a hill, <lora:papercut_v1:0.7>"
    assert params["Negative prompt"] == "lowres, blurry"
    assert (params["Steps"], params["Sampler"], params["Schedule type"], params["CFG scale"]) == (28, "DPM++ 2M", "Karras", 6.5)
    assert (params["Seed"], params["Size-1"], params["Size-2"]) == (1234567, 832, 1216)
    assert params["Model hash"] == "31e35c80fc" and params["Lora hashes"] == "papercut_v1: 0123456789ab"


def test_png_info_reads_an_image_the_app_wrote(client, live):
    answer = client.post(
        f"{PREFIX}/txt2img",
        json={
            "prompt": "a lighthouse",
            "negative_prompt": "fog",
            "steps": 2,
            "seed": 31,
            "width": 64,
            "height": 64,
            "save_images": True,
        },
    )
    made = answer.json()
    info = json.loads(made["info"])
    [path] = info["image_paths"]
    with open(path, "rb") as f:
        saved = base64.b64encode(f.read()).decode()
    assert saved == made["images"][0]  # the answer is the saved file itself
    body = client.post(f"{PREFIX}/png-info", json={"image": saved}).json()
    assert body["info"] == info["infotexts"][0]
    assert json.loads(body["items"]["easel"])["params"]["seed"] == 31
    assert (body["parameters"]["Prompt"], body["parameters"]["Negative prompt"], body["parameters"]["Seed"]) == (
        "a lighthouse",
        "fog",
        31,
    )


def test_png_info_without_parameters_and_with_bad_data(client):
    plain = client.post(f"{PREFIX}/png-info", json={"image": png_b64(Image.new("RGB", (4, 4)))})
    assert plain.status_code == 200 and plain.json()["info"] == ""
    for bad in ("not base64 at all!", base64.b64encode(b"not an image").decode(), "https://example.com/a.png"):
        answer = client.post(f"{PREFIX}/png-info", json={"image": bad})
        assert answer.status_code == 422, bad
        assert answer.json()["detail"][0]["loc"] == ["body", "image"]
    assert client.post(f"{PREFIX}/png-info", json={}).json()["detail"][0]["loc"] == ["body", "image"]


def test_memory_reports_ram_and_cuda(client):
    body = client.get(f"{PREFIX}/memory").json()
    ram = body["ram"]
    assert ram["total"] > ram["used"] > 0 and ram["free"] == ram["total"] - ram["used"]
    import torch

    if torch.cuda.is_available():
        assert body["cuda"]["system"]["total"] > 0
    else:
        assert body["cuda"] == {"error": "unavailable"}


def test_idle_progress_interrupt_and_skip(client):
    body = client.get(f"{PREFIX}/progress").json()
    assert body["progress"] == 0 and body["eta_relative"] == 0 and body["current_image"] is None
    assert body["state"]["job_count"] == 0 and body["state"]["job"] == ""
    assert client.post(f"{PREFIX}/interrupt").json() == {}
    assert client.post(f"{PREFIX}/skip").status_code == 200


def test_img2img_with_data_that_is_no_image_answers_422(client):
    answer = client.post(f"{PREFIX}/img2img", json={"init_images": ["x"], "prompt": "p"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "init_images"]


@pytest.mark.parametrize(
    "body,field,words",
    [
        ({"steps": "many"}, "steps", "integer"),
        ({"steps": 0}, "steps", "greater than or equal to 1"),
        ({"steps": 500}, "steps", "less than or equal to 150"),
        ({"steps": True}, "steps", "not true/false"),
        ({"cfg_scale": "nan"}, "cfg_scale", "finite"),
        ({"width": 4}, "width", "greater than or equal"),
        ({"width": 100}, "width", "multiple of 8"),
        ({"prompt": 12}, "prompt", "string"),
        ({"styles": "not a list"}, "styles", "list"),
        ({"batch_size": 8, "n_iter": 8}, "batch_size", "at most 32"),
        ({"sampler_name": "Nope"}, "sampler_name", "Unknown sampler 'Nope'"),
        ({"scheduler": "wobbly"}, "scheduler", "wobbly"),
        ({"override_settings": {"CLIP_stop_at_last_layers": "two"}}, "override_settings.CLIP_stop_at_last_layers", "whole"),
        ({"override_settings": {"samples_format": "gif"}}, "override_settings.samples_format", "gif"),
        ({"override_settings": "x"}, "override_settings", "dictionary"),
    ],
)
def test_bad_txt2img_bodies_get_422_naming_the_field(client, live, body, field, words):
    jobs_before = live.services.queue.counts()["known"]
    answer = client.post(f"{PREFIX}/txt2img", json={"prompt": "p", **body})
    assert answer.status_code == 422, answer.text
    [error] = [e for e in answer.json()["detail"] if e["loc"][1:] == field.split(".")]
    assert error["msg"].startswith(field.split(".")[-1]) or error["msg"].startswith(field)
    assert words in error["msg"]
    assert live.services.queue.counts()["known"] == jobs_before  # refused before it reached the queue


def test_malformed_json_and_unknown_model_answers(client):
    answer = client.post(f"{PREFIX}/txt2img", content=b"{nope", headers={"content-type": "application/json"})
    assert answer.status_code == 422 and "not valid JSON" in answer.json()["detail"][0]["msg"]
    answer = client.post(f"{PREFIX}/txt2img", json={"override_settings": {"sd_model_checkpoint": "nope [abc12345]"}})
    assert answer.status_code == 404 and "nope" in answer.json()["detail"]


def test_vaes_are_listed_and_sd_vae_picks_one_per_request_or_as_the_option(client, live, api_models_dir):
    path = api_models_dir / "vae" / "tiny-vae.safetensors"
    assert client.get(f"{PREFIX}/sd-vae").json() == [{"model_name": "tiny-vae.safetensors", "filename": str(path)}]
    assert client.post(f"{PREFIX}/refresh-vae").status_code == 200
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    common = {"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64, "seed": 3, "sampler_name": "Euler"}

    def generate(**extra):
        answer = client.post(f"{PREFIX}/txt2img", json={**common, **extra})
        assert answer.status_code == 200, answer.text
        pixels = Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0]))).convert("RGB").tobytes()
        return pixels, json.loads(answer.json()["info"])["infotexts"][0]

    own, own_text = generate()
    chosen, chosen_text = generate(override_settings={"sd_vae": "tiny-vae.safetensors"})
    assert chosen != own and "VAE" not in own_text
    assert f"VAE hash: {digest}, VAE: tiny-vae.safetensors" in chosen_text
    assert generate(override_settings={"sd_vae": "None"})[0] == own  # A1111's None: the checkpoint's own
    bad = client.post(f"{PREFIX}/txt2img", json={**common, "override_settings": {"sd_vae": "tiny-vea"}})
    assert bad.status_code == 422 and "sd_vae" in json.dumps(bad.json()["detail"]) and "tiny-vae" in bad.text
    try:
        assert client.post(f"{PREFIX}/options", json={"sd_vae": "tiny-vae"}).status_code == 200
        assert client.get(f"{PREFIX}/options").json()["sd_vae"] == "tiny-vae"
        assert generate()[0] == chosen  # the option is the default of requests that do not say
        assert generate(override_settings={"sd_vae": "Automatic"})[0] == own
        bad = client.post(f"{PREFIX}/options", json={"sd_vae": "missing", "samples_format": "webp"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "sd_vae"]
        assert client.get(f"{PREFIX}/options").json()["samples_format"] == "png"  # nothing changed
    finally:
        client.post(f"{PREFIX}/options", json={"sd_vae": "Automatic"})
    assert client.get(f"{PREFIX}/options").json()["sd_vae"] == "Automatic"


def test_embeddings_are_split_by_the_default_checkpoint_as_a1111_does(client, live):
    answer = client.get(f"{PREFIX}/embeddings").json()
    blank = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None}
    assert live.services.manager.default_record().name == "tiny-sd15"
    assert answer == {
        "loaded": {"tiemb": {**blank, "shape": 32, "vectors": 2}},
        "skipped": {"xlemb": {**blank, "shape": 96, "vectors": 3}},
    }  # SDXL: clip_l + clip_g widths


def test_docs_and_openapi_describe_every_route(client):
    spec = client.get("/openapi.json").json()
    expected = {
        ("post", "txt2img"),
        ("post", "img2img"),
        ("post", "extra-single-image"),
        ("post", "extra-batch-images"),
        ("get", "upscalers"),
        ("get", "latent-upscale-modes"),
        ("get", "options"),
        ("post", "options"),
        ("get", "sd-models"),
        ("post", "refresh-checkpoints"),
        ("get", "loras"),
        ("post", "refresh-loras"),
        ("get", "samplers"),
        ("get", "schedulers"),
        ("get", "prompt-styles"),
        ("get", "progress"),
        ("post", "interrupt"),
        ("post", "skip"),
        ("post", "png-info"),
        ("get", "memory"),
        ("get", "sd-vae"),
        ("post", "refresh-vae"),
        ("get", "embeddings"),
    }
    listed = {(method, path.removeprefix(PREFIX + "/")) for path, ops in spec["paths"].items() for method in ops}
    assert listed == expected
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert op.get("description") or op.get("summary"), path
    txt2img = spec["components"]["schemas"]["Txt2ImgRequest"]["properties"]
    assert txt2img["steps"]["default"] == 50 and txt2img["sampler_index"]["default"] == "Euler"
    assert txt2img["save_images"]["default"] is False and txt2img["send_images"]["default"] is True
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert client.get("/").status_code == 200  # the page is still served beside the API
