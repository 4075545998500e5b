"""From the prompt a user typed to the prompt of each image: styles, `<lora:…>` tags, wildcards.

    plan = planner.plan(request)          # 1. styles, in order   2. <lora:…> tags -> the job's LoRA list
    prompt, negative = planner.for_image(plan, seed)   # 3. wildcards and {a|b} variants, chosen by the seed

The final prompts keep their `<lora:…>` tags, as A1111's infotext does (CivitAI reads them from there);
the prompt encoder leaves them out of what the text encoder sees.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.errors import InvalidRequest, ModelNotFound
from pipelines.loading.registry import ModelRegistry
from pipelines.prompts.styles import StyleLibrary
from pipelines.prompts.syntax import LoraTag, PromptSyntaxError, find_lora_tags
from pipelines.prompts.wildcards import Wildcards
from pipelines.types import GenerationRequest, LoraRef, ModelKind, SeedBehavior
from pipelines.validation import LORA_WEIGHT, MAX_LORAS


@dataclass(frozen=True)
class PromptPlan:
    """A job's prompts once styles are applied; wildcards are still to be chosen per image."""

    prompt: str
    negative_prompt: str
    loras: tuple[LoraRef, ...]  # the request's LoRAs merged with the prompt's <lora:…> tags


def wildcard_seed(seed: int, index: int, behavior: SeedBehavior) -> int:
    """The image seed; with a fixed seed, image i still gets its own choices (seed + i)."""
    return seed + index if behavior is SeedBehavior.FIXED else seed


class PromptPlanner:
    def __init__(self, styles: StyleLibrary, wildcards: Wildcards, registry: ModelRegistry):
        self.styles = styles
        self.wildcards = wildcards
        self.registry = registry

    def plan(self, request: GenerationRequest) -> PromptPlan:
        prompt, negative = self.styles.apply(request.styles, request.prompt, request.negative_prompt)
        loras = self.merge_loras(request.loras, self.lora_tags(prompt, negative))
        self.wildcards.check(prompt, "prompt")
        self.wildcards.check(negative, "negative_prompt")
        return PromptPlan(prompt, negative, loras)

    def for_image(self, plan: PromptPlan, seed: int) -> tuple[str, str]:
        prompt = self.wildcards.expand(plan.prompt, seed, "prompt")
        negative = self.wildcards.expand(plan.negative_prompt, seed, "negative_prompt")
        if _tag_texts(prompt) != _tag_texts(plan.prompt):
            raise InvalidRequest(
                "<lora:…> tags cannot come from a wildcard or a {…|…} choice: LoRAs apply to the whole job. "
                "Write them in the prompt itself.",
                field="prompt",
            )
        return prompt, negative

    # -- <lora:…> tags ------------------------------------------------------------------------------

    def lora_tags(self, prompt: str, negative: str) -> list[LoraTag]:
        try:
            if find_lora_tags(negative):
                raise InvalidRequest("<lora:…> tags work in the positive prompt only.", field="negative_prompt")
            return find_lora_tags(prompt)
        except PromptSyntaxError as exc:
            raise InvalidRequest(str(exc), field="prompt") from exc

    def merge_loras(self, loras: tuple[LoraRef, ...], tags: list[LoraTag]) -> tuple[LoraRef, ...]:
        """Tags become LoraRefs named as the registry names them; a tag replaces a listed LoRA of that name."""
        merged = list(loras)
        for tag in tags:
            try:
                name = self.registry.find(ModelKind.LORA, tag.name).name
            except ModelNotFound as exc:
                raise InvalidRequest(f"{tag.text}: {exc}", field="prompt") from exc
            if not LORA_WEIGHT[0] <= tag.weight <= LORA_WEIGHT[1]:
                raise InvalidRequest(
                    f"{tag.text}: the weight must be between {LORA_WEIGHT[0]:g} and {LORA_WEIGHT[1]:g}.", field="prompt"
                )
            merged = [lo for lo in merged if lo.name.lower() != name.lower()] + [LoraRef(name, tag.weight)]
        if len([lo for lo in merged if lo.enabled]) > MAX_LORAS:
            raise InvalidRequest(f"At most {MAX_LORAS} LoRAs can be used at once (the prompt's tags count too).", field="loras")
        return tuple(merged)


def _tag_texts(text: str) -> list[str]:
    try:
        return sorted(tag.text for tag in find_lora_tags(text))
    except PromptSyntaxError:
        return ["<unreadable>"]
