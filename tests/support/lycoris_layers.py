"""Each LyCORIS algorithm's tensors for one layer, as LyCORIS writes them, and the change they stand for.

Shapes are LyCORIS's (lycoris/modules/locon.py, loha.py, lokr.py, full.py, norms.py); the change each set of
tensors means is worked out here in float64 from LyCORIS's definitions, apart from the app's own code
(pipelines/loras/layer_changes.py), so the tests compare the two. published_lora_keys.py spells the keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


def _randn(gen: torch.Generator, *shape: int, fan: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) / math.sqrt(fan)


def _factor_pair(n: int) -> tuple[int, int]:
    """n = small * large with small the largest divisor of n not above its square root (LoKr's split)."""
    small = max(d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0)
    return small, n // small


# Each algorithm's tensors for one layer of `shape`, by role: "down"/"up" (spelled as the format's Keys say),
# else the LyCORIS name, written `<stem>.<name>` ("lora_mid" as `<stem>.lora_mid.weight`).


def _lora(shape, rank, gen):  # kohya/LoCon: a conv's kernel in down, a 1x1 up
    out_dim, fan_in = shape[0], math.prod(shape[1:])
    if len(shape) == 4:
        return {"down": _randn(gen, rank, *shape[1:], fan=fan_in), "up": _randn(gen, out_dim, rank, 1, 1, fan=rank)}
    return {"down": _randn(gen, rank, fan_in, fan=fan_in), "up": _randn(gen, out_dim, rank, fan=rank)}


def _locon_cp(shape, rank, gen):  # LoCon with use_tucker: 1x1 down, (rank, rank, k, k) mid, 1x1 up
    if len(shape) < 4 or shape[2:] == (1, 1):
        return _lora(shape, rank, gen)
    out_dim, in_dim = shape[:2]
    return {
        "down": _randn(gen, rank, in_dim, 1, 1, fan=in_dim),
        "lora_mid": _randn(gen, rank, rank, *shape[2:], fan=rank * 9),
        "up": _randn(gen, out_dim, rank, 1, 1, fan=rank),
    }


def _loha(shape, rank, gen, tucker=False):
    out_dim, fan_in = shape[0], math.prod(shape[1:])
    if tucker and len(shape) == 4 and shape[2:] != (1, 1):
        return {
            f"hada_{w}": t
            for n in ("1", "2")
            for w, t in (
                (f"t{n}", _randn(gen, rank, rank, *shape[2:], fan=rank)),
                (f"w{n}_a", _randn(gen, rank, out_dim, fan=rank)),
                (f"w{n}_b", _randn(gen, rank, shape[1], fan=shape[1])),
            )
        }
    return {
        f"hada_{w}": t
        for n in ("1", "2")
        for w, t in ((f"w{n}_a", _randn(gen, out_dim, rank, fan=rank)), (f"w{n}_b", _randn(gen, rank, fan_in, fan=fan_in)))
    }


def _lokr(shape, rank, gen, tucker=False):
    (a, b), (c, d) = _factor_pair(shape[0]), _factor_pair(shape[1])
    kernel = tuple(shape[2:])
    if not tucker:  # lokr_w1 whole, w2 a low-rank product keeping the kernel in w2_b
        return {
            "lokr_w1": _randn(gen, a, c, fan=c),
            "lokr_w2_a": _randn(gen, b, rank, fan=rank),
            "lokr_w2_b": _randn(gen, rank, d, *kernel, fan=d * math.prod(kernel)),
        }
    out = {"lokr_w1_a": _randn(gen, a, rank, fan=rank), "lokr_w1_b": _randn(gen, rank, c, fan=c)}
    if kernel and kernel != (1, 1):  # decompose_both with a Tucker core for the kernel
        out |= {
            "lokr_t2": _randn(gen, rank, rank, *kernel, fan=rank),
            "lokr_w2_a": _randn(gen, rank, b, fan=rank),
            "lokr_w2_b": _randn(gen, rank, d, fan=d),
        }
    else:
        out["lokr_w2"] = _randn(gen, b, d, *kernel, fan=d)
    return out


def _full(shape, rank, gen):  # LyCORIS full: the difference itself (diff_b added by write_lora where there is a bias)
    return {"diff": _randn(gen, *shape, fan=math.prod(shape[1:]) * 4)}


ALGOS: dict[str, Callable[..., dict[str, torch.Tensor]]] = {
    "full": _full,
    "lora": _lora,
    "locon-cp": _locon_cp,
    "loha": _loha,
    "loha-tucker": lambda *a: _loha(*a, tucker=True),
    "lokr": _lokr,
    "lokr-tucker": lambda *a: _lokr(*a, tucker=True),
}


@dataclass(frozen=True)
class WrittenLayer:
    """One layer as written: its tensors by role (see ALGOS), the scale its format gives, and DoRA's magnitudes."""

    tensors: dict[str, torch.Tensor]
    scale: float  # what the format says the product is multiplied by (alpha/rank, header, or 1)
    magnitude: torch.Tensor | None = None

    @property
    def down(self) -> torch.Tensor:
        return self.tensors["down"]

    @property
    def up(self) -> torch.Tensor:
        return self.tensors["up"]

    def product(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The unscaled change in `shape`, float32, worked out from LyCORIS's definitions of each algorithm."""
        t = {role: v.double() for role, v in self.tensors.items()}
        if "diff" in t or "w_norm" in t:
            return t.get("diff", t.get("w_norm")).reshape(shape).float()
        if "hada_w1_a" in t:
            return (self._hada(t, "1", shape) * self._hada(t, "2", shape)).float()
        if any(k.startswith("lokr") for k in t):
            w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
            if "lokr_w2" in t:
                w2 = t["lokr_w2"]
            elif "lokr_t2" in t:
                w2 = torch.einsum("rsij,ro,sn->onij", t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"])
            else:
                w2 = torch.tensordot(t["lokr_w2_a"], t["lokr_w2_b"], dims=1)
            # Kronecker product written out: block (i, j) of the result is w1[i, j] * w2
            (a, c), (b, d) = w1.shape, w2.shape[:2]
            blocks = w1[:, None, :, None, None, None] * w2.reshape(1, b, 1, d, *w2.shape[2:], *[1] * (4 - w2.ndim))
            return blocks.reshape(a * b, c * d, *shape[2:]).reshape(shape).float()
        up, down = self.up.double(), self.down.double()
        if "lora_mid" in t:  # x -> down (1x1) -> mid (kxk) -> up (1x1)
            return torch.einsum("or,rskl,sn->onkl", up[:, :, 0, 0], t["lora_mid"], down[:, :, 0, 0]).reshape(shape).float()
        return (up.flatten(1) @ down.flatten(1)).reshape(shape).float()

    @property
    def bias_change(self) -> torch.Tensor | None:
        """LyCORIS full / norm: the bias's difference."""
        bias = self.tensors.get("diff_b", self.tensors.get("b_norm"))
        return None if bias is None else bias.float()

    @staticmethod
    def _hada(t: dict[str, torch.Tensor], n: str, shape: tuple[int, ...]) -> torch.Tensor:
        a, b = t[f"hada_w{n}_a"], t[f"hada_w{n}_b"]
        if f"hada_t{n}" in t:  # core (r, s, k, k) times a (r, out) along r and b (s, in) along s
            return torch.einsum("rsij,ro,sn->onij", t[f"hada_t{n}"], a, b)
        return (a @ b).reshape(shape)

    def expected(self, base: torch.Tensor, weight: float) -> torch.Tensor:
        """base (float32) with this layer at `weight`; DoRA as A1111 and LyCORIS merge it: base + w·(m·V/|V| − base)."""
        change = self.scale * self.product(tuple(base.shape))
        if self.magnitude is None:
            return base + weight * change
        merged = (base + change).double()
        per_input = self.magnitude.ndim >= 2 and self.magnitude.shape[0] == 1
        dims = [d for d in range(merged.ndim) if d != (1 if per_input else 0)]
        norm = torch.linalg.vector_norm(merged, dim=dims, keepdim=True)
        magnitude = self.magnitude.double().reshape(norm.shape)
        return (base + weight * (merged * magnitude / norm - base)).float()
