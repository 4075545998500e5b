"""Single files in the LDM layout and diffusers folders load back offline with every tensor intact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
    infer_diffusers_model_type,
)
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from pipelines.loading.configs import config_dir_for, sidecar_path, tokenizer_kwargs
from pipelines.types import Architecture
from tests.support.ckpt_export import (
    REFINER_OPENCLIP_PREFIX,
    SD1_CLIP_PREFIX,
    SDXL_CLIP_PREFIX,
    SDXL_OPENCLIP_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    clip_to_ldm,
    ldm_state_dict,
    open_clip_to_ldm,
    pipeline_configs,
    save_single_file,
    sidecar_overrides,
    unet_to_ldm,
    vae_to_ldm,
)
from tests.support.full_size import bundled_configs
from tests.support.layout import laid_out_as_loaded

MODEL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
PIPELINES = {
    Architecture.SD1: StableDiffusionPipeline,
    Architecture.SDXL: StableDiffusionXLPipeline,
    Architecture.SDXL_REFINER: StableDiffusionXLImg2ImgPipeline,
}


def assert_same_weights(expected, actual) -> None:
    """Every tensor of every model component is bit-identical (and none was left on the meta device)."""
    for name in MODEL_COMPONENTS:
        want = getattr(expected, name, None)
        if want is None:
            assert getattr(actual, name, None) is None
            continue
        a, b = want.state_dict(), getattr(actual, name).state_dict()
        assert a.keys() == b.keys(), name
        for key in a:
            assert b[key].device.type != "meta", f"{name}.{key} was not loaded"
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), f"{name}.{key} differs"


@pytest.fixture(params=[Architecture.SD1, Architecture.SDXL], ids=["sd15", "sdxl"])
def arch(request) -> Architecture:
    return request.param


@pytest.fixture
def reference(arch, request):
    return request.getfixturevalue("tiny_sd15_reference" if arch == Architecture.SD1 else "tiny_sdxl_reference")


@pytest.fixture
def single_file(arch, request) -> Path:
    return request.getfixturevalue("tiny_sd15_file" if arch == Architecture.SD1 else "tiny_sdxl_file")


def _load_single_file(arch: Architecture, path: Path, cache: Path):
    config_dir = config_dir_for(arch, path, cache)
    return PIPELINES[arch].from_single_file(str(path), config=str(config_dir), local_files_only=True, **tokenizer_kwargs(arch))


def test_single_file_safetensors_roundtrip(arch, reference, single_file, tmp_path, no_network):
    assert sidecar_path(single_file).is_file()  # tiny sizes need the sidecar
    loaded = _load_single_file(arch, single_file, tmp_path / "cache")
    assert type(loaded) is PIPELINES[arch]
    assert_same_weights(reference, loaded)
    assert type(loaded.scheduler) is type(reference.scheduler)
    assert dict(loaded.vae.config)["scaling_factor"] == reference.vae.config.scaling_factor
    assert loaded.tokenizer.vocab_size == 49408 and loaded.tokenizer.model_max_length == 77


def test_single_file_ckpt_roundtrip(arch, reference, tmp_path, no_network):
    path = save_single_file(reference, tmp_path / "checkpoints" / "model.ckpt")
    raw = torch.load(str(path), map_location="cpu", weights_only=True)
    assert set(raw) == {"state_dict"}
    assert_same_weights(reference, _load_single_file(arch, path, tmp_path / "cache"))


def test_diffusers_folder_roundtrip(arch, reference, request, no_network):
    folder = request.getfixturevalue("tiny_sd15_diffusers" if arch == Architecture.SD1 else "tiny_sdxl_diffusers")
    assert (folder / "model_index.json").is_file()
    assert not list(folder.rglob("*.bin"))
    loaded = PIPELINES[arch].from_pretrained(str(folder), local_files_only=True)
    assert_same_weights(reference, loaded)
    assert loaded.tokenizer("a photo of a cat").input_ids == reference.tokenizer("a photo of a cat").input_ids


def test_loaded_single_file_generates_like_the_reference(arch, reference, single_file, tmp_path):
    loaded = laid_out_as_loaded(_load_single_file(arch, single_file, tmp_path / "cache"))
    kwargs = dict(prompt="a photo of a cat", height=64, width=64, num_inference_steps=2, output_type="np")
    want = reference(generator=torch.Generator().manual_seed(3), **kwargs).images
    got = loaded(generator=torch.Generator().manual_seed(3), **kwargs).images
    assert got.shape == (1, 64, 64, 3) and not (got != got).any()
    assert (want == got).all()


def test_exported_keys_use_the_original_layout(arch, single_file):
    keys = set(load_file(str(single_file)))
    assert f"{UNET_PREFIX}input_blocks.0.0.weight" in keys and f"{UNET_PREFIX}out.2.weight" in keys
    assert f"{UNET_PREFIX}middle_block.1.proj_in.weight" in keys
    assert f"{VAE_PREFIX}encoder.mid.attn_1.q.weight" in keys
    assert f"{VAE_PREFIX}decoder.up.0.block.0.conv1.weight" in keys
    if arch == Architecture.SD1:
        assert f"{SD1_CLIP_PREFIX}embeddings.position_ids" in keys
        assert f"{SD1_CLIP_PREFIX}encoder.layers.0.self_attn.q_proj.weight" in keys
        assert not any(k.startswith("conditioner.") for k in keys)
    else:
        assert f"{UNET_PREFIX}label_emb.0.0.weight" in keys and f"{UNET_PREFIX}label_emb.0.2.weight" in keys
        assert f"{SDXL_CLIP_PREFIX}final_layer_norm.weight" in keys
        for name in ("token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection"):
            assert SDXL_OPENCLIP_PREFIX + name in keys
        assert f"{SDXL_OPENCLIP_PREFIX}transformer.resblocks.0.attn.in_proj_weight" in keys
        assert f"{SDXL_OPENCLIP_PREFIX}transformer.resblocks.0.mlp.c_fc.weight" in keys
        assert not any(k.startswith("cond_stage_model.") for k in keys)


def test_vae_attention_is_stored_as_1x1_convolutions(single_file, reference):
    state = load_file(str(single_file))
    q = state[f"{VAE_PREFIX}decoder.mid.attn_1.q.weight"]
    linear = reference.vae.decoder.mid_block.attentions[0].to_q.weight
    assert q.shape == (*linear.shape, 1, 1) and torch.equal(q[:, :, 0, 0], linear)


def test_openclip_projection_is_stored_transposed(tiny_sdxl_file, tiny_sdxl_reference):
    state = load_file(str(tiny_sdxl_file))
    proj = state[SDXL_OPENCLIP_PREFIX + "text_projection"]
    assert torch.equal(proj, tiny_sdxl_reference.text_encoder_2.text_projection.weight.T)


def test_full_size_models_need_no_sidecar(arch):
    configs = _full_size_configs(arch)
    assert sidecar_overrides(arch, configs) == {}
    changed = dict(configs["unet"], cross_attention_dim=1024)
    assert set(sidecar_overrides(arch, {**configs, "unet": changed})) == {"unet"}


def _full_size_configs(arch: Architecture) -> dict[str, dict]:
    """The configs of a full-size model as pipeline_configs() reports them, built on the meta device."""

    class _Pipe:  # pipeline_configs only reads components' .config
        pass

    pipe = _Pipe()
    for name, model in _meta_models(arch).items():
        setattr(pipe, name, model)
    return pipeline_configs(pipe)


def _meta_models(arch: Architecture) -> dict[str, torch.nn.Module]:
    configs = bundled_configs(arch)
    with torch.device("meta"):
        models: dict[str, torch.nn.Module] = {
            "unet": UNet2DConditionModel.from_config(configs["unet"]),
            "vae": AutoencoderKL.from_config(configs["vae"]),
        }
        if "text_encoder" in configs:
            models["text_encoder"] = CLIPTextModel(CLIPTextConfig.from_dict(configs["text_encoder"]))
        if "text_encoder_2" in configs:
            models["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig.from_dict(configs["text_encoder_2"]))
    return models


def test_full_size_layout_is_what_diffusers_reads_back(arch):
    """At real size (on the meta device), the export is exactly inverted by diffusers' own converters."""
    models = _meta_models(arch)
    configs = bundled_configs(arch)
    states = {name: model.state_dict() for name, model in models.items()}
    ckpt = ldm_state_dict(arch, states, configs)
    expected_type = "v1" if arch == Architecture.SD1 else "xl_base"
    assert infer_diffusers_model_type(ckpt) == expected_type

    def same_shapes(want: dict, got: dict) -> None:
        assert want.keys() == got.keys()
        assert all(want[k].shape == got[k].shape for k in want)

    same_shapes(states["unet"], convert_ldm_unet_checkpoint(ckpt, configs["unet"]))
    same_shapes(states["vae"], convert_ldm_vae_checkpoint(ckpt, configs["vae"]))
    te = convert_ldm_clip_checkpoint(ckpt)
    te = {k.removeprefix("text_model."): v for k, v in te.items() if not k.endswith("position_ids")}
    same_shapes(states["text_encoder"], te)
    if arch == Architecture.SDXL:
        te2 = convert_open_clip_checkpoint(models["text_encoder_2"], ckpt, prefix=SDXL_OPENCLIP_PREFIX)
        same_shapes(states["text_encoder_2"], te2)
        # key counts of the real sd_xl_base_1.0 file: UNet 1680; OpenCLIP bigG 32 x 12 + 6 (incl. logit_scale)
        assert sum(k.startswith(UNET_PREFIX) for k in ckpt) == 1680
        assert sum(k.startswith(SDXL_OPENCLIP_PREFIX) for k in ckpt) == 390
    else:
        assert sum(k.startswith(UNET_PREFIX) for k in ckpt) == 686  # as in v1-5-pruned-emaonly
    assert sum(k.startswith(VAE_PREFIX) for k in ckpt) == 248


