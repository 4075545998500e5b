"""Reading LoRA files of every layout and mapping them onto our pipelines' modules.

The files are written the way trainers write them (tests/support/lora_files.py: kohya names computed with the
checkpoint exporter's own LDM mapping, PEFT files written by diffusers itself), and the mapping is checked
against what was written, layer by layer. Every trainer's exact spelling, on hand-typed layer names, is
tested in test_published_loras.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from pipelines.errors import LoraError
from pipelines.loading.probe import probe_file
from pipelines.loras.formats import read_lora
from pipelines.loras.info import lora_info, top_tags
from pipelines.loras.names import unet_ldm_name, unet_ldm_prefixes
from pipelines.loras.targets import CHUNK_ELEMENTS, ModuleIndex, add_low_rank_, resolve
from pipelines.types import Architecture, ModelKind
from tests.support.ckpt_export import unet_to_ldm
from tests.support.full_size import bundled_configs
from tests.support.lora_files import kohya_lora, peft_lora


@pytest.fixture(scope="module")
def sd15(tiny_sd15_reference):
    return tiny_sd15_reference


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_reference):
    return tiny_sdxl_reference


def _targets(lora, pipe, arch):
    return {(p.component, p.path): p for p in resolve(lora, ModuleIndex.build(pipe, arch), "tiny")}


@pytest.mark.parametrize("arch", [Architecture.SD1, Architecture.SDXL])
def test_ldm_names_match_the_checkpoint_layout_at_full_size(arch):
    """Every UNet tensor's LDM name, from our module walk, is the key the single-file exporter writes."""
    config = bundled_configs(arch)["unet"]
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config)
    state = {k: v for k, v in unet.state_dict().items()}
    exported = set(unet_to_ldm(state, dict(unet.config)))
    prefixes = unet_ldm_prefixes(unet)
    for key in state:
        module, _, leaf = key.rpartition(".")
        assert f"{unet_ldm_name(module, prefixes)}.{leaf}" in exported, key


@pytest.mark.parametrize("arch_name", ["sd1", "sdxl"])
def test_kohya_file_maps_every_layer_it_was_written_for(request, tmp_path, arch_name):
    arch = Architecture(arch_name)
    pipe = request.getfixturevalue("sd15" if arch is Architecture.SD1 else "sdxl")
    written = kohya_lora(pipe, arch, tmp_path / "k.safetensors", rank=4, alpha=2.0)
    lora = read_lora(tmp_path / "k.safetensors")
    assert lora.format == "kohya" and lora.architecture is arch
    targets = _targets(lora, pipe, arch)
    assert set(targets) == set(written)
    components = {c for c, _ in targets}
    assert components == ({"unet", "text_encoder"} if arch is Architecture.SD1 else {"unet", "text_encoder", "text_encoder_2"})
    for key, patch in targets.items():
        down, up, alpha = written[key]
        assert torch.equal(patch.pair.down, down) and torch.equal(patch.pair.up, up)
        assert patch.pair.scale == alpha / 4


