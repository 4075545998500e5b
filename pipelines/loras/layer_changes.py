"""One adapted layer of a LoRA file and the full-size weight change it stands for.

Every kind gives `shape` (what its change has: (out, in) or (out, in, kh, kw), or (out, in*kh*kw) where the
file keeps the kernel flattened), `scale` (alpha/rank, or 1) and `rows(start, stop)`: the unscaled change of
those output rows in float32, flattened to (rows, rest), so that a large layer can be patched a block of
rows at a time (`delta()` is all of them). The kinds, as LyCORIS defines them:

- LoraPair (LoRA, LoCon, PEFT): up @ down; a CP core `lora_mid` is folded into `down` when the file is read.
- HadamardPair (LoHa): (w1_a @ w1_b) ⊙ (w2_a @ w2_b); with Tucker cores t1/t2, each factor is the core
  multiplied by a (rank x out) and a (rank x in) matrix along its first two axes.
- KroneckerPair (LoKr): w1 ⊗ w2, each given whole or as a low-rank product (w2 also with a Tucker core).
- FullDiff (LyCORIS full, norm layers): the difference itself, for the weight and the bias.

DoRA (`magnitude`, on LoRA, LoHa and LoKr layers): the merged weight W + s·ΔW is renormalised to the trained magnitudes, per
input channel (LyCORIS's `dora_scale` of shape (1, in, …)) or per output channel (shape (out, …), PEFT's
`lora_magnitude_vector`). As in A1111, ComfyUI and LyCORIS's own merge, a LoRA weight w scales the
difference this makes: W + w·(DoRA(W + s·ΔW) − W).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


def _tucker(core: Tensor, out_factor: Tensor, in_factor: Tensor) -> Tensor:
    """core (r1, r2, k…) with out_factor (r1, out) and in_factor (r2, in) -> (out, in, k…)."""
    return torch.einsum("a b ..., a o, b i -> o i ...", core, out_factor, in_factor)


def _nbytes(*tensors: Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _f32(tensor: Tensor, device: torch.device | str) -> Tensor:
    return tensor.to(device=device, dtype=torch.float32)


@dataclass
class LoraPair:
    """A low-rank layer as the file names it: delta = scale * (up @ down)."""

    stem: str  # the key without its role ending, e.g. "lora_unet_down_blocks_0_…_to_q" or "unet.down_blocks.0…to_q"
    down: Tensor
    up: Tensor
    alpha: float | None = None
    scale_override: float | None = None  # from PEFT metadata, when the file carries no alpha
    magnitude: Tensor | None = None  # DoRA

    kind = "LoRA"

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        """alpha/rank, as kohya and diffusers define it; 1 when the file gives no alpha."""
        if self.alpha is not None:
            return self.alpha / self.rank
        return 1.0 if self.scale_override is None else self.scale_override

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.up.shape[0]), *self.down.shape[1:])

    def rows(self, start: int, stop: int, device: torch.device | str = "cpu") -> Tensor:
        """up @ down in float32 with the layer's own kernel shape still flattened: (rows, in*kh*kw)."""
        return _f32(self.up[start:stop], device).flatten(1) @ _f32(self.down, device).flatten(1)

    def delta(self, device: torch.device | str = "cpu") -> Tensor:
        return self.rows(0, self.shape[0], device)

    @property
    def nbytes(self) -> int:
        return _nbytes(self.down, self.up, self.magnitude)


@dataclass
class HadamardPair:
    """A LyCORIS LoHa layer: (w1_a @ w1_b) ⊙ (w2_a @ w2_b), or with Tucker cores t1/t2 for a kernel."""

    stem: str
    w1_a: Tensor
    w1_b: Tensor
    w2_a: Tensor
    w2_b: Tensor
    t1: Tensor | None = None
    t2: Tensor | None = None
    alpha: float | None = None
    magnitude: Tensor | None = None

    kind = "LoHa"

    @property
    def rank(self) -> int:
        return int(self.w1_b.shape[0])

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank

    @property
    def shape(self) -> tuple[int, ...]:
        if self.t1 is not None:  # factors (rank, out), (rank, in), cores (rank, rank, kh, kw)
            return (int(self.w1_a.shape[1]), int(self.w1_b.shape[1]), *self.t1.shape[2:])
        return (int(self.w1_a.shape[0]), *self.w1_b.shape[1:])

    @staticmethod
    def _factor(a: Tensor, b: Tensor, core: Tensor | None, start: int, stop: int, device) -> Tensor:
        if core is None:
            return _f32(a[start:stop], device).flatten(1) @ _f32(b, device).flatten(1)
        return _tucker(_f32(core, device), _f32(a[:, start:stop], device), _f32(b, device)).flatten(1)

    def rows(self, start: int, stop: int, device: torch.device | str = "cpu") -> Tensor:
        first = self._factor(self.w1_a, self.w1_b, self.t1, start, stop, device)
        return first.mul_(self._factor(self.w2_a, self.w2_b, self.t2, start, stop, device))

    def delta(self, device: torch.device | str = "cpu") -> Tensor:
        return self.rows(0, self.shape[0], device)

    @property
    def nbytes(self) -> int:
        return _nbytes(self.w1_a, self.w1_b, self.w2_a, self.w2_b, self.t1, self.t2, self.magnitude)


