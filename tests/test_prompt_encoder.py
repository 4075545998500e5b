"""CompelEncoder's tensors against references: the pipeline's own encode_prompt, compel's own weighting.

The tiny SD1.5/SDXL models use the real CLIP tokenizer and vocabulary with small random text encoders, so
token ids, chunk boundaries and weighting are those of the full-size models.
"""

from __future__ import annotations

import compel
import pytest
import torch

from pipelines.errors import InvalidRequest
from pipelines.loading.loader import LoadedModel
from pipelines.prompts.compel_encoder import CompelEncoder
from pipelines.types import Architecture, ModelFormat, ModelKind, ModelRecord


def loaded(pipe, arch: Architecture, name: str = "tiny") -> LoadedModel:
    record = ModelRecord(name, ModelKind.CHECKPOINT, arch, ModelFormat.DIFFUSERS, None)
    return LoadedModel(record, arch, pipe, "0" * 64, 0)


@pytest.fixture(scope="module")
def sd15(tiny_sd15_reference):
    return loaded(tiny_sd15_reference, Architecture.SD1)


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_reference):
    return loaded(tiny_sdxl_reference, Architecture.SDXL)


ENCODER = CompelEncoder()


def ours(model, prompt, negative="", clip_skip=1, guidance=True):
    return ENCODER.encode(model, prompt, negative, clip_skip, guidance)


def diffusers_sd15(model, prompt, negative=""):
    pipe = model.pipe
    return pipe.encode_prompt(prompt, pipe.device, 1, True, negative_prompt=negative)


def diffusers_sdxl(model, prompt, negative="", clip_skip=None):
    pipe = model.pipe
    return pipe.encode_prompt(
        prompt,
        device=pipe.device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=True,
        negative_prompt=negative,
        clip_skip=clip_skip,
    )


def plain_sd15(model, prompt):
    return diffusers_sd15(model, prompt)[0]


# ------------------------------------------------------------------------- unweighted == plain diffusers


@pytest.mark.parametrize("prompt,negative", [("a red fox in snow", "blurry"), ("", ""), ("a photo, of: nothing!", "x")])
def test_plain_prompt_equals_diffusers_sd15(sd15, prompt, negative):
    pos, neg = diffusers_sd15(sd15, prompt, negative)
    got = ours(sd15, prompt, negative)
    assert torch.equal(got.prompt_embeds, pos) and torch.equal(got.negative_prompt_embeds, neg)


@pytest.mark.parametrize("prompt,negative", [("a red fox in snow", "blurry"), ("", "")])
def test_plain_prompt_equals_diffusers_sdxl(sdxl, prompt, negative):
    pos, neg, pooled, neg_pooled = diffusers_sdxl(sdxl, prompt, negative)
    got = ours(sdxl, prompt, negative)
    assert torch.equal(got.prompt_embeds, pos) and torch.equal(got.negative_prompt_embeds, neg)
    assert torch.equal(got.pooled_prompt_embeds, pooled) and torch.equal(got.negative_pooled_prompt_embeds, neg_pooled)


def test_weight_one_is_exactly_unweighted(sd15, sdxl):
    for model in (sd15, sdxl):
        a = ours(model, "a photo of a (cat:1.0) on a mat", "(blurry:1.0)")
        b = ours(model, "a photo of a cat on a mat", "blurry")
        for name, tensor in b.pipeline_kwargs().items():
            assert torch.equal(a.pipeline_kwargs()[name], tensor), name


# ------------------------------------------------------------------------- weighting == compel's own


@pytest.mark.parametrize(
    "a1111,compel_text",
    [
        ("a photo of a (cat:1.5) on a mat", "a photo of a (cat)1.5 on a mat"),
        ("a photo of a ((cat)) on a mat", "a photo of a (cat)1.21 on a mat"),
        ("a photo of a [cat] on a mat", f"a photo of a (cat){1 / 1.1} on a mat"),
        ("(a phrase, with commas:0.8) and more", "(a phrase, with commas)0.8 and more"),
        ("(red:1.3) fox, (snow:0.6)", "(red)1.3 fox, (snow)0.6"),
    ],
)
def test_a1111_weights_equal_compels_weighting_sd15(sd15, a1111, compel_text):
    reference = compel.Compel(tokenizer=sd15.pipe.tokenizer, text_encoder=sd15.pipe.text_encoder, truncate_long_prompts=False)
    with torch.no_grad():
        expected = reference(compel_text)
    got = ours(sd15, a1111, guidance=False).prompt_embeds
    assert torch.equal(got, expected)
    assert not torch.equal(got, plain_sd15(sd15, a1111.replace("(", "").replace(")", "")))


def test_a1111_weights_equal_compels_weighting_sdxl(sdxl):
    with torch.no_grad():
        expected = compel.CompelForSDXL(sdxl.pipe)("a photo of a (cat)1.5 on a mat")
    got = ours(sdxl, "a photo of a (cat:1.5) on a mat", guidance=False)
    assert torch.equal(got.prompt_embeds, expected.embeds)
    # the pooled embedding ignores weights, as A1111's does: it is the plain text's
    assert torch.equal(got.pooled_prompt_embeds, diffusers_sdxl(sdxl, "a photo of a cat on a mat")[2])


@pytest.mark.parametrize("text", ["a cat++ on a mat", "(a red cat)1.3 on a (mat)0.5", '("a cat", "a dog").blend(0.7, 0.3)'])
def test_compel_syntax_equals_compel(sd15, text):
    reference = compel.Compel(tokenizer=sd15.pipe.tokenizer, text_encoder=sd15.pipe.text_encoder, truncate_long_prompts=False)
    with torch.no_grad():
        expected = reference(text)
    assert torch.equal(ours(sd15, text, guidance=False).prompt_embeds, expected)


