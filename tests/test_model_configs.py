"""The shipped configs and tokenizer are the real ones, and sidecars override them as documented."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from pipelines.errors import ModelLoadError
from pipelines.loading.configs import (
    CONFIG_ROOT,
    bundled_config_dir,
    clip_tokenizer,
    config_dir_for,
    sidecar_path,
    tokenizer_kwargs,
)
from pipelines.types import Architecture

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load_tokenizer_script():
    spec = importlib.util.spec_from_file_location("make_clip_tokenizer", REPO_ROOT / "bench" / "make_clip_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_tokenizer_files_match_open_clip_derivation():
    script = _load_tokenizer_script()
    gz = script.open_clip_gz_path()
    if gz is None:
        pytest.skip("open_clip's bpe_simple_vocab_16e6.txt.gz is not installed")
    vocab, merges = script.derive_clip_bpe(gz.read_bytes())
    shipped_vocab = json.loads((CONFIG_ROOT / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
    shipped_merges = (CONFIG_ROOT / "tokenizer" / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert shipped_vocab == vocab
    assert shipped_merges[0].startswith("#version")
    assert shipped_merges[1:] == merges
    assert len(vocab) == 49408 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


@pytest.mark.parametrize(
    "prompt, ids",
    [
        ("a photo of a cat", [49406, 320, 1125, 539, 320, 2368, 49407]),
        (
            "A photo of an astronaut riding a horse on Mars",
            [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496, 49407],
        ),
        ("", [49406, 49407]),
    ],
)
def test_clip_tokenizer_gives_known_clip_ids(prompt, ids):
    assert clip_tokenizer()(prompt).input_ids == ids


def test_clip_tokenizer_padding_matches_sd_and_sdxl():
    tok = clip_tokenizer()
    assert tok.model_max_length == 77
    padded = tok("a cat", padding="max_length", max_length=tok.model_max_length).input_ids
    assert len(padded) == 77 and padded[:4] == [49406, 320, 2368, 49407] and set(padded[4:]) == {49407}
    tok2 = clip_tokenizer("!")  # SDXL's tokenizer_2 (OpenCLIP) pads with "!" = id 0
    assert tok2("a cat", padding="max_length", max_length=8).input_ids == [49406, 320, 2368, 49407, 0, 0, 0, 0]
    long = tok("cat " * 100, truncation=True, max_length=tok.model_max_length).input_ids
    assert len(long) == 77 and long[-1] == 49407


def test_tokenizer_kwargs_per_architecture():
    sd = tokenizer_kwargs(Architecture.SD1)
    assert set(sd) == {"tokenizer"} and sd["tokenizer"].pad_token == "<|endoftext|>"
    xl = tokenizer_kwargs(Architecture.SDXL)
    assert set(xl) == {"tokenizer", "tokenizer_2"} and xl["tokenizer_2"].pad_token == "!"
    refiner = tokenizer_kwargs(Architecture.SDXL_REFINER)  # OpenCLIP's only
    assert set(refiner) == {"tokenizer_2"} and refiner["tokenizer_2"].pad_token == "!"
    with pytest.raises(ModelLoadError):
        tokenizer_kwargs(Architecture.SD2)


@pytest.mark.parametrize("arch", [Architecture.SD2, Architecture.UNKNOWN])
def test_unsupported_architectures_raise_a_clear_error(arch):
    with pytest.raises(ModelLoadError, match=arch.label):
        bundled_config_dir(arch)


def _count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "arch, component, expected",
    [
        (Architecture.SD1, "unet", 859_520_964),
        (Architecture.SD1, "vae", 83_653_863),
        (Architecture.SD1, "text_encoder", 123_060_480),
        (Architecture.SDXL, "unet", 2_567_463_684),
        (Architecture.SDXL, "vae", 83_653_863),
        (Architecture.SDXL, "text_encoder", 123_060_480),
        (Architecture.SDXL, "text_encoder_2", 694_659_840),
        # the refiner: 2.26 B UNet (the "2.3 B" of the SDXL report), the base's VAE and OpenCLIP bigG
        (Architecture.SDXL_REFINER, "unet", 2_259_526_660),
        (Architecture.SDXL_REFINER, "vae", 83_653_863),
        (Architecture.SDXL_REFINER, "text_encoder_2", 694_659_840),
    ],
)
def test_bundled_configs_give_the_real_parameter_counts(arch, component, expected):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = bundled_config_dir(arch) / component
    with torch.device("meta"):  # shapes only: nothing is allocated
        if component == "unet":
            model = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder))
        elif component == "vae":
            model = AutoencoderKL.from_config(AutoencoderKL.load_config(folder))
        else:
            cls = CLIPTextModelWithProjection if component == "text_encoder_2" else CLIPTextModel
            model = cls(CLIPTextConfig.from_pretrained(folder))
    assert _count_params(model) == expected
    assert all(p.device.type == "meta" for p in model.parameters())


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_bundled_pipeline_settings():
    sd = bundled_config_dir(Architecture.SD1)
    xl = bundled_config_dir(Architecture.SDXL)
    sd_index, xl_index = _json(sd / "model_index.json"), _json(xl / "model_index.json")
    assert sd_index["_class_name"] == "StableDiffusionPipeline"
    assert sd_index["safety_checker"] == [None, None] and sd_index["feature_extractor"] == [None, None]
    assert sd_index["requires_safety_checker"] is False
    assert xl_index["_class_name"] == "StableDiffusionXLPipeline" and xl_index["force_zeros_for_empty_prompt"] is True
    assert _json(sd / "vae" / "config.json")["scaling_factor"] == 0.18215
    xl_vae = _json(xl / "vae" / "config.json")
    assert xl_vae["scaling_factor"] == 0.13025 and xl_vae["force_upcast"] is True
    assert _json(sd / "scheduler" / "scheduler_config.json")["_class_name"] == "PNDMScheduler"
    assert _json(xl / "scheduler" / "scheduler_config.json")["_class_name"] == "EulerDiscreteScheduler"
    te2 = _json(xl / "text_encoder_2" / "config.json")
    shape = (te2["hidden_size"], te2["num_hidden_layers"], te2["num_attention_heads"], te2["hidden_act"])
    assert shape == (1280, 32, 20, "gelu")
    # No dtype in text encoder configs: transformers would build CLIPTextModelWithProjection in it.
    for folder in (sd / "text_encoder", xl / "text_encoder", xl / "text_encoder_2"):
        assert "torch_dtype" not in _json(folder / "config.json")
    # Config folders only: no weights and no tokenizer files are shipped with them.
    for folder in (sd, xl):
        assert not [p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin", ".ckpt", ".txt")]


def test_bundled_refiner_settings():
    refiner = bundled_config_dir(Architecture.SDXL_REFINER)
    index = _json(refiner / "model_index.json")
    assert index["_class_name"] == "StableDiffusionXLImg2ImgPipeline"
    assert index["text_encoder"] == [None, None] and index["tokenizer"] == [None, None]
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    assert index["requires_aesthetics_score"] is True and index["force_zeros_for_empty_prompt"] is False
    xl = bundled_config_dir(Architecture.SDXL)
    for rel in ("vae/config.json", "text_encoder_2/config.json", "scheduler/scheduler_config.json"):
        assert _json(refiner / rel) == _json(xl / rel), rel  # the same VAE, OpenCLIP and schedule as the base
    assert not (refiner / "text_encoder").exists()
    assert not [p for p in refiner.rglob("*") if p.suffix in (".safetensors", ".bin", ".ckpt", ".txt")]


def test_refiner_unet_config_is_what_diffusers_derives_from_the_original_one():
    """diffusers' own converter, fed the published sgm `sd_xl_refiner.yaml` UNet settings, gives our config."""
    from diffusers.loaders.single_file_utils import (
        CHECKPOINT_KEY_NAMES,
        DIFFUSERS_DEFAULT_PIPELINE_PATHS,
        create_unet_diffusers_config_from_ldm,
    )

    network = {  # configs/inference/sd_xl_refiner.yaml, model.params.network_config.params
        "adm_in_channels": 2560,
        "num_classes": "sequential",
        "in_channels": 4,
        "out_channels": 4,
        "model_channels": 384,
        "attention_resolutions": [4, 2],
        "num_res_blocks": 2,
        "channel_mult": [1, 2, 4, 4],
        "num_head_channels": 64,
        "use_linear_in_transformer": True,
        "transformer_depth": 4,
        "context_dim": [1280, 1280, 1280, 1280],
        "spatial_transformer_attn_type": "softmax-xformers",
    }
    original = {
        "model": {
            "params": {
                "network_config": {"params": network},
                "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}},
            }
        }
    }
    # a checkpoint diffusers recognizes as "xl_refiner" sets the 1024-pixel default size (sample_size 128)
    derived = create_unet_diffusers_config_from_ldm(original, {CHECKPOINT_KEY_NAMES["xl_refiner"]: None})
    ours = _json(bundled_config_dir(Architecture.SDXL_REFINER) / "unet" / "config.json")
    for key, value in derived.items():
        assert ours[key] == (list(value) if isinstance(value, tuple) else value), key
    assert DIFFUSERS_DEFAULT_PIPELINE_PATHS["xl_refiner"]["pretrained_model_name_or_path"] == (
        "stabilityai/stable-diffusion-xl-refiner-1.0"
    )


