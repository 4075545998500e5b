"""From typed prompt to each image's prompt: styles, then <lora:…> tags into the LoRA list, then wildcards."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from pipelines.errors import InvalidRequest
from pipelines.loading.registry import ModelRegistry
from pipelines.prompts.plan import PromptPlanner, wildcard_seed
from pipelines.prompts.styles import StyleLibrary
from pipelines.prompts.wildcards import Wildcards
from pipelines.types import GenerationRequest, LoraRef, SeedBehavior

LORA_KEYS = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(4, 768)}


@pytest.fixture(scope="module")
def planner(tmp_path_factory) -> PromptPlanner:
    root = tmp_path_factory.mktemp("plan")
    (root / "models" / "loras" / "styles").mkdir(parents=True)
    for name in ("add_detail", "styles/ink_lines", "a", "b", "c", "d", "e", "f"):
        save_file(LORA_KEYS, str(root / "models" / "loras" / f"{name}.safetensors"))
    registry = ModelRegistry(root / "models", root / "cache")
    registry.refresh()
    (root / "styles").mkdir()
    (root / "styles" / "s.yaml").write_text(
        "styles:\n"
        "  - name: Detailed\n    prompt: '{prompt}, intricate <lora:add_detail:0.5>'\n    negative_prompt: 'flat'\n"
        "  - name: Frame\n    prompt: 'framed {prompt}'\n",
        encoding="utf-8",
    )
    (root / "wildcards").mkdir()
    (root / "wildcards" / "animal.txt").write_text("cat\ndog\nfox\nowl\nhen\n", encoding="utf-8")
    (root / "wildcards" / "tagged.txt").write_text("<lora:a:1> ink\n", encoding="utf-8")
    return PromptPlanner(StyleLibrary(root / "styles"), Wildcards(root / "wildcards"), registry)


def test_styles_then_tags_then_wildcards(planner):
    request = GenerationRequest(
        prompt="a __animal__ <lora:ink_lines:0.7>", negative_prompt="blurry", styles=("Detailed", "Frame")
    )
    plan = planner.plan(request)
    assert plan.prompt == "framed a __animal__ <lora:ink_lines:0.7>, intricate <lora:add_detail:0.5>"
    assert plan.negative_prompt == "blurry, flat"
    assert plan.loras == (LoraRef("styles/ink_lines", 0.7), LoraRef("add_detail", 0.5))  # registry names
    prompt, negative = planner.for_image(plan, 5)
    assert prompt == plan.prompt.replace("__animal__", Wildcards(planner.wildcards.folder).expand("__animal__", 5))
    assert negative == "blurry, flat"


def test_a_tag_replaces_a_listed_lora_of_that_name(planner):
    request = GenerationRequest(prompt="x <lora:ADD_DETAIL:1.5>", loras=(LoraRef("add_detail", 0.3), LoraRef("a", 1.0)))
    assert planner.plan(request).loras == (LoraRef("a", 1.0), LoraRef("add_detail", 1.5))


@pytest.mark.parametrize(
    "fields,field,message",
    [
        (dict(prompt="x <lora:add_detial:1>"), "prompt", "Did you mean: add_detail"),
        (dict(prompt="x <lora:add_detail:3>"), "prompt", "between -2 and 2"),
        (dict(prompt="x <lora:add_detail:much>"), "prompt", "'much' is not a number"),
        (dict(prompt="x", negative_prompt="<lora:add_detail:1>"), "negative_prompt", "positive prompt only"),
        (dict(prompt="<lora:a> <lora:b> <lora:c> <lora:d> <lora:e> <lora:f>"), "loras", "At most 5"),
        (dict(prompt="x", styles=("Detaild",)), "styles", "Did you mean: Detailed"),
        (dict(prompt="a __animals__"), "prompt", "Did you mean: __animal__"),
        (dict(prompt="x", negative_prompt="{a|b"), "negative_prompt", "cannot be read"),
    ],
)
def test_bad_prompts_are_refused_with_the_field_named(planner, fields, field, message):
    with pytest.raises(InvalidRequest) as err:
        planner.plan(GenerationRequest(**fields))
    assert err.value.field == field and message in str(err.value)


def test_tags_from_wildcards_or_choices_are_refused(planner):
    for template in ("x __tagged__", "x {<lora:a:1>|plain}"):
        plan = planner.plan(GenerationRequest(prompt=template))
        with pytest.raises(InvalidRequest, match="cannot come from a wildcard"):
            for seed in range(10):
                planner.for_image(plan, seed)


def test_wildcard_seeds():
    assert [wildcard_seed(100 + i, i, SeedBehavior.INCREMENT) for i in range(3)] == [100, 101, 102]
    assert [wildcard_seed(100, i, SeedBehavior.FIXED) for i in range(3)] == [100, 101, 102]  # same noise, new picks
    assert wildcard_seed(987, 2, SeedBehavior.RANDOM) == 987