def test_weighting_changes_only_what_it_should(sd15):
    plain = plain_sd15(sd15, "a cat on a mat")
    weighted = ours(sd15, "a (cat:1.5) on a mat", guidance=False).prompt_embeds
    changed = (weighted != plain).any(dim=-1)[0]
    assert changed.nonzero().flatten().tolist() == [2]  # <start> a cat …: only the token "cat"


def test_escapes_are_literal_brackets(sd15):
    assert torch.equal(ours(sd15, r"a \(cat\) \[dog\]", guidance=False).prompt_embeds, plain_sd15(sd15, "a (cat) [dog]"))


def test_lora_tags_are_not_encoded(sd15):
    assert torch.equal(
        ours(sd15, "a cat <lora:detail:0.8> on a mat", guidance=False).prompt_embeds, plain_sd15(sd15, "a cat on a mat")
    )


def test_down_weighting_nothing_does_not_crash(sd15):
    assert torch.equal(ours(sd15, "a cat [ ] ( :0.5)", guidance=False).prompt_embeds, plain_sd15(sd15, "a cat"))


# ------------------------------------------------------------------------- long prompts, BREAK, padding


def test_long_prompt_is_chunked_not_cut(sd15):
    words = "cat " * 100  # one token each: 75 in the first chunk, 25 in the second
    got = ours(sd15, words, guidance=False).prompt_embeds
    assert got.shape[1] == 2 * 77
    assert torch.equal(got[:, :77], plain_sd15(sd15, "cat " * 75))
    assert torch.equal(got[:, 77:], plain_sd15(sd15, "cat " * 25))


def test_long_prompt_chunks_end_at_a_comma(sd15):
    phrase = "red green blue cat dog sun, "  # 7 tokens
    assert len(sd15.pipe.tokenizer(phrase, add_special_tokens=False).input_ids) == 7
    got = ours(sd15, phrase * 12, guidance=False).prompt_embeds
    assert torch.equal(got[:, :77], plain_sd15(sd15, phrase * 10))
    assert torch.equal(got[:, 77:], plain_sd15(sd15, phrase * 2))


def test_break_starts_a_new_chunk(sd15, sdxl):
    got = ours(sd15, "a red fox BREAK in deep snow", guidance=False).prompt_embeds
    assert torch.equal(got, torch.cat([plain_sd15(sd15, "a red fox"), plain_sd15(sd15, "in deep snow")], dim=1))
    xl = ours(sdxl, "a red fox BREAK in deep snow", guidance=False)
    assert xl.prompt_embeds.shape[1] == 2 * 77
    assert torch.equal(xl.prompt_embeds[:, 77:], diffusers_sdxl(sdxl, "in deep snow")[0])
    assert torch.equal(xl.pooled_prompt_embeds, diffusers_sdxl(sdxl, "a red fox")[2])  # first chunk


def test_positive_and_negative_are_padded_to_the_same_length(sd15, sdxl):
    got = ours(sd15, "cat " * 100, "blurry")
    assert got.negative_prompt_embeds.shape == got.prompt_embeds.shape == (1, 154, 32)
    assert torch.equal(got.negative_prompt_embeds[:, :77], plain_sd15(sd15, "blurry"))
    assert torch.equal(got.negative_prompt_embeds[:, 77:], plain_sd15(sd15, ""))  # padded with the empty prompt
    xl = ours(sdxl, "short", "ugly " * 90)
    assert xl.prompt_embeds.shape == xl.negative_prompt_embeds.shape == (1, 154, 96)
    assert torch.equal(xl.prompt_embeds[:, 77:], diffusers_sdxl(sdxl, "")[0])


# ------------------------------------------------------------------------- clip skip


def test_clip_skip_sd15_takes_an_earlier_layer_normalized(sd15):
    encoder, tokenizer = sd15.pipe.text_encoder, sd15.pipe.tokenizer
    ids = tokenizer("a red fox", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = encoder(ids, output_hidden_states=True).hidden_states
        expected = encoder.final_layer_norm(hidden[-2])
    got = ours(sd15, "a red fox", "a red fox", clip_skip=2)
    assert torch.equal(got.prompt_embeds, expected)
    assert torch.equal(got.negative_prompt_embeds, expected)  # the negative is skipped the same way
    assert not torch.equal(got.prompt_embeds, plain_sd15(sd15, "a red fox"))


def test_clip_skip_sdxl_matches_diffusers(sdxl):
    pos, _, pooled, _ = diffusers_sdxl(sdxl, "a red fox", clip_skip=1)
    got = ours(sdxl, "a red fox", "a red fox", clip_skip=2)
    assert torch.equal(got.prompt_embeds, pos) and torch.equal(got.pooled_prompt_embeds, pooled)
    # diffusers applies clip skip to the positive only; A1111, and we, to both
    assert torch.equal(got.negative_prompt_embeds, pos)


def test_clip_skip_past_the_last_layer_is_refused(sd15):
    with pytest.raises(InvalidRequest) as err:
        ours(sd15, "x", clip_skip=5)
    assert err.value.field == "clip_skip" and "3 layers" in str(err.value)


def test_no_guidance_means_no_negative(sdxl):
    got = ours(sdxl, "x", "y", guidance=False)
    assert got.negative_prompt_embeds is None and got.negative_pooled_prompt_embeds is None


def test_weights_that_leave_nothing_are_a_clear_error(sd15):
    with pytest.raises(InvalidRequest) as err:
        ours(sd15, "x", '("a cat", "a dog").blend(0, 0)')
    assert err.value.field == "negative_prompt" and ".blend()" in str(err.value)