# ---- the SDXL refiner ------------------------------------------------------------------------------


def test_refiner_single_file_roundtrip(tiny_sdxl_refiner_reference, tiny_sdxl_refiner_file, tmp_path, no_network):
    loaded = _load_single_file(Architecture.SDXL_REFINER, tiny_sdxl_refiner_file, tmp_path / "cache")
    assert type(loaded) is StableDiffusionXLImg2ImgPipeline
    assert loaded.text_encoder is None and loaded.tokenizer is None and loaded.tokenizer_2.pad_token == "!"
    assert loaded.config.requires_aesthetics_score is True and loaded.config.force_zeros_for_empty_prompt is False
    assert_same_weights(tiny_sdxl_refiner_reference, loaded)
    assert type(loaded.scheduler) is type(tiny_sdxl_refiner_reference.scheduler)


def test_refiner_file_uses_the_refiner_layout(tiny_sdxl_refiner_file, tiny_sdxl_refiner_reference):
    keys = set(load_file(str(tiny_sdxl_refiner_file)))
    assert f"{UNET_PREFIX}label_emb.0.0.weight" in keys and f"{VAE_PREFIX}decoder.conv_out.weight" in keys
    for name in ("token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection"):
        assert REFINER_OPENCLIP_PREFIX + name in keys
    assert not any(k.startswith(("conditioner.embedders.1.", "conditioner.embedders.0.transformer.")) for k in keys)
    assert not any(k.startswith("cond_stage_model.") for k in keys)
    # its own weights, not the base's: the fixture builds it from another seed
    from tests.support.tiny_models import tiny_sdxl_pipeline

    base_vae = tiny_sdxl_pipeline(seed=0).vae.state_dict()
    assert not torch.equal(
        base_vae["decoder.conv_out.weight"], tiny_sdxl_refiner_reference.vae.state_dict()["decoder.conv_out.weight"]
    )


