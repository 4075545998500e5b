"""LoRA key spellings as trainers publish them, typed here by hand, and a writer of random-weight files in each.

Nothing here is derived from the names of the modules the app loads: the layer paths below are the published
ones (diffusers UNet paths; transformers-4 CLIP paths, always under `text_model.`; the LDM block names kohya's
SDXL scripts use), typed for the tiny models of tiny_models.py, with their shapes worked out from those
configs. Each format then spells a layer as its trainer does:

- kohya sd-scripts (networks/lora.py): `lora_unet_` / `lora_te_` (SD1) / `lora_te1_`, `lora_te2_` (SDXL) +
  the module path with dots as underscores, `.lora_down.weight`, `.lora_up.weight`, `.alpha`. SD1 UNet paths
  are diffusers', SDXL's are LDM's (`input_blocks_4_1_…`); files of either spelling exist for both models.
- LyCORIS LoCon: kohya's keys, with resnet and sampler convolutions too (3x3 down, 1x1 up); with CP
  decomposition a `lora_mid` (rank, rank, 3, 3) core between a 1x1 down and a 1x1 up.
- LyCORIS LoHa / LoKr (lycoris/modules/loha.py, lokr.py): kohya's stems with `hada_w1_a`, `hada_w1_b`,
  `hada_w2_a`, `hada_w2_b` (out x rank, rank x in·kh·kw; with Tucker cores `hada_t1`/`hada_t2` (rank, rank, 3, 3)
  the factors are rank x out and rank x in) or `lokr_w1` (whole) / `lokr_w1_a`, `lokr_w1_b` and `lokr_w2` /
  `lokr_w2_a` (out₂ x rank), `lokr_w2_b` (rank x in₂ x kh x kw) / `lokr_t2` with rank x out₂, rank x in₂.
- LyCORIS full: `diff` (the weight's difference) and `diff_b` where the layer has a bias; norm layers
  (train_norm, any algorithm): `w_norm`, `b_norm`.
- SimpleTuner's LyCORIS files: the UNet's diffusers paths flattened under `lycoris_` (`lycoris_down_blocks_1_…`).
- DoRA: LyCORIS's `dora_scale`, one magnitude per input channel (1, in[, 1, 1]); PEFT's `lora_magnitude_vector`,
  one per output channel (out,).
- diffusers `train_dreambooth_lora` 0.14–0.16 (attention processors): `unet.…attn1.processor.to_q_lora.down.weight`,
  `text_encoder.text_model.….self_attn.to_q_lora.down.weight`; `unet.save_attn_procs` the same without `unet.`,
  in `pytorch_lora_weights.bin`.
- diffusers 0.17–0.21 (LoRACompatibleLinear / patched text encoders): `unet.<path>.lora.down.weight`,
  `text_encoder.<path>.lora_linear_layer.down.weight`.
- diffusers >= 0.22 (PEFT): `unet.<path>.lora_A.weight` / `.lora_B.weight`, `text_encoder(_2).<path>.…`, the scale
  in the `lora_adapter_metadata` header in recent versions (without it: 1). Trained on transformers 5, the text
  encoder paths lack `text_model.`.
- PEFT `save_pretrained`: `adapter_model.safetensors` with `base_model.model.<path>.lora_A.weight`, and
  `adapter_config.json` (r, lora_alpha) beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file

from pipelines.types import Architecture
from tests.support.lycoris_layers import ALGOS, WrittenLayer


@dataclass(frozen=True)
class Layer:
    """One layer of a tiny model as published files name it."""

    component: str  # unet, text_encoder, text_encoder_2
    path: str  # diffusers UNet path / transformers-4 CLIP path (under `text_model.`)
    shape: tuple[int, ...]  # the weight's shape in the tiny model: (out, in) or (out, in, kh, kw)
    kind: str  # attn, unet_linear, conv (UNet); te_attn, te_mlp (text encoders)
    ldm: str | None = None  # the UNet layer's LDM path (kohya SDXL, LDM-named SD1 files)


def _unet(kind: str, path: str, ldm: str, shape: tuple[int, ...]) -> Layer:
    return Layer("unet", path, shape, kind, ldm)


def _clip(component: str, width: int, inner: int, layers: int = 3) -> list[Layer]:
    """The attention and MLP linears of a CLIP text encoder: `text_model.encoder.layers.N.…` in every published file."""
    out = []
    for i in range(layers):
        base = f"text_model.encoder.layers.{i}"
        out += [
            Layer(component, f"{base}.self_attn.{p}", (width, width), "te_attn")
            for p in ("q_proj", "k_proj", "v_proj", "out_proj")
        ]
        out += [
            Layer(component, f"{base}.mlp.fc1", (inner, width), "te_mlp"),
            Layer(component, f"{base}.mlp.fc2", (width, inner), "te_mlp"),
        ]
    return out


# Tiny SD1.5: channels 32/32/64/64, one resnet (+ attention) per level, cross-attention width 32,
# proj_in/proj_out 1x1 convolutions, time embedding 128. LDM numbering: input block 0 is conv_in, then per
# level (resnet, attention) blocks and a downsampler; output blocks per level 2, the upsampler last.
SD1_LAYERS: tuple[Layer, ...] = (
    _unet(
        "attn",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "input_blocks.1.1.transformer_blocks.0.attn1.to_q",
        (32, 32),
    ),
    _unet(
        "attn",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k",
        "input_blocks.1.1.transformer_blocks.0.attn1.to_k",
        (32, 32),
    ),
    _unet(
        "attn",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v",
        "input_blocks.1.1.transformer_blocks.0.attn1.to_v",
        (32, 32),
    ),
    _unet(
        "attn",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0",
        "input_blocks.1.1.transformer_blocks.0.attn1.to_out.0",
        (32, 32),
    ),
    _unet(
        "attn",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k",
        (32, 32),
    ),
    _unet(
        "attn",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v",
        "input_blocks.3.1.transformer_blocks.0.attn2.to_v",
        (32, 32),
    ),
    _unet(
        "attn",
        "down_blocks.2.attentions.0.transformer_blocks.0.attn2.to_k",
        "input_blocks.5.1.transformer_blocks.0.attn2.to_k",
        (64, 32),
    ),
    _unet(
        "attn",
        "mid_block.attentions.0.transformer_blocks.0.attn1.to_q",
        "middle_block.1.transformer_blocks.0.attn1.to_q",
        (64, 64),
    ),
    _unet(
        "attn",
        "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v",
        "output_blocks.3.1.transformer_blocks.0.attn2.to_v",
        (64, 32),
    ),
    _unet(
        "attn",
        "up_blocks.3.attentions.1.transformer_blocks.0.attn1.to_out.0",
        "output_blocks.7.1.transformer_blocks.0.attn1.to_out.0",
        (32, 32),
    ),
    _unet("unet_linear", "down_blocks.0.attentions.0.proj_in", "input_blocks.1.1.proj_in", (32, 32, 1, 1)),
    _unet(
        "unet_linear",
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj",
        "input_blocks.1.1.transformer_blocks.0.ff.net.0.proj",
        (256, 32),
    ),
    _unet(
        "unet_linear",
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2",
        "input_blocks.1.1.transformer_blocks.0.ff.net.2",
        (32, 128),
    ),
    _unet("unet_linear", "up_blocks.2.attentions.0.proj_out", "output_blocks.4.1.proj_out", (32, 32, 1, 1)),
    _unet("conv", "down_blocks.0.resnets.0.conv1", "input_blocks.1.0.in_layers.2", (32, 32, 3, 3)),
    _unet("conv", "down_blocks.0.resnets.0.time_emb_proj", "input_blocks.1.0.emb_layers.1", (32, 128)),
    _unet("conv", "down_blocks.2.resnets.0.conv_shortcut", "input_blocks.5.0.skip_connection", (64, 32, 1, 1)),
    _unet("conv", "down_blocks.0.downsamplers.0.conv", "input_blocks.2.0.op", (32, 32, 3, 3)),
    _unet("conv", "mid_block.resnets.1.conv2", "middle_block.2.out_layers.3", (64, 64, 3, 3)),
    _unet("conv", "up_blocks.0.upsamplers.0.conv", "output_blocks.1.1.conv", (64, 64, 3, 3)),
    _unet("conv", "up_blocks.1.upsamplers.0.conv", "output_blocks.3.2.conv", (64, 64, 3, 3)),
    _unet("norm", "down_blocks.0.resnets.0.norm1", "input_blocks.1.0.in_layers.0", (32,)),
    _unet(
        "norm",
        "down_blocks.0.attentions.0.transformer_blocks.0.norm1",
        "input_blocks.1.1.transformer_blocks.0.norm1",
        (32,),
    ),
    _unet("norm", "up_blocks.1.attentions.1.norm", "output_blocks.3.1.norm", (64,)),
    *_clip("text_encoder", width=32, inner=64),
    Layer("text_encoder", "text_model.encoder.layers.0.layer_norm1", (32,), "te_norm"),
    Layer("text_encoder", "text_model.final_layer_norm", (32,), "te_norm"),
)

# Tiny SDXL: channels 32/32/64, two resnets (+ attentions) per level, no attention at the first level,
# transformer depth 1/1/2 (the middle block 2), cross-attention width 96 (32 + 64), linear proj_in/proj_out.
# LDM numbering as the real SDXL's: input blocks 4, 5, 7, 8 and output blocks 0–5 have attention.
SDXL_LAYERS: tuple[Layer, ...] = (
    _unet(
        "attn",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        "input_blocks.4.1.transformer_blocks.0.attn1.to_q",
        (32, 32),
    ),
    _unet(
        "attn",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k",
        "input_blocks.4.1.transformer_blocks.0.attn1.to_k",
        (32, 32),
    ),
    _unet(
        "attn",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v",
        "input_blocks.4.1.transformer_blocks.0.attn1.to_v",
        (32, 32),
    ),
    _unet(
        "attn",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0",
        "input_blocks.4.1.transformer_blocks.0.attn1.to_out.0",
        (32, 32),
    ),
    _unet(
        "attn",
        "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k",
        "input_blocks.5.1.transformer_blocks.0.attn2.to_k",
        (32, 96),
    ),
    _unet(
        "attn",
        "down_blocks.2.attentions.1.transformer_blocks.1.attn2.to_v",
        "input_blocks.8.1.transformer_blocks.1.attn2.to_v",
        (64, 96),
    ),
    _unet(
        "attn",
        "mid_block.attentions.0.transformer_blocks.1.attn1.to_out.0",
        "middle_block.1.transformer_blocks.1.attn1.to_out.0",
        (64, 64),
    ),
    _unet(
        "attn",
        "up_blocks.0.attentions.2.transformer_blocks.0.attn2.to_k",
        "output_blocks.2.1.transformer_blocks.0.attn2.to_k",
        (64, 96),
    ),
    _unet(
        "attn",
        "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v",
        "output_blocks.3.1.transformer_blocks.0.attn1.to_v",
        (32, 32),
    ),
    _unet("unet_linear", "down_blocks.1.attentions.0.proj_in", "input_blocks.4.1.proj_in", (32, 32)),
    _unet(
        "unet_linear",
        "down_blocks.2.attentions.0.transformer_blocks.0.ff.net.0.proj",
        "input_blocks.7.1.transformer_blocks.0.ff.net.0.proj",
        (512, 64),
    ),
    _unet(
        "unet_linear",
        "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2",
        "input_blocks.4.1.transformer_blocks.0.ff.net.2",
        (32, 128),
    ),
    _unet("unet_linear", "up_blocks.1.attentions.2.proj_out", "output_blocks.5.1.proj_out", (32, 32)),
    _unet("conv", "down_blocks.0.resnets.1.conv1", "input_blocks.2.0.in_layers.2", (32, 32, 3, 3)),
    _unet("conv", "down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op", (32, 32, 3, 3)),
    _unet("conv", "down_blocks.2.resnets.0.conv_shortcut", "input_blocks.7.0.skip_connection", (64, 32, 1, 1)),
    _unet("conv", "mid_block.resnets.0.time_emb_proj", "middle_block.0.emb_layers.1", (64, 128)),
    _unet("conv", "up_blocks.0.upsamplers.0.conv", "output_blocks.2.2.conv", (64, 64, 3, 3)),
    _unet("conv", "up_blocks.2.resnets.2.conv2", "output_blocks.8.0.out_layers.3", (32, 32, 3, 3)),
    _unet(
        "norm",
        "down_blocks.1.attentions.0.transformer_blocks.0.norm2",
        "input_blocks.4.1.transformer_blocks.0.norm2",
        (32,),
    ),
    _unet("norm", "mid_block.resnets.0.norm1", "middle_block.0.in_layers.0", (64,)),
    *_clip("text_encoder", width=32, inner=64),
    *_clip("text_encoder_2", width=64, inner=128),
    Layer("text_encoder_2", "text_model.encoder.layers.1.layer_norm2", (64,), "te_norm"),
)

LAYERS = {Architecture.SD1: SD1_LAYERS, Architecture.SDXL: SDXL_LAYERS}

# -- spellings -------------------------------------------------------------------------------------------

Stem = Callable[[Layer], str]

# diffusers' attention processors named their LoRA after the projection, with `_lora` appended
_UNET_PROCESSOR = {
    "to_q": "processor.to_q_lora",
    "to_k": "processor.to_k_lora",
    "to_v": "processor.to_v_lora",
    "to_out.0": "processor.to_out_lora",
}
_TE_PROCESSOR = {"q_proj": "to_q_lora", "k_proj": "to_k_lora", "v_proj": "to_v_lora", "out_proj": "to_out_lora"}


def kohya(prefix: str, ldm: bool = False) -> Stem:
    return lambda layer: prefix + ((layer.ldm if ldm and layer.ldm else layer.path).replace(".", "_"))


def dotted(prefix: str, text_model: bool = True) -> Stem:
    return lambda layer: prefix + (layer.path if text_model else layer.path.removeprefix("text_model."))


def processor(prefix: str) -> Stem:
    """`…attn1.to_out.0` -> `…attn1.processor.to_out_lora`, `…self_attn.q_proj` -> `…self_attn.to_q_lora`."""

    def stem(layer: Layer) -> str:
        table = _UNET_PROCESSOR if layer.component == "unet" else _TE_PROCESSOR
        for leaf, old in table.items():
            if layer.path.endswith("." + leaf):
                return prefix + layer.path[: -len(leaf)] + old
        raise ValueError(f"no attention-processor name for {layer.path}")

    return stem


@dataclass(frozen=True)
class Keys:
    """One component's keys in one format: a layer's stem, and the endings of its down and up matrices."""

    stem: Stem
    down: str
    up: str


KOHYA_ENDINGS = (".lora_down.weight", ".lora_up.weight")
PEFT_ENDINGS = (".lora_A.weight", ".lora_B.weight")
PROCESSOR_ENDINGS = (".down.weight", ".up.weight")


@dataclass(frozen=True)
class Format:
    """A published LoRA layout: which layers its trainer adapts and how it writes their keys and scale."""

    name: str
    arch: Architecture
    keys: dict[str, Keys]  # component -> spelling
    kinds: tuple[str, ...]  # Layer.kind values it trains
    alpha: float | None = None  # kohya/LyCORIS: a `.alpha` tensor per layer (scale alpha/rank)
    header_alpha: float | None = None  # diffusers: `lora_adapter_metadata` header with lora_alpha (scale lora_alpha/r)
    config_alpha: float | None = None  # PEFT save_pretrained: adapter_config.json beside the file
    file: str = "{name}.safetensors"  # the file name trainers give it
    dtype: torch.dtype = torch.float16
    algo: str = "lora"  # a key of ALGOS: how each layer's tensors are shaped and multiplied
    dora: str | None = None  # "input" (LyCORIS dora_scale) or "output" (PEFT lora_magnitude_vector) magnitudes

    def scale(self, rank: int) -> float:
        alpha = next((a for a in (self.alpha, self.header_alpha, self.config_alpha) if a is not None), None)
        return 1.0 if alpha is None else alpha / rank

    @property
    def magnitude_ending(self) -> str:
        return ".dora_scale" if self.dora == "input" else ".lora_magnitude_vector"


def _kohya_keys(arch: Architecture, ldm: bool) -> dict[str, Keys]:
    te = (
        {"text_encoder": "lora_te_"} if arch is Architecture.SD1 else {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
    )
    return {"unet": Keys(kohya("lora_unet_", ldm), *KOHYA_ENDINGS)} | {c: Keys(kohya(p), *KOHYA_ENDINGS) for c, p in te.items()}


def _dotted_keys(components: tuple[str, ...], endings: dict[str, tuple[str, str]], text_model: bool = True) -> dict[str, Keys]:
    return {c: Keys(dotted(f"{c}.", text_model), *endings.get(c, endings.get("text", ("", "")))) for c in components}


ALL_UNET = ("attn", "unet_linear")
TEXT = ("te_attn", "te_mlp")
NORMS = ("norm", "te_norm")  # LyCORIS's norm layers (train_norm): w_norm / b_norm
SD1, SDXL = Architecture.SD1, Architecture.SDXL
SD1_PARTS, SDXL_PARTS = ("unet", "text_encoder"), ("unet", "text_encoder", "text_encoder_2")

FORMATS: tuple[Format, ...] = (
    Format("kohya-sd1", SD1, _kohya_keys(SD1, ldm=False), ALL_UNET + TEXT, alpha=2.0),
    Format("kohya-sd1-ldm-names", SD1, _kohya_keys(SD1, ldm=True), ALL_UNET + TEXT, dtype=torch.bfloat16),
    Format("lycoris-locon-sd1", SD1, _kohya_keys(SD1, ldm=False), ALL_UNET + ("conv",) + TEXT, alpha=1.0),
    Format(
        "diffusers-attn-procs-sd1",
        SD1,
        {
            "unet": Keys(processor("unet."), *PROCESSOR_ENDINGS),
            "text_encoder": Keys(processor("text_encoder."), *PROCESSOR_ENDINGS),
        },
        ("attn", "te_attn"),
        dtype=torch.float32,
    ),
    Format(
        "diffusers-save-attn-procs-sd1",
        SD1,
        {"unet": Keys(processor(""), *PROCESSOR_ENDINGS)},
        ("attn",),
        file="{name}/pytorch_lora_weights.bin",
        dtype=torch.float32,
    ),
    Format(
        "diffusers-lora-linear-sd1",
        SD1,
        _dotted_keys(
            SD1_PARTS,
            {
                "unet": (".lora.down.weight", ".lora.up.weight"),
                "text": (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"),
            },
        ),
        ("attn", "te_attn"),
        dtype=torch.float32,
    ),
    Format("diffusers-peft-sd1", SD1, _dotted_keys(SD1_PARTS, {"unet": PEFT_ENDINGS, "text": PEFT_ENDINGS}), ("attn", "te_attn")),
    Format(
        "diffusers-peft-header-sd1",
        SD1,
        _dotted_keys(SD1_PARTS, {"unet": PEFT_ENDINGS, "text": PEFT_ENDINGS}),
        ALL_UNET + TEXT,
        header_alpha=8.0,
    ),
    Format(
        "diffusers-peft-transformers5-sd1",
        SD1,
        _dotted_keys(SD1_PARTS, {"unet": PEFT_ENDINGS, "text": PEFT_ENDINGS}, text_model=False),
        ("attn",) + TEXT,
    ),
    Format(
        "peft-save-pretrained-sd1",
        SD1,
        {"unet": Keys(dotted("base_model.model."), *PEFT_ENDINGS)},
        ALL_UNET,
        config_alpha=2.0,
        file="{name}/adapter_model.safetensors",
        dtype=torch.float32,
    ),
    Format("kohya-sdxl", SDXL, _kohya_keys(SDXL, ldm=True), ALL_UNET + TEXT, alpha=2.0),
    Format("kohya-sdxl-diffusers-names", SDXL, _kohya_keys(SDXL, ldm=False), ALL_UNET + TEXT, alpha=8.0),
    Format("lycoris-locon-sdxl", SDXL, _kohya_keys(SDXL, ldm=True), ALL_UNET + ("conv",) + TEXT, alpha=4.0, dtype=torch.bfloat16),
    Format(
        "diffusers-lora-linear-sdxl",
        SDXL,
        _dotted_keys(
            SDXL_PARTS,
            {
                "unet": (".lora.down.weight", ".lora.up.weight"),
                "text": (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"),
            },
        ),
        ("attn", "te_attn"),
        dtype=torch.float32,
    ),
    Format(
        "diffusers-peft-sdxl",
        SDXL,
        _dotted_keys(SDXL_PARTS, {"unet": PEFT_ENDINGS, "text": PEFT_ENDINGS}),
        ALL_UNET + TEXT,
        header_alpha=2.0,
    ),
    Format(
        "peft-save-pretrained-sdxl-text-encoder-2",  # no component in the names: only the shapes say which encoder
        SDXL,
        {"text_encoder_2": Keys(dotted("base_model.model."), *PEFT_ENDINGS)},
        TEXT,
        config_alpha=8.0,
        file="{name}/adapter_model.safetensors",
        dtype=torch.float32,
    ),
    # LyCORIS's other algorithms and DoRA, on kohya's stems (LyCORIS writes the same names)
    Format("lycoris-locon-cp-sd1", SD1, _kohya_keys(SD1, ldm=False), ALL_UNET + ("conv",), alpha=2.0, algo="locon-cp"),
    Format("lycoris-loha-sd1", SD1, _kohya_keys(SD1, ldm=False), ALL_UNET + ("conv",) + TEXT, alpha=2.0, algo="loha"),
    Format("lycoris-loha-tucker-sdxl", SDXL, _kohya_keys(SDXL, ldm=True), ALL_UNET + ("conv",), alpha=4.0, algo="loha-tucker"),
    Format("lycoris-lokr-sd1", SD1, _kohya_keys(SD1, ldm=False), ALL_UNET + ("conv",) + TEXT, alpha=1.0, algo="lokr"),
    Format(
        "lycoris-lokr-tucker-sdxl",
        SDXL,
        _kohya_keys(SDXL, ldm=True),
        ALL_UNET + ("conv",) + TEXT,
        alpha=2.0,
        algo="lokr-tucker",
        dtype=torch.bfloat16,
    ),
    Format("lycoris-locon-dora-sd1", SD1, _kohya_keys(SD1, ldm=False), ALL_UNET + ("conv",) + TEXT, alpha=2.0, dora="input"),
    Format(
        "lycoris-loha-dora-sdxl", SDXL, _kohya_keys(SDXL, ldm=True), ALL_UNET + ("conv",), alpha=2.0, algo="loha", dora="input"
    ),
    Format(
        "simpletuner-lycoris-lokr-sdxl",
        SDXL,
        {"unet": Keys(kohya("lycoris_"), *KOHYA_ENDINGS)},
        ALL_UNET + ("conv",),
        alpha=1.0,
        algo="lokr",
        dtype=torch.bfloat16,
    ),
    Format("lycoris-full-sd1", SD1, _kohya_keys(SD1, ldm=False), ALL_UNET + ("conv",) + TEXT + NORMS, algo="full"),
    Format(
        "lycoris-loha-norms-sdxl", SDXL, _kohya_keys(SDXL, ldm=True), ALL_UNET + ("conv",) + TEXT + NORMS, alpha=2.0, algo="loha"
    ),
    Format(
        "diffusers-peft-dora-sd1",
        SD1,
        _dotted_keys(SD1_PARTS, {"unet": PEFT_ENDINGS, "text": PEFT_ENDINGS}),
        ("attn", "te_attn"),
        header_alpha=4.0,
        dora="output",
    ),
)
FORMATS_BY_NAME = {f.name: f for f in FORMATS}

# -- writing ---------------------------------------------------------------------------------------------


def has_bias(layer: Layer) -> bool:
    """Whether the layer has a bias in SD's models: CLIP's linears, the UNet's convolutions and linears, but of the
    attention projections only to_out."""
    return layer.component != "unet" or layer.kind != "attn" or layer.path.endswith("to_out.0")


def layers_of(fmt: Format) -> list[Layer]:
    return [layer for layer in LAYERS[fmt.arch] if layer.kind in fmt.kinds and layer.component in fmt.keys]


def write_lora(fmt: Format, folder: Path, rank: int = 4, seed: int = 0) -> tuple[Path, dict[tuple[str, str], WrittenLayer]]:
    """Write `fmt` with random weights under `folder`; returns the file and {(component, published path): layer}."""
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    written: dict[tuple[str, str], WrittenLayer] = {}
    for layer in layers_of(fmt):
        keys = fmt.keys[layer.component]
        if layer.kind in NORMS:  # LyCORIS's NormModule, whatever the algorithm of the other layers
            parts = {
                "w_norm": 0.1 * torch.randn(layer.shape, generator=gen),
                "b_norm": 0.1 * torch.randn(layer.shape, generator=gen),
            }
        else:
            parts = ALGOS[fmt.algo](layer.shape, rank, gen)
            if fmt.algo == "full" and has_bias(layer):
                parts["diff_b"] = 0.1 * torch.randn(layer.shape[0], generator=gen)
        parts = {role: t.to(fmt.dtype) for role, t in parts.items()}
        magnitude = None
        if fmt.dora == "input":  # LyCORIS: (1, in, 1, 1) for a convolution, (1, in) for a linear layer
            magnitude = (0.5 + torch.rand(1, layer.shape[1], *[1] * (len(layer.shape) - 2), generator=gen)).to(fmt.dtype)
        elif fmt.dora == "output":  # PEFT: one per output channel
            magnitude = (0.5 + torch.rand(layer.shape[0], generator=gen)).to(fmt.dtype)
        stem = keys.stem(layer)
        endings = {"down": keys.down, "up": keys.up, "lora_mid": ".lora_mid.weight"}
        tensors |= {stem + endings.get(role, f".{role}"): t for role, t in parts.items()}
        if magnitude is not None:
            tensors[stem + fmt.magnitude_ending] = magnitude
        whole = "diff" in parts or "w_norm" in parts  # LyCORIS full / norm: no alpha, nothing scales them
        if fmt.alpha is not None and not whole:
            tensors[stem + ".alpha"] = torch.tensor(fmt.alpha, dtype=fmt.dtype)
        written[(layer.component, layer.path)] = WrittenLayer(parts, 1.0 if whole else fmt.scale(rank), magnitude)
    path = folder / fmt.file.format(name=fmt.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt"}
    if fmt.header_alpha is not None:  # diffusers' own header: "<component>.<LoraConfig field>"
        fields = {f"{c}.{k}": v for c in fmt.keys for k, v in (("r", rank), ("lora_alpha", fmt.header_alpha))}
        fields |= {f"{c}.use_dora": True for c in fmt.keys} if fmt.dora else {}
        metadata["lora_adapter_metadata"] = json.dumps(fields)
    if fmt.config_alpha is not None:
        config = {"peft_type": "LORA", "r": rank, "lora_alpha": fmt.config_alpha, "target_modules": ["to_q", "q_proj"]}
        (path.parent / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    if path.suffix == ".bin":
        torch.save(tensors, path)
    else:
        save_file(tensors, str(path), metadata=metadata)
    return path, written


def published_module(pipe: Any, component: str, path: str) -> torch.nn.Module:
    """The module a published path means, found by structure, not by the installed library's names: a CLIP
    path's `text_model.` is the text transformer, which transformers 5's CLIPTextModel is itself and
    transformers 4 (and CLIPTextModelWithProjection) hold as `.text_model`."""
    model = getattr(pipe, component)
    if path.startswith("text_model."):
        model, path = getattr(model, "text_model", model), path.removeprefix("text_model.")
    return model.get_submodule(path)
