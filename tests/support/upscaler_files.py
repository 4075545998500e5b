"""Upscaler files as their publishers write them, from the published key layouts, with small random weights.

Never derived from spandrel's modules or ours: the keys are those of the original releases, so a loader that
reads them wrongly fails here as it would on a user's download.
- ESRGAN (xinntao's original RRDB_ESRGAN_x4.pth, 4x-UltraSharp and most community models): one Sequential,
  `model.0` conv_first, `model.1.sub.N.RDBr.convc.0` blocks, `model.1.sub.<nb>` trunk conv, then per 2x an
  upsample + conv (`model.3`, `model.6`), `HRconv` and `conv_last`.
- Real-ESRGAN (RealESRGAN_x4plus.pth, BasicSR's RRDBNet): `{"params_ema": {conv_first, body.N.rdbr.convc,
  conv_body, conv_up1, conv_up2, conv_hr, conv_last}}`.
- Real-ESRGAN Compact (realesr-general-x4v3.pth, SRVGGNetCompact): `{"params": {body.0 conv, body.1 PReLU,
  ..., body.<last> conv to 3*scale^2 channels}}`.
- SwinIR (001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth): `{"params": {conv_first, patch_embed.norm,
  layers.N.residual_group.blocks.M.{norm1, attn.qkv, attn.proj, attn.relative_position_bias_table,
  attn.relative_position_index, attn_mask (shifted blocks), norm2, mlp.fc1, mlp.fc2}, layers.N.conv, norm,
  conv_after_body, conv_before_upsample.0, upsample.0, conv_last}}`, the index and mask buffers computed by
  the paper's formulas as the releases hold them.
spandrel needs ESRGAN's growth channels at 32 (it does not read them from the file); the width (num_feat) and
depth are small so the networks run in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

GC = 32


def _conv(state: dict, name: str, out_ch: int, in_ch: int, gen: torch.Generator, std: float = 0.1, bias: float = 0.0) -> None:
    state[f"{name}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * std
    state[f"{name}.bias"] = torch.randn(out_ch, generator=gen) * 0.01 + bias


def _rdb(state: dict, prefix: str, nf: int, gen: torch.Generator, old: bool) -> None:
    for r in (1, 2, 3):
        for c in range(1, 6):
            out_ch = nf if c == 5 else GC
            name = f"{prefix}.RDB{r}.conv{c}.0" if old else f"{prefix}.rdb{r}.conv{c}"
            _conv(state, name, out_ch, nf + (c - 1) * GC, gen)


def esrgan_state(scale: int = 4, nf: int = 8, nb: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """The original ESRGAN layout (old arch): model.0 ... model.<last>."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _conv(state, "model.0", nf, 3, gen, std=0.5)
    for i in range(nb):
        _rdb(state, f"model.1.sub.{i}", nf, gen, old=True)
    _conv(state, f"model.1.sub.{nb}", nf, nf, gen)
    ups = {2: 1, 4: 2, 8: 3}[scale]
    for k in range(1, ups + 1):
        _conv(state, f"model.{3 * k}", nf, nf, gen)  # after the nn.Upsample at model.{3k-1}
    _conv(state, f"model.{3 * ups + 2}", nf, nf, gen)  # HRconv
    _conv(state, f"model.{3 * ups + 4}", 3, nf, gen, std=0.15, bias=0.5)  # conv_last (mid-grey out)
    return state


