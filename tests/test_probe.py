"""Model identification from the tensors themselves, and refusing pickles that carry code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pipelines.errors import UnsafeCheckpoint
from pipelines.loading.probe import load_pickle_state_dict, probe_diffusers_folder, probe_file, probe_keys
from pipelines.types import Architecture, ModelKind


def test_single_files_are_identified(tiny_sd15_file, tiny_sdxl_file):
    assert probe_file(tiny_sd15_file).architecture is Architecture.SD1
    assert probe_file(tiny_sdxl_file).architecture is Architecture.SDXL
    assert probe_file(tiny_sd15_file).kind is ModelKind.CHECKPOINT
    assert probe_file(tiny_sd15_file).note == ""


def test_diffusers_folders_are_identified(tiny_sd15_diffusers, tiny_sdxl_diffusers):
    assert probe_diffusers_folder(tiny_sd15_diffusers).architecture is Architecture.SD1
    assert probe_diffusers_folder(tiny_sdxl_diffusers).architecture is Architecture.SDXL


def test_ckpt_with_tensors_only_is_identified(tmp_path, tiny_sd15_file):
    from safetensors.torch import load_file

    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(tiny_sd15_file)}, path)
    assert probe_file(path).architecture is Architecture.SD1


class _Payload:
    """Unpickling this object would create a marker file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_ckpt_never_executes(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "trap": _Payload(marker)}, evil)
    assert not marker.exists()
    result = probe_file(evil)
    assert result.kind is ModelKind.UNKNOWN and "more than tensors" in result.note
    with pytest.raises(UnsafeCheckpoint, match="evil.ckpt"):
        load_pickle_state_dict(evil)
    assert not marker.exists()


@pytest.mark.parametrize(
    "keys,kind,arch",
    [
        (
            {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": [4, 320], "lora_te_text_model_x.alpha": []},
            ModelKind.LORA,
            Architecture.SD1,
        ),
        (
            {"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": [4, 640], "lora_te1_x.alpha": []},
            ModelKind.LORA,
            Architecture.SDXL,
        ),
        ({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": [4, 1280]}, ModelKind.LORA, Architecture.SDXL),
        (
            {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": [4, 768]},
            ModelKind.LORA,
            Architecture.SD1,
        ),
        # LyCORIS LoHa and LoKr: the width from w_b, or from the two Kronecker factors' widths (48 x 16 = 768)
        (
            {"lora_unet_output_blocks_0_1_transformer_blocks_0_attn2_to_k.hada_w1_b": [8, 2048]},
            ModelKind.LORA,
            Architecture.SDXL,
        ),
        (
            {
                "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lokr_w1": [16, 48],
                "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lokr_w2_b": [4, 16],
            },
            ModelKind.LORA,
            Architecture.SD1,
        ),
        (
            {"lycoris_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.lokr_w1_b": [4, 32], "x.lokr_w2": [40, 32]},
            ModelKind.LORA,
            Architecture.UNKNOWN,  # no w2 of that layer: the width is not known
        ),
        # names only one architecture has, where no cross-attention key tells the width
        ({"lora_unet_input_blocks_1_1_proj_in.lora_down.weight": [4, 320, 1, 1]}, ModelKind.LORA, Architecture.SD1),
        ({"lora_unet_output_blocks_9_1_proj_out.lora_down.weight": [4, 320]}, ModelKind.LORA, Architecture.SD1),
        ({"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": [4, 640]}, ModelKind.LORA, Architecture.SDXL),
        (
            {"lora_unet_down_blocks_2_attentions_0_transformer_blocks_9_ff_net_2.lora_down.weight": [4, 5120]},
            ModelKind.LORA,
            Architecture.SDXL,
        ),
        ({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": [4, 768]}, ModelKind.LORA, Architecture.SD1),
        # diffusers' old attention processors (`unet.save_attn_procs`: no component prefix)
        (
            {"down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight": [4, 320]},
            ModelKind.LORA,
            Architecture.UNKNOWN,
        ),
        (
            {"encoder.down.0.block.0.conv1.weight": [128, 128, 3, 3], "decoder.up.0.block.0.conv1.weight": [1]},
            ModelKind.VAE,
            Architecture.UNKNOWN,
        ),
        ({"emb_params": [2, 768]}, ModelKind.EMBEDDING, Architecture.SD1),
        ({"clip_l": [2, 768], "clip_g": [2, 1280]}, ModelKind.EMBEDDING, Architecture.SDXL),
        (
            {"model.diffusion_model.input_blocks.0.0.weight": [320, 9, 3, 3], "cond_stage_model.transformer.x": [1]},
            ModelKind.CHECKPOINT,
            Architecture.SD1,
        ),
        ({"model.diffusion_model.x": [1], "cond_stage_model.model.x": [1]}, ModelKind.CHECKPOINT, Architecture.SD2),
        (
            {"model.diffusion_model.x": [1], "conditioner.embedders.0.model.x": [1]},
            ModelKind.CHECKPOINT,
            Architecture.SDXL_REFINER,
        ),
        ({"something.else": [3, 3]}, ModelKind.UNKNOWN, Architecture.UNKNOWN),
    ],
)
def test_key_layouts(keys, kind, arch):
    result = probe_keys(keys)
    assert (result.kind, result.architecture) == (kind, arch)


def test_inpainting_checkpoints_are_usable_and_marked():
    conv_in = "model.diffusion_model.input_blocks.0.0.weight"
    sd15 = probe_keys({conv_in: [320, 9, 3, 3], "cond_stage_model.transformer.x": [1]})
    assert (sd15.architecture, sd15.note, sd15.inpainting) == (Architecture.SD1, "", True)
    sdxl = probe_keys({conv_in: [320, 9, 3, 3], "conditioner.embedders.1.model.x": [1]})
    assert (sdxl.architecture, sdxl.note, sdxl.inpainting) == (Architecture.SDXL, "", True)
    assert not probe_keys({conv_in: [320, 4, 3, 3], "cond_stage_model.transformer.x": [1]}).inpainting


def test_unusable_checkpoints_say_why():
    pix2pix = probe_keys({"model.diffusion_model.input_blocks.0.0.weight": [320, 8, 3, 3], "cond_stage_model.transformer.x": [1]})
    assert "8 input channels" in pix2pix.note and not pix2pix.inpainting
    assert "not supported" in probe_keys({"model.diffusion_model.x": [1], "cond_stage_model.model.x": [1]}).note


def test_garbage_files_do_not_crash(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01garbage")
    assert probe_file(junk).kind is ModelKind.UNKNOWN
    empty = tmp_path / "empty.safetensors"
    save_file({"something.else": torch.zeros(2)}, empty)
    assert probe_file(empty).kind is ModelKind.UNKNOWN
    shutil.copy(junk, tmp_path / "junk.ckpt")
    assert probe_file(tmp_path / "junk.ckpt").kind is ModelKind.UNKNOWN