def test_locon_conv_layer_delta_has_the_kernel_shape(tmp_path, sd15):
    written = kohya_lora(sd15, Architecture.SD1, tmp_path / "c.safetensors", conv=True, text_encoders=False)
    lora = read_lora(tmp_path / "c.safetensors")
    assert lora.format == "LyCORIS LoCon"
    [conv] = [p for p in _targets(lora, sd15, Architecture.SD1).values() if p.weight.ndim == 4 and p.weight.shape[-1] == 3]
    down, up, alpha = written[(conv.component, conv.path)]
    delta = conv.change(conv.weight.detach().float(), 1.5)
    assert delta.shape == conv.weight.shape
    # the reference: a 1x1 conv applied after the 3x3 one is one 3x3 conv with kernel up @ down
    expected = torch.einsum("or,rikl->oikl", up.float()[:, :, 0, 0], down.float()) * (1.5 * alpha / down.shape[0])
    torch.testing.assert_close(delta, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch_name", ["sd1", "sdxl"])
def test_peft_file_written_by_diffusers_uses_its_header_scale(request, tmp_path, arch_name):
    arch = Architecture(arch_name)
    pipe = request.getfixturevalue("sd15" if arch is Architecture.SD1 else "sdxl")
    written = peft_lora(pipe, arch, tmp_path / "p.safetensors", rank=4, alpha=8.0)
    lora = read_lora(tmp_path / "p.safetensors")
    assert lora.format == "PEFT"
    targets = _targets(lora, pipe, arch)
    assert set(targets) == set(written)
    assert {p.pair.scale for p in targets.values()} == {2.0}  # lora_alpha 8 / r 4, from lora_adapter_metadata


def test_old_diffusers_spellings_map_to_the_same_layers(tmp_path, sd15):
    """`lora.down`, `lora_linear_layer` and attention-processor keys (`attn1.processor.to_q_lora`)."""
    written = peft_lora(sd15, Architecture.SD1, tmp_path / "p.safetensors")
    tensors = {}
    for (component, path), (down, up, _) in written.items():
        if component == "unet" and path.endswith(("attn1.to_q", "attn1.to_out.0")):
            stem = path.replace("attn1.to_q", "attn1.processor.to_q").replace("attn1.to_out.0", "attn1.processor.to_out")
            tensors[f"unet.{stem}_lora.down.weight"], tensors[f"unet.{stem}_lora.up.weight"] = down, up
        elif component == "unet":
            tensors[f"unet.{path}.lora.down.weight"], tensors[f"unet.{path}.lora.up.weight"] = down, up
        elif path.endswith("q_proj"):
            stem = path.replace("q_proj", "to_q")
            tensors[f"text_encoder.{stem}_lora.down.weight"], tensors[f"text_encoder.{stem}_lora.up.weight"] = down, up
        else:
            tensors[f"text_encoder.{path}.lora_linear_layer.down.weight"] = down
            tensors[f"text_encoder.{path}.lora_linear_layer.up.weight"] = up
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "old.safetensors"))
    lora = read_lora(tmp_path / "old.safetensors")
    assert lora.format == "diffusers"
    targets = _targets(lora, sd15, Architecture.SD1)
    assert set(targets) == set(written)
    assert {p.pair.scale for p in targets.values()} == {1.0}  # no alpha, no header: diffusers' default


@pytest.mark.parametrize(
    "keys,expected",
    [
        ({"lora_unet_x.oft_blocks": [4, 2, 2], "lora_unet_x.alpha": []}, "a LyCORIS OFT"),
        ({"lora_unet_x.a1.weight": [4, 8], "lora_unet_x.a2.weight": [8, 4]}, "a LyCORIS GLoRA"),
        ({"lora_unet_x.diff_b": [8]}, "a LyCORIS full layer needs diff"),
        ({"lora_unet_x.w_norm": [8], "lora_unet_x.b_norm": [6]}, "bias difference (6,) does not fit (8,)"),
        ({"lora_unet_x.weight": [8], "lora_unet_x.on_input": []}, "IA3"),
        # LyCORIS layers with a part missing or not fitting: damaged, naming the layer
        ({"lora_unet_x.hada_w1_a": [4, 8], "lora_unet_x.hada_w1_b": [8, 4]}, "'lora_unet_x': a LoHa layer needs hada_w2_a"),
        ({"lora_unet_x.lokr_w1": [4, 4], "lora_unet_x.lokr_w2_a": [4, 2]}, "a LoKr layer needs lokr_w2_b"),
        (
            {
                "lora_unet_x.hada_w1_a": [8, 4],
                "lora_unet_x.hada_w1_b": [4, 6],
                "lora_unet_x.hada_w2_a": [8, 4],
                "lora_unet_x.hada_w2_b": [3, 6],
            },
            "factors that do not multiply",
        ),
        (
            {
                "lora_unet_x.lora_down.weight": [4, 8, 1, 1],
                "lora_unet_x.lora_up.weight": [8, 4, 1, 1],
                "lora_unet_x.lora_mid.weight": [2, 4, 3, 3],
            },
            "lora_mid (2, 4, 3, 3) does not fit",
        ),
        ({"lora_unet_x.dora_scale": [1, 8], "lora_unet_x.alpha": []}, "DoRA magnitudes but no weights"),
        ({"foo.bar": [3, 3], "model.weight": [2]}, "not a LoRA this app understands"),
        ({"lora_unet_x.lora_down.weight": [4, 8]}, "has no up weight"),
    ],
)
def test_layouts_that_cannot_be_applied_are_refused_naming_the_file(tmp_path, keys, expected):
    path = tmp_path / "strange-file.safetensors"
    save_file({k: torch.ones(shape) for k, shape in keys.items()}, str(path))
    with pytest.raises(LoraError) as err:
        read_lora(path)
    assert "strange-file.safetensors" in str(err.value) and expected in str(err.value)


