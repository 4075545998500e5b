"""The prompt language through the whole engine: queue -> manager -> saved image and its metadata.

References: the style library and wildcard expander for what the final prompt must be, plain diffusers
for the pixels of an unweighted prompt, and compel's own embeddings for the pixels of a weighted one.
"""

from __future__ import annotations

import compel
import diffusers
import numpy as np
import pytest
import torch

from pipelines.errors import InvalidRequest
from pipelines.outputs.reading import read_metadata
from pipelines.types import GenerationRequest, ImageParams, JobState, SeedBehavior
from tests.support.compare import assert_images_equal
from tests.support.engine import SIZE, running_engine
from tests.support.engine import run as run_job
from tests.test_engine import pixels, reference

STYLES = """
category: Test
styles:
  - name: Ink
    prompt: "ink drawing of {prompt}, bold lines"
    negative_prompt: "colour, photo"
  - name: Glow
    prompt: "{prompt}, soft glow"
    negative_prompt: "photo, dark"
"""


@pytest.fixture(scope="module")
def engine(tiny_models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("prompt-engine")
    (root / "styles").mkdir()
    (root / "styles" / "test.yaml").write_text(STYLES, encoding="utf-8")
    (root / "wildcards" / "zoo").mkdir(parents=True)
    (root / "wildcards" / "zoo" / "animal.txt").write_text("red fox\nsnowy owl\nsea otter\nbrown bear\n", encoding="utf-8")
    with running_engine(tiny_models_dir, root / "out", styles_dir=root / "styles", wildcards_dir=root / "wildcards") as services:
        yield services


def run(services, **fields):
    """The images of a job that must finish."""
    info = run_job(services, **fields)
    assert info.state is JobState.FINISHED, info.error
    return info.result.images


def expected_prompts(services, request: GenerationRequest, seed: int) -> tuple[str, str]:
    styled = services.styles.apply(request.styles, request.prompt, request.negative_prompt)
    return services.wildcards.expand(styled[0], seed), services.wildcards.expand(styled[1], seed)


def test_styled_wildcarded_prompt_is_what_the_metadata_holds_beside_the_template(engine, tiny_sd15_reference):
    fields = dict(
        model="tiny-sd15",
        prompt="a __zoo/animal__ {at dawn|at dusk}",
        negative_prompt="blurry",
        styles=("Ink", "Glow"),
        seed=21,
        steps=3,
        image_count=2,
        sampler="Euler",
        scheduler="Automatic",
    )
    images = run(engine, **fields)
    request = GenerationRequest(**{**SIZE, **fields})
    for item, seed in zip(images, (21, 22)):
        prompt, negative = expected_prompts(engine, request, seed)
        assert prompt.startswith("ink drawing of a ") and prompt.endswith(", bold lines, soft glow") and "__" not in prompt
        assert negative == "blurry, colour, photo, dark"
        meta = read_metadata(item.path)
        assert meta.params["Prompt"] == prompt and meta.params["Negative prompt"] == negative
        assert meta.params["Template"] == fields["prompt"] and meta.params["Negative Template"] == "blurry"
        assert meta.params["Styles"] == ["Ink", "Glow"]
        params = ImageParams.from_dict(meta.image_params)
        assert (params.prompt, params.prompt_template, params.negative_template) == (prompt, fields["prompt"], "blurry")
        assert meta.request["prompt"] == fields["prompt"] and meta.request["styles"] == ["Ink", "Glow"]
        # the pixels are those of plain diffusers given the final text
        scheduler = diffusers.EulerDiscreteScheduler.from_config(tiny_sd15_reference.scheduler.config)
        assert_images_equal(pixels(item.path), reference(tiny_sd15_reference, scheduler, prompt, negative, seed, 3, 7.0))
    # a seed reproduces its choices: a single run at the second seed gives the second image's prompt
    [again] = run(engine, **{**fields, "seed": 22, "image_count": 1})
    assert again.params.prompt == images[1].params.prompt


def test_fixed_seed_keeps_the_noise_and_varies_the_wildcards(engine):
    fields = dict(
        model="tiny-sd15",
        prompt="a __zoo/animal__",
        seed=5,
        steps=1,
        image_count=4,
        seed_behavior=SeedBehavior.FIXED,
        save_images=False,
    )
    images = run(engine, **fields)
    assert [i.params.seed for i in images] == [5] * 4
    request = GenerationRequest(**{**SIZE, **fields})
    assert [i.params.prompt for i in images] == [expected_prompts(engine, request, 5 + i)[0] for i in range(4)]
    assert len({i.params.prompt for i in images}) > 1


def test_weighted_prompt_image_equals_diffusers_with_compels_embeddings(engine, tiny_sd15_reference):
    [item] = run(
        engine,
        model="tiny-sd15",
        prompt="a red fox (in deep snow:1.4), [blurry]",
        negative_prompt="ugly",
        seed=3,
        steps=3,
        sampler="Euler",
        scheduler="Automatic",
        save_images=False,
    )
    pipe = tiny_sd15_reference
    helper = compel.Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, truncate_long_prompts=False)
    with torch.no_grad():
        embeds, negative = helper(f"a red fox (in deep snow)1.4, (blurry){1 / 1.1}"), helper("ugly")
    plain = type(pipe)(**{**pipe.components, "scheduler": diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)})
    plain.set_progress_bar_config(disable=True)
    expected = plain(
        prompt_embeds=embeds,
        negative_prompt_embeds=negative,
        num_inference_steps=3,
        guidance_scale=7.0,
        generator=torch.Generator().manual_seed(3),
        **SIZE,
    ).images[0]
    assert_images_equal(np.asarray(item.image), np.asarray(expected))