def test_full_size_refiner_layout_is_what_diffusers_reads_back():
    """The bundled refiner configs, exported at real size on the meta device, are what diffusers calls
    "xl_refiner" and convert back to the same shapes with its own converters."""
    arch = Architecture.SDXL_REFINER
    models = _meta_models(arch)
    assert set(models) == {"unet", "vae", "text_encoder_2"}
    configs = bundled_configs(arch)
    states = {name: model.state_dict() for name, model in models.items()}
    ckpt = ldm_state_dict(arch, states, configs)
    assert infer_diffusers_model_type(ckpt) == "xl_refiner"
    unet = convert_ldm_unet_checkpoint(ckpt, configs["unet"])
    assert unet.keys() == states["unet"].keys() and all(unet[k].shape == states["unet"][k].shape for k in unet)
    te2 = convert_open_clip_checkpoint(models["text_encoder_2"], ckpt, prefix=REFINER_OPENCLIP_PREFIX)
    assert te2.keys() == states["text_encoder_2"].keys()
    assert all(te2[k].shape == states["text_encoder_2"][k].shape for k in te2)
    assert sum(k.startswith(VAE_PREFIX) for k in ckpt) == 248
    assert sum(k.startswith(REFINER_OPENCLIP_PREFIX) for k in ckpt) == 390


def test_component_mappings_reject_unknown_tensors():
    with pytest.raises(KeyError, match="mystery"):
        unet_to_ldm({"mystery.weight": torch.zeros(1)}, {"layers_per_block": 1, "up_block_types": []})
    with pytest.raises(KeyError, match="mystery"):
        vae_to_ldm({"encoder.mystery.weight": torch.zeros(1)}, {"up_block_types": []})
    with pytest.raises(KeyError, match="mystery"):
        open_clip_to_ldm({"encoder.layers.0.mystery.weight": torch.zeros(1)}, SDXL_OPENCLIP_PREFIX)
    assert set(clip_to_ldm({"final_layer_norm.weight": torch.zeros(1)}, SD1_CLIP_PREFIX)) == {
        SD1_CLIP_PREFIX + "final_layer_norm.weight"
    }


# ---- the tiny models themselves ------------------------------------------------------------------


def _tiny(arch: Architecture, **kwargs):
    from tests.support.tiny_models import tiny_sd15_pipeline, tiny_sdxl_pipeline

    return (tiny_sd15_pipeline if arch == Architecture.SD1 else tiny_sdxl_pipeline)(**kwargs)


def test_tiny_weights_are_seeded_and_fully_random(arch, reference):
    again = _tiny(arch, seed=0)
    assert_same_weights(reference, again)
    other = _tiny(arch, seed=1).unet.state_dict()
    for name in MODEL_COMPONENTS:
        model = getattr(reference, name, None)
        for key, value in ({} if model is None else model.state_dict()).items():
            if not value.is_floating_point():
                continue  # position_ids
            assert value.std() > 0, f"{name}.{key} is constant"
    assert not torch.equal(other["conv_in.weight"], reference.unet.state_dict()["conv_in.weight"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_tiny_models_generate_finite_images(arch, dtype):
    pipe = _tiny(arch, seed=0, dtype=dtype)
    assert pipe.unet.dtype == dtype
    image = pipe(
        "a photo of a cat",
        negative_prompt="blurry",
        height=64,
        width=64,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert image.shape == (1, 64, 64, 3)
    assert not (image != image).any() and 0.05 < float(image.std()) < 0.45