def realesrgan_state(nf: int = 8, nb: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """BasicSR's RRDBNet as RealESRGAN_x4plus publishes it (without the params_ema wrapper)."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _conv(state, "conv_first", nf, 3, gen, std=0.5)
    for i in range(nb):
        _rdb(state, f"body.{i}", nf, gen, old=False)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        _conv(state, name, nf, nf, gen)
    _conv(state, "conv_last", 3, nf, gen, std=0.15, bias=0.5)
    return state


def compact_state(scale: int = 4, nf: int = 8, num_conv: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """SRVGGNetCompact (realesr-general-x4v3, realesr-animevideov3): convs and PReLUs in one `body` list."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _conv(state, "body.0", nf, 3, gen)
    state["body.1.weight"] = torch.full((nf,), 0.25)  # PReLU
    for i in range(1, num_conv + 1):
        _conv(state, f"body.{2 * i}", nf, nf, gen)
        state[f"body.{2 * i + 1}.weight"] = torch.full((nf,), 0.25)
    _conv(state, f"body.{2 * num_conv + 2}", 3 * scale * scale, nf, gen, std=0.2)
    return state


def write_esrgan(path: Path, scale: int = 4, seed: int = 0) -> Path:
    """`.pth` as the original ESRGAN release: the bare state dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(esrgan_state(scale, seed=seed), path)
    return path


def write_realesrgan(path: Path, seed: int = 0) -> Path:
    """`.pth` as Real-ESRGAN releases: {"params_ema": state}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": realesrgan_state(seed=seed)}, path)
    return path


def write_compact(path: Path, scale: int = 4, seed: int = 0) -> Path:
    """`.pth` as realesr-general-x4v3 ({"params": state}), or `.safetensors` with the bare state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = compact_state(scale, seed=seed)
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"params": state}, path)
    return path


def _relative_position_index(window: int) -> torch.Tensor:
    """The buffer Swin Transformer releases carry: for each pair of positions in a window, their offset's index."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    offsets = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return offsets[..., 0] * (2 * window - 1) + offsets[..., 1]


def _shifted_window_mask(size: int, window: int) -> torch.Tensor:
    """The attn_mask buffer of a shifted block (official SwinIR releases save it): -100 across shifted regions."""
    shift = window // 2
    regions = torch.zeros(size, size)
    count = 0
    for rows in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for cols in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[rows, cols] = count
            count += 1
    windows = regions.view(size // window, window, size // window, window).permute(0, 2, 1, 3).reshape(-1, window * window)
    mask = windows[:, None, :] - windows[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def swinir_state(embed: int = 12, heads: int = 2, window: int = 4, depth: int = 2, size: int = 16, seed: int = 0) -> dict:
    """Classical-SR SwinIR x2 (001_classicalSR_*_SwinIR-M_x2.pth): one residual Swin group, pixel-shuffle
    upsampling with the release's fixed 64 features."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _conv(state, "conv_first", embed, 3, gen, std=0.3)
    state["patch_embed.norm.weight"], state["patch_embed.norm.bias"] = torch.ones(embed), torch.zeros(embed)
    for j in range(depth):
        p = f"layers.0.residual_group.blocks.{j}."
        for norm in ("norm1", "norm2"):
            state[p + f"{norm}.weight"], state[p + f"{norm}.bias"] = torch.ones(embed), torch.zeros(embed)
        state[p + "attn.relative_position_bias_table"] = torch.randn((2 * window - 1) ** 2, heads, generator=gen) * 0.02
        state[p + "attn.relative_position_index"] = _relative_position_index(window)
        for name, (out_ch, in_ch) in {
            "attn.qkv": (3 * embed, embed),
            "attn.proj": (embed, embed),
            "mlp.fc1": (2 * embed, embed),
            "mlp.fc2": (embed, 2 * embed),
        }.items():
            state[p + f"{name}.weight"] = torch.randn(out_ch, in_ch, generator=gen) * 0.1
            state[p + f"{name}.bias"] = torch.zeros(out_ch)
        if j % 2:
            state[p + "attn_mask"] = _shifted_window_mask(size, window)
    _conv(state, "layers.0.conv", embed, embed, gen)
    state["norm.weight"], state["norm.bias"] = torch.ones(embed), torch.zeros(embed)
    _conv(state, "conv_after_body", embed, embed, gen)
    _conv(state, "conv_before_upsample.0", 64, embed, gen)
    _conv(state, "upsample.0", 4 * 64, 64, gen)
    _conv(state, "conv_last", 3, 64, gen, std=0.05, bias=0.0)
    return state


def write_swinir(path: Path, seed: int = 0) -> Path:
    """`.pth` as the SwinIR releases: {"params": state}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params": swinir_state(seed=seed)}, path)
    return path