def test_long_sdxl_prompt_is_not_cut(engine):
    head = "a lighthouse on a rocky cliff, " * 11  # 77 tokens, two chunks already: the tail lands in the second
    full = run(
        engine, model="tiny-sdxl", prompt=head + "purple aurora sky", negative_prompt="blurry", seed=4, steps=2, save_images=False
    )
    cut = run(engine, model="tiny-sdxl", prompt=head, negative_prompt="blurry", seed=4, steps=2, save_images=False)
    assert not np.array_equal(np.asarray(full[0].image), np.asarray(cut[0].image))


def test_bad_prompt_parts_are_refused_at_submit(engine):
    manager = engine.manager
    with pytest.raises(InvalidRequest, match=r"<lora:nope:0.5>: No lora named 'nope'") as err:
        manager.validate(GenerationRequest(prompt="x <lora:nope:0.5>"))
    assert err.value.field == "prompt"
    with pytest.raises(InvalidRequest, match="No style named 'Inkk'. Did you mean: Ink"):
        manager.validate(GenerationRequest(prompt="x", styles=("Inkk",)))
    with pytest.raises(InvalidRequest, match=r"__zoo/animals__.*Did you mean: __zoo/animal__"):
        manager.validate(GenerationRequest(prompt="a __zoo/animals__"))


def plain_with_prompt_per_step(pipe, prompts: list[str], negatives: list[str], seed: int, cfg: float) -> np.ndarray:
    """Plain diffusers with Euler; step s sees prompts[s], swapped in through diffusers' own step callback."""
    plain = type(pipe)(**{**pipe.components, "scheduler": diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)})
    plain.set_progress_bar_config(disable=True)
    sdxl = isinstance(plain, diffusers.StableDiffusionXLPipeline)
    with torch.no_grad():
        encoded = {
            pair: plain.encode_prompt(
                pair[0], negative_prompt=pair[1], device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True
            )
            for pair in set(zip(prompts, negatives))
        }
    pairs = list(zip(prompts, negatives))

    def swap(_pipe, i, _t, tensors):
        if i + 1 >= len(pairs) or pairs[i + 1] == pairs[i]:
            return {}
        embeds = encoded[pairs[i + 1]]
        out = {"prompt_embeds": torch.cat([embeds[1], embeds[0]])}
        if sdxl:
            out["add_text_embeds"] = torch.cat([embeds[3], embeds[2]])
        return out

    first = encoded[pairs[0]]
    kwargs = dict(prompt_embeds=first[0], negative_prompt_embeds=first[1])
    if sdxl:
        kwargs.update(pooled_prompt_embeds=first[2], negative_pooled_prompt_embeds=first[3])
    out = plain(
        **kwargs,
        num_inference_steps=len(prompts),
        guidance_scale=cfg,
        generator=torch.Generator().manual_seed(seed),
        callback_on_step_end=swap,
        callback_on_step_end_tensor_inputs=["prompt_embeds", "add_text_embeds"] if sdxl else ["prompt_embeds"],
        **SIZE,
    )
    return np.asarray(out.images[0])


@pytest.mark.parametrize(
    "model,reference_fixture,prompt,negative,per_step",
    [
        # [from:to:when] at a step: steps 0-1 see "red", as A1111 counts
        (
            "tiny-sd15",
            "tiny_sd15_reference",
            "a [red:blue:1] fox",
            "ugly",
            [("a red fox", "ugly")] * 2 + [("a blue fox", "ugly")] * 2,
        ),
        # [a|b] alternation, and an edit of the negative prompt on the same timeline
        (
            "tiny-sd15",
            "tiny_sd15_reference",
            "a [fox|owl]",
            "[blurry:dark:2]",
            [("a fox", "blurry"), ("a fox", "blurry"), ("a owl", "blurry"), ("a fox", "dark")],
        ),
        # SDXL: both text encoders and the pooled embedding switch; 0.5 of 4 steps is step 2
        (
            "tiny-sdxl",
            "tiny_sdxl_reference",
            "a [red:blue:0.5] fox",
            "ugly",
            [("a red fox", "ugly")] * 3 + [("a blue fox", "ugly")],
        ),
        # an edit that never fires is the plain prompt
        ("tiny-sd15", "tiny_sd15_reference", "a [red:blue:4] fox", "ugly", [("a red fox", "ugly")] * 4),
    ],
)
def test_prompt_editing_equals_diffusers_switching_prompts_at_the_same_steps(
    engine, request, model, reference_fixture, prompt, negative, per_step
):
    [item] = run(
        engine,
        model=model,
        prompt=prompt,
        negative_prompt=negative,
        seed=9,
        steps=4,
        sampler="Euler",
        scheduler="Automatic",
        cfg_scale=6.0,
        save_images=False,
    )
    expected = plain_with_prompt_per_step(
        request.getfixturevalue(reference_fixture), [p for p, _ in per_step], [n for _, n in per_step], 9, 6.0
    )
    assert_images_equal(np.asarray(item.image), expected)
    assert (item.params.prompt, item.params.negative_prompt) == (prompt, negative)  # metadata keeps what was typed
    if len(set(per_step)) > 1:  # and the edit did something: not the image of the first prompt alone
        first = plain_with_prompt_per_step(
            request.getfixturevalue(reference_fixture), [per_step[0][0]] * 4, [per_step[0][1]] * 4, 9, 6.0
        )
        assert not np.array_equal(np.asarray(item.image), first)
