"""Turning prompt text into the tensors a pipeline is conditioned on.

The manager only knows the `PromptEncoder` interface, so the encoder can change (plain CLIP encoding,
weighted prompts through compel) without the generation code noticing. The result goes to the
pipeline through its `prompt_embeds` arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from pipelines.loading.loader import LoadedModel
from pipelines.types import Architecture, ModelRecord


@dataclass
class Conditioning:
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None = None
    pooled_prompt_embeds: torch.Tensor | None = None  # SDXL only
    negative_pooled_prompt_embeds: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)  # e.g. what was cut from an over-long prompt
    embeddings: tuple[ModelRecord, ...] = ()  # the textual-inversion files the prompts named

    def pipeline_kwargs(self) -> dict[str, torch.Tensor]:
        names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


class PromptEncoder(Protocol):
    def encode(self, model: LoadedModel, prompt: str, negative: str, clip_skip: int, guidance: bool) -> Conditioning:
        """clip_skip counts as A1111 does (1 = last layer); guidance=False means the negative is not needed."""
        ...


def diffusers_clip_skip(a1111_clip_skip: int) -> int | None:
    """A1111's "Clip skip: 2" is diffusers' clip_skip=1 (one layer skipped)."""
    return a1111_clip_skip - 1 if a1111_clip_skip > 1 else None


class PlainEncoder:
    """The pipeline's own encode_prompt: no weighting syntax, exactly what plain diffusers does."""

    def encode(self, model: LoadedModel, prompt: str, negative: str, clip_skip: int, guidance: bool) -> Conditioning:
        pipe = model.pipe
        skip = diffusers_clip_skip(clip_skip)
        if model.architecture is Architecture.SDXL:
            pos, neg, pooled, neg_pooled = pipe.encode_prompt(
                prompt,
                device=pipe.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=guidance,
                negative_prompt=negative,
                clip_skip=skip,
            )
            return Conditioning(pos, neg if guidance else None, pooled, neg_pooled if guidance else None)
        pos, neg = pipe.encode_prompt(prompt, pipe.device, 1, guidance, negative_prompt=negative, clip_skip=skip)
        return Conditioning(pos, neg if guidance else None)
