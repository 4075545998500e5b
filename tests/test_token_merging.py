"""Token merging (ToMe): the plan's bookkeeping, its effect on the attention that runs, the engine, the metadata.

The plan is checked where its answer is known without it: tokens that are copies of each other merge first,
and a picture whose 2x2 cells are uniform comes back unchanged from merging and unmerging. In the engine the
self-attention must see fewer tokens, the image must change a little, be made again the same from its
metadata, and the hooks must be gone after the job.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines import read_metadata
from pipelines.errors import InvalidRequest
from pipelines.outputs.reading import request_fields_from_infotext
from pipelines.speed.token_merging import MAX_RATIO, plan_merge, top_transformers
from pipelines.types import GenerationRequest
from tests.support.compare import assert_images_equal
from tests.support.engine import run, running_engine

JOB = dict(model="tiny-sd15", prompt="a red boat", steps=3, seed=11, sampler="Euler", scheduler="Automatic")


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("height", "width"), [(8, 8), (6, 10), (5, 7)])
def test_one_destination_per_2x2_cell_and_the_share_asked_merges(height, width):
    x = torch.randn(2, height * width, 16, generator=generator(1))
    plan = plan_merge(x, height, width, 0.5, generator())
    cells = (height // 2) * (width // 2)
    assert plan.destinations.numel() == cells and plan.sources.numel() == height * width - cells
    rows, cols = plan.destinations // width, plan.destinations % width
    assert sorted(zip((rows // 2).tolist(), (cols // 2).tolist())) == sorted(
        {(r, c) for r in range(height // 2) for c in range(width // 2)}
    )
    merged = min(int(height * width * 0.5), height * width - cells)
    assert plan.merge(x).shape == (2, height * width - merged, 16)
    assert plan.unmerge(plan.merge(x)).shape == x.shape


def test_copies_merge_first_into_the_token_they_copy():
    x = torch.randn(1, 64, 32, generator=generator(2))
    first = plan_merge(x, 8, 8, 3 / 64, generator(7))
    copies = first.sources[:3]
    x[0, copies] = x[0, first.destinations[[4, 9, 1]]]  # three sources made equal to three destinations
    plan = plan_merge(x, 8, 8, 3 / 64, generator(7))  # the same draw of destinations
    assert sorted(plan.moved[0].tolist()) == sorted(copies.tolist())
    assert sorted(plan.into[0].tolist()) == [1, 4, 9]


def test_uniform_cells_come_back_unchanged():
    """Each token of a uniform 2x2 cell is most similar to its own cell's destination, so with the most merging
    the attention runs once per cell, and unmerging gives every token its cell's value back."""
    coarse = torch.randn(2, 24, 4, 5, generator=generator(3))
    image = F.interpolate(coarse, scale_factor=2.0, mode="nearest")  # 8x10, uniform 2x2 cells
    x = image.flatten(2).transpose(1, 2)  # (B, 80, C)
    plan = plan_merge(x, 8, 10, MAX_RATIO, generator(4))
    merged = plan.merge(x)
    assert merged.shape[1] == 20
    assert torch.equal(plan.unmerge(merged), x)


def test_no_plan_when_the_tokens_are_not_the_grid():
    x = torch.randn(1, 60, 8)
    assert plan_merge(x, 8, 8, 0.5, generator()) is None  # 60 tokens are not 8x8
    assert plan_merge(torch.randn(1, 64, 8), 8, 8, 0.0, generator()) is None


@pytest.fixture(scope="module")
def engine(tiny_models_dir, tmp_path_factory):
    with running_engine(tiny_models_dir, tmp_path_factory.mktemp("out")) as services:
        yield services


def test_the_largest_self_attention_sees_fewer_tokens_and_the_image_changes_a_little(engine):
    plain = run(engine, **JOB).result.images[0]
    [model] = [m for m in engine.cache.loaded() if m.name == "tiny-sd15"]
    query = top_transformers(model.pipe.unet)[0].transformer_blocks[0].attn1.to_q
    seen: list[int] = []
    hook = query.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    try:
        merged = run(engine, **JOB, token_merging=0.5).result.images[0]
        merged_tokens = set(seen)
        seen.clear()
        after = run(engine, **JOB).result.images[0]
    finally:
        hook.remove()
    assert merged_tokens == {32}, "64 latent tokens at 64x64, half merged"
    assert set(seen) == {64}, "the hooks are gone after the job"
    assert_images_equal(after.image, plain.image)
    a, b = np.asarray(plain.image).astype(int), np.asarray(merged.image).astype(int)
    assert not np.array_equal(a, b) and np.abs(a - b).mean() < 64
    assert merged.params.token_merging == 0.5 and "Token merging ratio: 0.5" in merged.infotext


def test_a_merged_image_is_made_again_the_same_from_its_metadata(engine):
    first = run(engine, **JOB, token_merging=0.4, image_count=2).result.images[1]  # the second: its own seed
    fields = request_fields_from_infotext(read_metadata(first.path).infotext)
    assert fields["token_merging"] == 0.4
    again = run(engine, **{**JOB, "seed": first.params.seed, "token_merging": fields["token_merging"]}).result.images[0]
    assert_images_equal(again.image, first.image)
    assert (
        request_fields_from_infotext("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64")["token_merging"] == 0
    )
    a1111 = request_fields_from_infotext("a cat\nSteps: 20, Sampler: Euler, Seed: 1, Size: 64x64, Token merging ratio: 0.9")
    assert a1111["token_merging"] == MAX_RATIO  # A1111 allows 0.9; beyond 0.75 nothing more can merge


def test_the_ratio_is_checked_at_submit(engine):
    with pytest.raises(InvalidRequest) as error:
        engine.queue.submit(GenerationRequest(**JOB, token_merging=0.8))
    assert error.value.field == "token_merging"


def test_sdxl_merges_at_its_highest_attention_resolution(engine):
    """SDXL's first down block has no attention: the merged level is the next one, at half the latent's size."""
    job = {**JOB, "model": "tiny-sdxl"}
    plain = run(engine, **job).result.images[0]
    [model] = [m for m in engine.cache.loaded() if m.name == "tiny-sdxl"]
    unet = model.pipe.unet
    assert not getattr(unet.down_blocks[0], "attentions", None), "the tiny SDXL has SDXL's layout"
    query = top_transformers(unet)[0].transformer_blocks[0].attn1.to_q
    seen: list[int] = []
    hook = query.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    try:
        merged = run(engine, **job, token_merging=0.5).result.images[0]
    finally:
        hook.remove()
    assert set(seen) == {8}, "4x4 tokens at half of the 8x8 latent, half merged"
    assert not np.array_equal(np.asarray(plain.image), np.asarray(merged.image))