# ---- sidecars -----------------------------------------------------------------------------------


def test_sidecar_path_sits_beside_the_checkpoint(tmp_path):
    assert sidecar_path(tmp_path / "foo.safetensors") == tmp_path / "foo.config.json"
    assert sidecar_path(tmp_path / "sub" / "my.model.ckpt") == tmp_path / "sub" / "my.model.config.json"


def test_no_sidecar_means_the_bundled_folder(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"")
    assert config_dir_for(Architecture.SD1, ckpt, tmp_path / "cache") == bundled_config_dir(Architecture.SD1)
    assert config_dir_for(Architecture.SDXL, None, tmp_path / "cache") == bundled_config_dir(Architecture.SDXL)
    assert not (tmp_path / "cache").exists()


def test_sidecar_replaces_components_and_is_cached_by_content(tmp_path):
    ckpt = tmp_path / "odd.safetensors"
    unet = {"_class_name": "UNet2DConditionModel", "sample_size": 96, "cross_attention_dim": 1024}
    sidecar_path(ckpt).write_text(json.dumps({"unet": unet}))
    cache = tmp_path / "cache"
    folder = config_dir_for(Architecture.SD1, ckpt, cache)
    assert folder.parent == cache and folder != bundled_config_dir(Architecture.SD1)
    assert _json(folder / "unet" / "config.json") == unet
    bundled = bundled_config_dir(Architecture.SD1)
    for rel in ("model_index.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json"):
        assert (folder / rel).read_bytes() == (bundled / rel).read_bytes()
    stamp = (folder / "unet" / "config.json").stat().st_mtime_ns
    assert config_dir_for(Architecture.SD1, ckpt, cache) == folder  # unchanged sidecar: reused, not rebuilt
    assert (folder / "unet" / "config.json").stat().st_mtime_ns == stamp
    sidecar_path(ckpt).write_text(json.dumps({"unet": {**unet, "sample_size": 128}}))
    changed = config_dir_for(Architecture.SD1, ckpt, cache)
    assert changed != folder and _json(changed / "unet" / "config.json")["sample_size"] == 128
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp")]


