"""Each image of a job as it will be made: its seed and its final prompts (styles, wildcards, prompt expansion).

Planned before any model is loaded, so a job's prompts are settled once and every image of it can be
re-made from its own seed and prompts alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from pipelines.prompts.expansion import PromptExpander, joined, tidy
from pipelines.prompts.plan import PromptPlanner, wildcard_seed
from pipelines.types import GenerationRequest, SeedBehavior

MAX_SEED = 2**32 - 1  # random seeds stay in A1111's range so other tools can reuse them

Status = Callable[[str], Any]


def plan_seeds(seed: int, count: int, behavior: SeedBehavior, rng: random.Random | None = None) -> list[int]:
    """Seed of each image: -1 draws one at random; image i then gets seed+i (A1111), a fresh one, or the same."""
    rng = rng or random.SystemRandom()
    base = rng.randint(0, MAX_SEED) if seed == -1 else seed
    if behavior is SeedBehavior.RANDOM:
        return [base] + [rng.randint(0, MAX_SEED) for _ in range(count - 1)]
    if behavior is SeedBehavior.FIXED:
        return [base] * count
    return [base + i for i in range(count)]


@dataclass
class ImagePlan:
    """What image i of a job will be made from, after styles and wildcards."""

    index: int
    seed: int
    prompt: str
    negative_prompt: str
    expansion: str = ""  # with prompt expansion: the expanded prompt, as Fooocus records it

    def metadata(self) -> dict[str, Any]:
        return {"prompt_expansion": self.expansion} if self.expansion else {}


@dataclass
class ImagePlanner:
    prompts: PromptPlanner
    expander: PromptExpander

    def plan(self, request: GenerationRequest, status: Status | None = None) -> tuple[GenerationRequest, list[ImagePlan]]:
        """The request with the prompt's <lora:…> tags in its LoRA list, and each image's seed and final prompts.

        Prompt expansion continues what the user typed (its wildcards chosen by the image's seed, no styles)
        with words drawn by the image's seed, and the words go after the styled prompt, as Fooocus does."""
        prompts = self.prompts.plan(request)
        request = request.replace(loras=prompts.loras)
        plans = []
        for i, seed in enumerate(plan_seeds(request.seed, request.image_count, request.seed_behavior)):
            choices = wildcard_seed(seed, i, request.seed_behavior)
            prompt, negative = self.prompts.for_image(prompts, choices)
            plan = ImagePlan(i, seed, prompt, negative)
            if request.prompt_expansion:
                if status is not None:
                    status(f"Prompt expansion ({request.prompt_expansion}), image {i + 1}")
                typed = tidy(self.prompts.wildcards.expand(request.prompt, choices, "prompt"))
                words = self.expander.expand(request.prompt_expansion, typed, seed)
                if words:
                    plan = ImagePlan(i, seed, joined(prompt, words), negative, joined(typed, words))
            plans.append(plan)
        return request, plans
