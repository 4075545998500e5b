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