def test_sidecar_scheduler_override_uses_the_scheduler_file(tmp_path):
    ckpt = tmp_path / "m.safetensors"
    scheduler = {"_class_name": "EulerDiscreteScheduler", "steps_offset": 1}
    sidecar_path(ckpt).write_text(json.dumps({"scheduler": scheduler}))
    folder = config_dir_for(Architecture.SDXL, ckpt, tmp_path / "cache")
    assert _json(folder / "scheduler" / "scheduler_config.json")["steps_offset"] == 1
    assert not (folder / "scheduler" / "config.json").exists()


@pytest.mark.parametrize(
    "arch, content, message",
    [
        (Architecture.SD1, {"unet": {}, "refiner": {}}, "refiner"),
        (Architecture.SD1, {"text_encoder_2": {}}, "text_encoder_2"),
        (Architecture.SDXL, {"unet": [1, 2]}, "unet"),
        (Architecture.SDXL, [1, 2], "JSON object"),
    ],
)
def test_bad_sidecars_name_the_file(tmp_path, arch, content, message):
    ckpt = tmp_path / "broken.safetensors"
    sidecar_path(ckpt).write_text(json.dumps(content))
    with pytest.raises(ModelLoadError, match="broken.config.json") as info:
        config_dir_for(arch, ckpt, tmp_path / "cache")
    assert message in str(info.value)


def test_unparsable_sidecar_names_the_file(tmp_path):
    ckpt = tmp_path / "broken.safetensors"
    sidecar_path(ckpt).write_text("{not json")
    with pytest.raises(ModelLoadError, match="broken.config.json"):
        config_dir_for(Architecture.SD1, ckpt, tmp_path / "cache")


def test_an_inpainting_checkpoint_gets_the_bundled_configs_with_9_input_channels(tmp_path):
    ckpt = tmp_path / "sd-v1-5-inpainting.ckpt"
    assert config_dir_for(Architecture.SD1, ckpt, tmp_path / "cache", unet_in_channels=4) == bundled_config_dir(Architecture.SD1)
    for arch in (Architecture.SD1, Architecture.SDXL):
        folder = config_dir_for(arch, ckpt, tmp_path / "cache", unet_in_channels=9)
        bundled = _json(bundled_config_dir(arch) / "unet" / "config.json")
        assert _json(folder / "unet" / "config.json") == {**bundled, "in_channels": 9}
    # a sidecar's own UNet config is the one patched
    sidecar_path(ckpt).write_text(json.dumps({"unet": {"_class_name": "UNet2DConditionModel", "sample_size": 8}}))
    folder = config_dir_for(Architecture.SD1, ckpt, tmp_path / "cache", unet_in_channels=9)
    assert _json(folder / "unet" / "config.json") == {"_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": 9}