def test_wrong_architecture_unknown_layers_and_wrong_shapes(tmp_path, sd15, sdxl):
    kohya_lora(sd15, Architecture.SD1, tmp_path / "sd15-style.safetensors")
    with pytest.raises(LoraError) as err:
        resolve(read_lora(tmp_path / "sd15-style.safetensors"), ModuleIndex.build(sdxl, Architecture.SDXL), "tiny-sdxl")
    assert "sd15-style.safetensors" in str(err.value) and "SD 1.x" in str(err.value) and "SDXL" in str(err.value)

    # names that exist in no model of this kind
    save_file(
        {
            "lora_unet_nowhere_block_9.lora_down.weight": torch.ones(2, 4),
            "lora_unet_nowhere_block_9.lora_up.weight": torch.ones(4, 2),
        },
        str(tmp_path / "odd.safetensors"),
    )
    with pytest.raises(LoraError) as err:
        resolve(read_lora(tmp_path / "odd.safetensors"), ModuleIndex.build(sd15, Architecture.SD1), "tiny-sd15")
    assert "odd.safetensors" in str(err.value) and "lora_unet_nowhere_block_9" in str(err.value)

    # the right names with the wrong widths (what a LoRA for a bigger model of the same family looks like)
    written = kohya_lora(sd15, Architecture.SD1, tmp_path / "ok.safetensors", text_encoders=False)
    lora = read_lora(tmp_path / "ok.safetensors")
    lora.pairs[0].down = torch.ones(4, 7)
    with pytest.raises(LoraError) as err:
        resolve(lora, ModuleIndex.build(sd15, Architecture.SD1), "tiny-sd15")
    assert "ok.safetensors" in str(err.value) and "shape" in str(err.value)
    assert written  # the file itself was fine


def test_registry_lists_tiny_loras_with_their_architecture(tmp_path, sd15, sdxl):
    kohya_lora(sd15, Architecture.SD1, tmp_path / "a.safetensors")
    kohya_lora(sdxl, Architecture.SDXL, tmp_path / "b.safetensors")
    assert probe_file(tmp_path / "a.safetensors").kind is ModelKind.LORA
    assert probe_file(tmp_path / "a.safetensors").architecture is Architecture.SD1
    assert probe_file(tmp_path / "b.safetensors").architecture is Architecture.SDXL


