"""Token merging (ToMe for Stable Diffusion, Bolya & Hoffman 2023): self-attention over fewer, merged tokens.

At the UNet's highest resolution, self-attention over every latent pixel is the costliest part of a step
on a CPU (its softmax grows with the square of the tokens). Neighbouring pixels are often alike, so before
that attention each token of most 2x2 cells may be averaged into the most similar of the cells' chosen
"destination" tokens; attention runs on what is left, and its output is copied back to every token that
was merged. A ratio of 0.5 halves the tokens and quarters the attention's softmax. The picture changes a
little, so it is a named switch (`token_merging`, A1111's "Token merging ratio"), recorded in the metadata.

Written here rather than taken from `tomesd` (last released in 2023, it replaces diffusers' block classes):
this installs removable hooks on the self-attention modules, so it follows whatever diffusers' blocks do,
and works in the step cache's shallow pass too. Each image's destination tokens are drawn from a generator
seeded with the image's seed, so an image made with it is made again the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

MAX_RATIO = 0.75  # one destination in each 2x2 cell: at most the other three of four tokens can merge


@dataclass
class MergePlan:
    """Which tokens merge into which, for one attention call (indices per batch item where they differ)."""

    tokens: int
    destinations: torch.Tensor  # (D,) token positions that receive merges
    sources: torch.Tensor  # (S,) the other positions
    kept: torch.Tensor  # (B, S - r) positions of the sources that stay as they are
    moved: torch.Tensor  # (B, r) positions of the sources merged away
    into: torch.Tensor  # (B, r) the destination (index into `destinations`) each moved token joins

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N - r, C): the kept sources, then the destinations averaged with what joined them."""
        kept = x.gather(1, _rows(self.kept, x))
        joining = x.gather(1, _rows(self.moved, x))
        destinations = x[:, self.destinations].scatter_reduce(1, _rows(self.into, x), joining, reduce="mean", include_self=True)
        return torch.cat([kept, destinations], dim=1)

    def unmerge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, N - r, C) -> (B, N, C): every merged token takes its destination's output."""
        count = self.kept.shape[1]
        kept, destinations = y[:, :count], y[:, count:]
        out = y.new_empty(y.shape[0], self.tokens, y.shape[2])
        out[:, self.destinations] = destinations
        out.scatter_(1, _rows(self.kept, y), kept)
        out.scatter_(1, _rows(self.moved, y), destinations.gather(1, _rows(self.into, y)))
        return out


def _rows(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return index.unsqueeze(-1).expand(-1, -1, like.shape[-1])


def plan_merge(x: torch.Tensor, height: int, width: int, ratio: float, generator: torch.Generator) -> MergePlan | None:
    """Merge `ratio` of the (B, height*width, C) tokens of `x`, each into the most similar destination (cosine)."""
    batch, tokens, _ = x.shape
    rows, cols = height // 2, width // 2
    if height * width != tokens or rows == 0 or cols == 0:
        return None
    merged = min(int(tokens * min(ratio, MAX_RATIO)), tokens - rows * cols)
    if merged <= 0:
        return None
    # one destination per 2x2 cell at a random corner; rows and columns beyond the cells (odd sizes) are sources
    corner = torch.randint(4, (rows, cols, 1), generator=generator, device=generator.device)
    cells = torch.zeros(rows, cols, 4, dtype=torch.int64, device=corner.device).scatter_(2, corner, -1)
    grid = torch.zeros(height, width, dtype=torch.int64, device=corner.device)
    grid[: rows * 2, : cols * 2] = cells.view(rows, cols, 2, 2).transpose(1, 2).reshape(rows * 2, cols * 2)
    order = grid.flatten().argsort(stable=True).to(x.device)  # the destinations (-1) first
    destinations, sources = order[: rows * cols], order[rows * cols :]
    metric = F.normalize(x, dim=-1)
    similarity = metric[:, sources] @ metric[:, destinations].transpose(1, 2)  # (B, S, D)
    best, into = similarity.max(dim=-1)
    ranked = best.argsort(dim=-1, descending=True, stable=True)
    moved, kept = ranked[:, :merged], ranked[:, merged:]  # indices into `sources`, most similar first
    return MergePlan(tokens, destinations, sources, sources[kept], sources[moved], into.gather(1, moved))


def top_transformers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer models of the first down block and the last up block that have attention: the highest
    resolution with attention (the latent's own on SD 1.x, half of it on SDXL)."""
    down = next((b for b in unet.down_blocks if getattr(b, "attentions", None)), None)
    up = next((b for b in reversed(unet.up_blocks) if getattr(b, "attentions", None)), None)
    return [t for block in (down, up) if block is not None for t in block.attentions]


class TokenMerging:
    """Hooks on the self-attention of the UNet's highest-resolution transformer blocks, removed by `remove()`."""

    def __init__(self, unet: torch.nn.Module, ratio: float, seed: int):
        self.ratio = ratio
        self.generator = torch.Generator("cpu").manual_seed(seed)
        self.size: tuple[int, int] | None = None
        self._plans: dict[int, MergePlan] = {}
        self._handles = []
        for transformer in top_transformers(unet):
            self._handles.append(transformer.register_forward_pre_hook(self._note_size, with_kwargs=True))
            for block in getattr(transformer, "transformer_blocks", []):
                attention = block.attn1
                self._handles.append(attention.register_forward_pre_hook(self._merge, with_kwargs=True))
                self._handles.append(attention.register_forward_hook(self._unmerge))

    def _note_size(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        self.size = tuple(hidden.shape[-2:]) if hidden.ndim == 4 else None

    def _merge(self, module: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        self._plans.pop(id(module), None)
        hidden = args[0] if args else kwargs.get("hidden_states")
        if self.size is None or hidden is None or hidden.ndim != 3 or kwargs.get("attention_mask") is not None:
            return None
        if kwargs.get("encoder_hidden_states") is not None:  # attn1 attends to a context only in odd configs
            return None
        plan = plan_merge(hidden, *self.size, self.ratio, self.generator)
        if plan is None:
            return None
        self._plans[id(module)] = plan
        merged = plan.merge(hidden)
        return ((merged, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": merged})

    def _unmerge(self, module: Any, args: tuple, output: Any) -> Any:
        plan = self._plans.pop(id(module), None)
        return output if plan is None else plan.unmerge(output)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
