"""Prompt expansion ("Fooocus V2") with tiny random GPT-2 folders written in the Hugging Face layout.

What is checked against what: the words against the seed (same seed, same words; another seed, others),
their length against the CLIP tokenizer's count of the prompt's 75-token chunk, the word list against the
words drawn, the final prompt against the style library plus the words, the pixels against plain diffusers
given that final prompt, and the metadata against our reader.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.errors import InvalidRequest
from pipelines.loading.configs import clip_tokenizer
from pipelines.outputs.reading import read_metadata
from pipelines.types import ImageParams, JobState, ModelKind
from tests.support.compare import assert_images_equal
from tests.support.engine import run as run_job
from tests.support.engine import running_engine
from tests.support.expansion_model import FREE_EXPANSION, TINY_EXPANSION, WORDS, add_expansion_models, write_tiny_expansion
from tests.support.live_app import link_checkpoints
from tests.test_engine import reference

STYLES = "category: Test\nstyles:\n  - name: Ink\n    prompt: 'ink drawing of {prompt}, bold lines'\n"
PROMPT = "a red fox in snow"


@pytest.fixture(scope="module")
def engine(tiny_models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("expansion")
    models = root / "models"
    link_checkpoints(tiny_models_dir, models, ("tiny-sd15", "tiny-sdxl"))
    add_expansion_models(models)
    (models / "prompt_expansion" / "no-weights").mkdir()
    (models / "prompt_expansion" / "no-weights" / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    (root / "styles").mkdir()
    (root / "styles" / "test.yaml").write_text(STYLES, encoding="utf-8")
    with running_engine(models, root / "out", styles_dir=root / "styles") as services:
        yield services


def run(services, **fields):
    info = run_job(
        services, **{"model": "tiny-sd15", "steps": 2, "cfg_scale": 6.0, "sampler": "Euler", "scheduler": "Automatic", **fields}
    )
    assert info.state is JobState.FINISHED, info.error
    return info.result.images


def clip_count(text: str) -> int:
    return len(clip_tokenizer()(text, add_special_tokens=False)["input_ids"])


def words_of(params: ImageParams) -> str:
    """The continuation: the expanded prompt minus the prompt and its comma."""
    assert params.prompt_expansion.startswith(PROMPT + ", ")
    return params.prompt_expansion[len(PROMPT) + 2 :]


def test_models_are_found_in_their_folder_and_a_broken_one_says_why(engine):
    records = {r.name: r for r in engine.registry.list(ModelKind.PROMPT_EXPANSION)}
    assert set(records) == {TINY_EXPANSION, FREE_EXPANSION, "no-weights"}
    assert records[TINY_EXPANSION].usable and records[FREE_EXPANSION].usable
    assert "weights are missing" in records["no-weights"].note
    assert not engine.registry.skipped  # the folders' files are not reported as unknown model files


def test_same_seed_same_words_other_seed_other_words(engine):
    first = run(engine, prompt=PROMPT, seed=11, prompt_expansion=TINY_EXPANSION)[0].params
    again = run(engine, prompt=PROMPT, seed=11, prompt_expansion=TINY_EXPANSION)[0].params
    other = run(engine, prompt=PROMPT, seed=12, prompt_expansion=TINY_EXPANSION)[0].params
    assert words_of(first) and words_of(first) == words_of(again) and words_of(first) != words_of(other)
    assert first.prompt == f"{PROMPT}, {words_of(first)}" and first.expansion_model == TINY_EXPANSION
    # a batch: image i is expanded by its own seed, as a single run with that seed is
    batch = run(engine, prompt=PROMPT, seed=11, image_count=2, prompt_expansion=TINY_EXPANSION)
    assert [words_of(p.params) for p in batch] == [words_of(first), words_of(other)]


def test_only_the_word_lists_words_and_no_word_twice(engine):
    listed = set(WORDS[::3] + ("cinematic", "detailed"))
    for seed in range(4):
        words = words_of(run(engine, prompt=PROMPT, seed=seed, prompt_expansion=TINY_EXPANSION)[0].params)
        drawn = [w for item in words.split(",") for w in item.split()]
        assert set(drawn) <= listed and len(drawn) == len(set(drawn))
        assert not set(drawn) & {"red", "fox", "snow"}  # words of the prompt are not repeated


@pytest.mark.parametrize("length", [1, 20, 70, 74, 100])
def test_the_continuation_ends_at_the_prompts_75_token_chunk(engine, length):
    """A model without a word list would go on forever: it stops where the prompt's CLIP chunk ends."""
    prompt = " ".join(["fox"] * length)
    images = run(engine, prompt=prompt, seed=5, prompt_expansion=FREE_EXPANSION)
    params = images[0].params
    limit = 75 * math.ceil(clip_count(prompt + ",") / 75)
    if clip_count(prompt + ",") == limit:  # the prompt fills its chunk: nothing is added
        assert params.prompt == prompt and params.prompt_expansion == ""
        return
    assert params.prompt_expansion.startswith(prompt + ", ")
    assert limit - 6 <= clip_count(params.prompt_expansion) <= limit  # filled up to the boundary, never past it
    assert params.prompt == params.prompt_expansion


