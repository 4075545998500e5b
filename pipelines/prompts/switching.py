"""Prompt editing during denoising: each scheduled prompt encoded once, swapped in at its step.

diffusers lets a `callback_on_step_end` hand back new `prompt_embeds` (and SDXL's pooled
`add_text_embeds`); `PromptSwitch` wraps the job's step callback and does that at each boundary of the
schedule from `prompt_schedule`. A prompt without editing is one entry and costs nothing extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pipelines.loading.loader import LoadedModel
from pipelines.prompts.conditioning import Conditioning, PromptEncoder
from pipelines.prompts.editing import joint_schedule
from pipelines.types import ModelRecord


@dataclass
class ConditioningSchedule:
    entries: list[tuple[int, Conditioning]]  # (last step, counted from 1 as A1111 does; its conditioning)

    @property
    def first(self) -> Conditioning:
        return self.entries[0][1]

    @property
    def changes(self) -> bool:
        return len(self.entries) > 1

    @property
    def embeddings(self) -> tuple[ModelRecord, ...]:
        """The textual inversions any of the prompts used, each once."""
        return tuple(dict.fromkeys(record for _, cond in self.entries for record in cond.embeddings))

    def at(self, step: int) -> Conditioning:
        """The conditioning of denoising step `step` (counted from 0): A1111's `step <= last step` rule."""
        return next((cond for end, cond in self.entries if step <= end), self.entries[-1][1])


def encode_schedule(
    encoder: PromptEncoder,
    model: LoadedModel,
    prompt: str,
    negative: str,
    *,
    steps: int,
    clip_skip: int,
    guidance: bool,
    cache: dict[tuple[str, str], Conditioning],
) -> ConditioningSchedule:
    """Every distinct (prompt, negative) pair of the schedule encoded once; `cache` is shared by a job's images."""
    entries = []
    for end, text, negative_text in joint_schedule(prompt, negative, steps):
        key = (text, negative_text)
        if key not in cache:
            cache[key] = encoder.encode(model, text, negative_text, clip_skip, guidance)
        entries.append((end, cache[key]))
    return ConditioningSchedule(entries)


def tensor_inputs(schedule: ConditioningSchedule) -> list[str]:
    """What the pipeline must show the callback: the latents for previews, the prompt tensors to swap."""
    if not schedule.changes:
        return ["latents"]
    pooled = schedule.first.pooled_prompt_embeds is not None
    return ["latents", "prompt_embeds", *(["add_text_embeds"] if pooled else [])]


class PromptSwitch:
    """The job's step callback, plus: after step i, the pipeline gets the conditioning of step offset + i + 1."""

    def __init__(self, callback: Any, schedule: ConditioningSchedule, offset: int = 0):
        self.callback = callback
        self.schedule = schedule
        self.offset = offset
        self._stacked: dict[int, dict[str, torch.Tensor]] = {}  # per entry: built once, handed over at each switch

    def __call__(self, pipe: Any, step_index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        out = dict(self.callback(pipe, step_index, timestep, tensors) or {})
        step = self.offset + step_index
        following = self.schedule.at(step + 1)
        if following is not self.schedule.at(step):
            if id(following) not in self._stacked:
                self._stacked[id(following)] = pipeline_tensors(following, tensors, pipe.do_classifier_free_guidance)
            out.update(self._stacked[id(following)])
        return out


def pipeline_tensors(cond: Conditioning, current: dict[str, Any], guidance: bool) -> dict[str, torch.Tensor]:
    """The conditioning as the denoising loop holds it: negative and positive stacked when guidance is on."""

    def stacked(positive: torch.Tensor, negative: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        tensor = torch.cat([negative, positive]) if guidance else positive
        return tensor.to(device=like.device, dtype=like.dtype)

    out = {"prompt_embeds": stacked(cond.prompt_embeds, cond.negative_prompt_embeds, current["prompt_embeds"])}
    if "add_text_embeds" in current and cond.pooled_prompt_embeds is not None:
        out["add_text_embeds"] = stacked(
            cond.pooled_prompt_embeds, cond.negative_pooled_prompt_embeds, current["add_text_embeds"]
        )
    return out