@dataclass
class KroneckerPair:
    """A LyCORIS LoKr layer: w1 ⊗ w2, each whole (`lokr_w1`) or a low-rank product (`lokr_w1_a @ lokr_w1_b`)."""

    stem: str
    w1: Tensor | None = None
    w1_a: Tensor | None = None
    w1_b: Tensor | None = None
    w2: Tensor | None = None
    w2_a: Tensor | None = None
    w2_b: Tensor | None = None
    t2: Tensor | None = None
    alpha: float | None = None
    magnitude: Tensor | None = None

    kind = "LoKr"

    @property
    def rank(self) -> int | None:
        """The rank of the decomposed factor; None when both are whole (then alpha does not scale)."""
        low = self.w1_b if self.w1_b is not None else self.w2_b
        return None if low is None else int(low.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank if self.alpha is not None and self.rank else 1.0

    def _w1_shape(self) -> tuple[int, ...]:
        if self.w1 is not None:
            return tuple(self.w1.shape)
        return (int(self.w1_a.shape[0]), int(self.w1_b.shape[1]))

    def _w2_shape(self) -> tuple[int, ...]:
        if self.w2 is not None:
            return tuple(self.w2.shape)
        if self.t2 is not None:  # factors (rank, out), (rank, in), core (rank, rank, kh, kw)
            return (int(self.w2_a.shape[1]), int(self.w2_b.shape[1]), *self.t2.shape[2:])
        return (int(self.w2_a.shape[0]), *self.w2_b.shape[1:])

    @property
    def shape(self) -> tuple[int, ...]:
        (a, c), (b, d, *kernel) = self._w1_shape(), self._w2_shape()
        return (a * b, c * d, *kernel)

    def _w2(self, device) -> Tensor:
        if self.w2 is not None:
            return _f32(self.w2, device)
        if self.t2 is not None:
            return _tucker(_f32(self.t2, device), _f32(self.w2_a, device), _f32(self.w2_b, device))
        product = _f32(self.w2_a, device) @ _f32(self.w2_b, device).flatten(1)
        return product.reshape(self._w2_shape())

    def rows(self, start: int, stop: int, device: torch.device | str = "cpu") -> Tensor:
        """Row r of w1 ⊗ w2 is row r // b of w1 times row r % b of w2 (b: w2's rows): the w1 rows the block
        touches, their product, and the block cut out of it."""
        w2 = self._w2(device)
        b = w2.shape[0]
        first, last = start // b, -(-stop // b)
        w1 = (
            _f32(self.w1[first:last], device)
            if self.w1 is not None
            else _f32(self.w1_a[first:last], device) @ _f32(self.w1_b, device)
        )
        w1 = w1.reshape(*w1.shape, *[1] * (w2.ndim - w1.ndim))  # a kernel: w1 scales whole (kh, kw) blocks
        product = torch.kron(w1.contiguous(), w2.contiguous())  # kron views its inputs: dense ones
        return product[start - first * b : stop - first * b].flatten(1)

    def delta(self, device: torch.device | str = "cpu") -> Tensor:
        return self.rows(0, self.shape[0], device)

    @property
    def nbytes(self) -> int:
        return _nbytes(self.w1, self.w1_a, self.w1_b, self.w2, self.w2_a, self.w2_b, self.t2, self.magnitude)


@dataclass
class FullDiff:
    """A change given whole: LyCORIS's full-weight difference (`diff`, and `diff_b` for the bias) or its norm-layer
    change (`w_norm`, `b_norm`). No alpha scales it (LyCORIS writes none); the LoRA weight does."""

    stem: str
    diff: Tensor
    bias: Tensor | None = None  # the bias's difference, patched as a layer of its own (targets.resolve)
    kind: str = "full"  # "full" or "norm"
    magnitude: Tensor | None = None  # never: DoRA is not defined for these

    scale = 1.0

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.diff.shape)

    def rows(self, start: int, stop: int, device: torch.device | str = "cpu") -> Tensor:
        return _f32(self.diff[start:stop], device).reshape(stop - start, -1)

    def delta(self, device: torch.device | str = "cpu") -> Tensor:
        return self.rows(0, self.shape[0], device)

    @property
    def nbytes(self) -> int:
        return _nbytes(self.diff, self.bias)


LayerChange = LoraPair | HadamardPair | KroneckerPair | FullDiff


def magnitude_axis(magnitude: Tensor, weight_shape: tuple[int, ...]) -> int | None:
    """0 when DoRA's magnitudes are per output channel, 1 when per input channel, None when they fit neither."""
    out_ch, in_ch = weight_shape[0], weight_shape[1]
    shape = tuple(magnitude.shape)
    if magnitude.numel() == out_ch and (len(shape) <= 1 or shape[0] == out_ch):
        return 0
    if magnitude.numel() == in_ch and len(shape) >= 2 and shape[0] == 1 and shape[1] == in_ch:
        return 1
    return None


def decomposed_change(original: Tensor, delta: Tensor, magnitude: Tensor, axis: int, start: int = 0) -> Tensor:
    """DoRA: the change that renormalises original + delta (float32, in the weight's shape) to `magnitude`.

    `axis` is magnitude_axis's for the whole weight. The norm runs over every other axis, plus float32's
    epsilon as LyCORIS adds it, so a zero column cannot divide by zero. Per output channel (axis 0) a block
    of rows from `start` on is enough; per input channel the norms need all rows.
    """
    merged = original + delta
    if axis == 0:
        magnitude = magnitude.reshape(-1)[start : start + merged.shape[0]]
    moved = merged.movedim(axis, 0)
    norm = moved.reshape(moved.shape[0], -1).norm(dim=1) + torch.finfo(torch.float32).eps
    view = [1] * merged.ndim
    view[axis] = merged.shape[axis]
    scale = magnitude.to(device=merged.device, dtype=torch.float32).reshape(view) / norm.reshape(view)
    return merged.mul_(scale).sub_(original)