def test_styles_wrap_the_prompt_and_the_words_follow_them(engine, tiny_sd15_reference):
    fields = dict(prompt=PROMPT, negative_prompt="blurry", styles=["Ink"], seed=21, steps=3)
    [item] = run(engine, prompt_expansion=TINY_EXPANSION, **fields)
    words = words_of(item.params)
    assert item.params.prompt == f"ink drawing of {PROMPT}, bold lines, {words}"
    # the words are plain text for the encoder: the pixels are diffusers' for that final prompt
    import diffusers

    expected = reference(
        tiny_sd15_reference,
        diffusers.EulerDiscreteScheduler.from_config(tiny_sd15_reference.scheduler.config),
        item.params.prompt,
        "blurry",
        21,
        3,
        6.0,
    )
    assert_images_equal(np.asarray(item.image), expected)


def test_the_expansion_is_saved_in_fooocus_words_and_restores(engine):
    [item] = run(engine, prompt=PROMPT, seed=31, prompt_expansion=TINY_EXPANSION)
    assert f"Fooocus V2 Expansion: {_quoted(item.params.prompt_expansion)}" in item.infotext
    meta = read_metadata(item.path)
    assert ImageParams.from_dict(meta.image_params) == item.params
    assert meta.params["Fooocus V2 Expansion"] == item.params.prompt_expansion
    assert meta.request["prompt_expansion"] == TINY_EXPANSION and meta.request["prompt"] == PROMPT
    assert "Template: " in item.infotext  # what was typed, beside the expanded prompt


def _quoted(text: str) -> str:
    import json

    return json.dumps(text) if "," in text else text


def test_empty_prompt_and_unknown_or_broken_models(engine):
    [item] = run(engine, prompt="", seed=1, prompt_expansion=TINY_EXPANSION)
    assert item.params.prompt == "" and item.params.prompt_expansion == ""
    for name, words in (("nope", ["No prompt_expansion named 'nope'", "prompt_expansion/<name>/"]), ("no-weights", ["weights"])):
        with pytest.raises(InvalidRequest) as caught:
            engine.queue.submit(_request(prompt="p", prompt_expansion=name))
        assert caught.value.field == "prompt_expansion" and all(w in str(caught.value) for w in words)


def _request(**fields):
    from pipelines.types import GenerationRequest

    return GenerationRequest(model="tiny-sd15", width=64, height=64, **fields)


def test_a_fooocus_layout_with_pytorch_model_bin_loads(tmp_path):
    """Fooocus ships fooocus_expansion with tokenizer.json and downloads pytorch_model.bin beside it."""
    from transformers import AutoTokenizer

    from pipelines.loading.registry import ModelRegistry
    from pipelines.prompts.expansion import PromptExpander

    folder = write_tiny_expansion(tmp_path / "prompt_expansion" / "fooocus_expansion", words=WORDS)
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)  # adds tokenizer.json, as Fooocus's folder has
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    registry = ModelRegistry(tmp_path, tmp_path / "cache")
    registry.refresh()
    expander = PromptExpander(registry)
    assert expander.find("fooocus_expansion").usable
    assert expander.expand("fooocus_expansion", PROMPT, 3) == expander.expand("fooocus_expansion", PROMPT, 3) != ""


def test_fooocus_v2_as_a_model_name_means_the_first_one_installed(engine, tmp_path):
    checked = engine.manager.validate(_request(prompt="p", prompt_expansion="Fooocus V2"))
    assert checked.prompt_expansion == FREE_EXPANSION  # models are listed by name
    from pipelines.loading.registry import ModelRegistry
    from pipelines.prompts.expansion import PromptExpander

    empty = ModelRegistry(tmp_path, tmp_path / "cache")
    empty.refresh()
    with pytest.raises(InvalidRequest) as caught:
        PromptExpander(empty).find("Fooocus V2")
    assert caught.value.field == "prompt_expansion" and "no model is installed" in str(caught.value)