def test_training_metadata_for_the_ui(tmp_path, sd15):
    tags = {"10_style": {"masterpiece": 40, "red hair": 12, "1girl": 30}, "5_extra": {"red hair": 20, "": 3}}
    metadata = {
        "ss_tag_frequency": json.dumps(tags),
        "ss_base_model_version": "sd_v1",
        "ss_network_dim": "4",
        "ss_network_alpha": "2.0",
        "ss_output_name": "redhair-style",
        "modelspec.trigger_phrase": "rhstyle, red hair",
    }
    path = tmp_path / "redhair.safetensors"
    kohya_lora(sd15, Architecture.SD1, path, metadata=metadata)
    path.with_suffix(".json").write_text(json.dumps({"activation text": "rhstyle", "preferred weight": 0.8}))
    path.with_suffix(".civitai.info").write_text(json.dumps({"trainedWords": ["crimson locks"]}))
    info = lora_info("redhair", path, "SD 1.x")
    assert info.top_tags[:3] == (("masterpiece", 40), ("red hair", 32), ("1girl", 30))
    assert info.base_model == "sd_v1" and info.title == "redhair-style"
    assert info.trigger_words == ("rhstyle", "red hair", "crimson locks")
    assert info.rank == 4 and info.alpha == 2.0 and info.preferred_weight == 0.8
    assert info.to_dict()["top_tags"][0] == ["masterpiece", 40]
    assert top_tags("not json") == []
    # the file's metadata also decides the architecture when the keys cannot
    assert read_lora(path).metadata["ss_base_model_version"] == "sd_v1"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_get_the_float32_sum_rounded_once(dtype):
    gen = torch.Generator().manual_seed(0)
    rows, cols = 3 * CHUNK_ELEMENTS // 200 + 7, 200  # several row blocks and a ragged last one
    base = torch.randn(rows, cols, generator=gen).to(dtype)
    up, down = torch.randn(rows, 6, generator=gen) * 0.1, torch.randn(6, cols, generator=gen) * 0.1
    weight = base.clone()
    add_low_rank_(weight, up, down)
    exact = base.float() + up @ down
    rounded_once = exact.to(dtype)
    # equal to rounding the float32 result once (a last-bit difference allowed where float32 sums tie)
    assert (weight != rounded_once).float().mean() < 1e-3
    torch.testing.assert_close(weight.float(), exact, rtol=2**-7, atol=1e-3)
    # and closer to the exact sum than adding a half-precision delta would be
    naive = base + (up @ down).to(dtype)
    assert (weight.float() - exact).abs().sum() < (naive.float() - exact).abs().sum()


@pytest.mark.parametrize("algo", ["loha", "loha-tucker", "lokr", "lokr-tucker", "locon-cp"])
@pytest.mark.parametrize("dora", [None, "input", "output"])
@pytest.mark.parametrize("shape", [(36, 20, 3, 3), (36, 20)], ids=["conv", "linear"])
def test_lycoris_changes_patched_a_few_rows_at_a_time_equal_the_whole(monkeypatch, algo, dora, shape):
    """add_changes_ on the CPU goes through a layer in blocks of rows; with blocks of 5 rows (not a multiple of
    LoKr's 6-row w2 blocks) a channels-last convolution and a linear layer get what LyCORIS's definitions give."""
    from pipelines.loras import targets
    from pipelines.loras.formats import parse_lora
    from tests.support.lycoris_layers import ALGOS, WrittenLayer

    gen = torch.Generator().manual_seed(3)
    parts = ALGOS[algo](shape, 4, gen)
    endings = {"down": ".lora_down.weight", "up": ".lora_up.weight", "lora_mid": ".lora_mid.weight"}
    tensors = {f"lora_unet_x{endings.get(role, '.' + role)}": t for role, t in parts.items()}
    tensors["lora_unet_x.alpha"] = torch.tensor(2.0)
    magnitude = None
    if dora == "input":
        magnitude = 0.5 + torch.rand(1, shape[1], *[1] * (len(shape) - 2), generator=gen)
    elif dora == "output":
        magnitude = 0.5 + torch.rand(shape[0], generator=gen)
    if magnitude is not None:
        tensors["lora_unet_x.dora_scale"] = magnitude
    [change] = parse_lora(Path("x.safetensors"), tensors).pairs
    base = torch.randn(*shape, generator=gen)
    weight = torch.nn.Parameter(base.clone().contiguous(memory_format=torch.channels_last) if len(shape) == 4 else base.clone())
    patch = targets.LayerPatch("unet", "x", weight, change)
    monkeypatch.setattr(targets, "CHUNK_ELEMENTS", 5 * weight[0].numel())
    targets.add_changes_(weight.data, [(patch, 0.7)])
    rank = 4
    expected = WrittenLayer(parts, 2.0 / rank, magnitude).expected(base, 0.7)
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-5, atol=1e-5)
