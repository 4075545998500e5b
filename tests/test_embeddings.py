"""Textual-inversion embeddings: tiny files in the formats users have, used when a prompt names them.

The reference is diffusers' own `load_textual_inversion` on a second, identical pipeline: the tensors
our encoder gives for "a photo of <name>" must be the ones diffusers gives once it has the same vectors.
Each test builds fresh tiny pipelines, because loading an embedding changes the tokenizer and encoder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pipelines.errors import InvalidRequest
from pipelines.loading.loader import LoadedModel
from pipelines.loading.registry import ModelRegistry
from pipelines.prompts.compel_encoder import CompelEncoder
from pipelines.prompts.embeddings import TextualInversions, read_tables
from pipelines.types import Architecture, ModelFormat, ModelKind, ModelRecord
from tests.support.tiny_models import tiny_sd15_pipeline, tiny_sdxl_pipeline

GEN = torch.Generator().manual_seed(7)
SD15_TWO = torch.randn(2, 32, generator=GEN)  # a 2-vector SD1.5 embedding for the tiny encoder (width 32)
SD15_THREE = torch.randn(3, 32, generator=GEN)
SDXL_L, SDXL_G = torch.randn(2, 32, generator=GEN), torch.randn(2, 64, generator=GEN)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ti-models")
    folder = root / "embeddings"
    (folder / "sdxl").mkdir(parents=True)
    save_file({"emb_params": SD15_TWO}, str(folder / "tiemb.safetensors"))  # diffusers/kohya layout
    torch.save(
        {"string_to_token": {"*": 265}, "string_to_param": {"*": SD15_THREE}, "name": "OldStyle", "step": 3000},
        folder / "OldStyle.pt",
    )  # A1111's own .pt layout
    save_file({"emb_params": SD15_THREE[:1]}, str(folder / "cat.safetensors"))  # a name that is a word
    save_file({"clip_l": SDXL_L, "clip_g": SDXL_G}, str(folder / "sdxl" / "xlemb.safetensors"))
    return root


@pytest.fixture(scope="module")
def registry(models, tmp_path_factory) -> ModelRegistry:
    reg = ModelRegistry(models, tmp_path_factory.mktemp("cache"))
    reg.refresh()
    return reg


def loaded(pipe, arch: Architecture) -> LoadedModel:
    return LoadedModel(
        ModelRecord(f"tiny-{arch.value}", ModelKind.CHECKPOINT, arch, ModelFormat.DIFFUSERS, None), arch, pipe, "0" * 64, 0
    )


def test_registry_lists_every_format(registry):
    names = sorted(r.name for r in registry.list(ModelKind.EMBEDDING))
    assert names == ["OldStyle", "cat", "sdxl/xlemb", "tiemb"]
    assert torch.equal(read_tables(registry.find(ModelKind.EMBEDDING, "OldStyle").path)[""], SD15_THREE)
    xl = read_tables(registry.find(ModelKind.EMBEDDING, "xlemb").path)
    assert torch.equal(xl["clip_l"], SDXL_L) and torch.equal(xl["clip_g"], SDXL_G)


def test_sd15_embedding_equals_diffusers_with_the_same_vectors(registry, models):
    ours = loaded(tiny_sd15_pipeline(seed=0), Architecture.SD1)
    reference = tiny_sd15_pipeline(seed=0)
    reference.load_textual_inversion(str(models / "embeddings" / "tiemb.safetensors"), token="tiemb")
    encoder = CompelEncoder(TextualInversions(registry))
    got = encoder.encode(ours, "a photo of TiEmb, (tiemb:1.0)", "", 1, False)  # any case, weights work
    expected, _ = reference.encode_prompt("a photo of tiemb, tiemb", "cpu", 1, False)
    assert torch.equal(got.prompt_embeds, expected)
    assert not torch.equal(got.prompt_embeds, reference.encode_prompt("a photo of x, x", "cpu", 1, False)[0])


def test_a1111_pt_file_and_every_vector_is_used(registry):
    model = loaded(tiny_sd15_pipeline(seed=0), Architecture.SD1)
    encoder = CompelEncoder(TextualInversions(registry))
    before = len(model.pipe.tokenizer)
    encoder.encode(model, "OldStyle portrait", "", 1, False)
    assert len(model.pipe.tokenizer) == before + 3  # one token per vector
    weights = model.pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(weights[-3:], SD15_THREE)
    ids = model.pipe.tokenizer(encoder.embeddings.prepare(model, ["OldStyle"])("OldStyle"), add_special_tokens=False).input_ids
    assert ids == list(range(before, before + 3))


def test_loaded_once_per_model_and_only_when_named(registry):
    model = loaded(tiny_sd15_pipeline(seed=0), Architecture.SD1)
    encoder = CompelEncoder(TextualInversions(registry))
    size = len(model.pipe.tokenizer)
    encoder.encode(model, "tiembs and mytiemb are other words", "", 1, False)
    assert len(model.pipe.tokenizer) == size
    encoder.encode(model, "a tiemb", "", 1, False)
    encoder.encode(model, "another tiemb", "tiemb", 1, True)
    assert len(model.pipe.tokenizer) == size + 2


def test_an_embedding_named_like_a_word(registry):
    model = loaded(tiny_sd15_pipeline(seed=0), Architecture.SD1)
    plain = CompelEncoder().encode(model, "a cat", "", 1, False).prompt_embeds
    got = CompelEncoder(TextualInversions(registry)).encode(model, "a cat", "", 1, False).prompt_embeds
    assert not torch.equal(got, plain)  # diffusers refuses this name; A1111 uses it, so do we


def test_sdxl_embedding_goes_to_both_encoders(registry):
    ours = loaded(tiny_sdxl_pipeline(seed=0), Architecture.SDXL)
    reference = tiny_sdxl_pipeline(seed=0)
    reference.load_textual_inversion(
        {"emb_params": SDXL_L}, token="xlemb", text_encoder=reference.text_encoder, tokenizer=reference.tokenizer
    )
    reference.load_textual_inversion(
        {"emb_params": SDXL_G}, token="xlemb", text_encoder=reference.text_encoder_2, tokenizer=reference.tokenizer_2
    )
    got = CompelEncoder(TextualInversions(registry)).encode(ours, "a photo of xlemb", "", 1, False)
    expected = reference.encode_prompt(
        "a photo of xlemb", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    assert torch.equal(got.prompt_embeds, expected[0])
    # pooled: at the end-of-text token (CLIP's argmax rule would land on the embedding's higher ids)
    encoder2 = ours.pipe.text_encoder_2
    ids = ours.pipe.tokenizer_2(
        TextualInversions(registry).prepare(ours, ["xlemb"])("a photo of xlemb"),
        padding="max_length",
        max_length=77,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        hidden = encoder2(ids).last_hidden_state
    end = int((ids[0] == 49407).nonzero()[0])
    assert torch.equal(got.pooled_prompt_embeds, encoder2.text_projection(hidden[:, end]))


def test_wrong_architecture_is_a_clear_error(registry):
    sd15 = loaded(tiny_sd15_pipeline(seed=0), Architecture.SD1)
    with pytest.raises(InvalidRequest, match=r"xlemb is for SDXL, but tiny-sd1 is SD 1.x"):
        CompelEncoder(TextualInversions(registry)).encode(sd15, "xlemb", "", 1, False)
    sdxl = loaded(tiny_sdxl_pipeline(seed=0), Architecture.SDXL)
    with pytest.raises(InvalidRequest, match=r"tiemb is for a text encoder of width 32, but tiny-sdxl is SDXL"):
        CompelEncoder(TextualInversions(registry)).encode(sdxl, "tiemb", "", 1, False)


def test_embedding_in_a_long_prompt_stays_in_one_chunk(registry):
    model = loaded(tiny_sd15_pipeline(seed=0), Architecture.SD1)
    encoder = CompelEncoder(TextualInversions(registry))
    got = encoder.encode(model, "dog " * 74 + "OldStyle", "", 1, False).prompt_embeds
    assert got.shape[1] == 154
    ids = encoder.providers(model, 1)[0].get_token_ids_and_expand_weights(
        [encoder.embeddings.prepare(model, ["OldStyle"])("dog " * 74 + "OldStyle")], [1.0], "cpu"
    )[0]
    first, second = ids[:77].tolist(), ids[77:].tolist()
    assert first[75] == 49407 and second[1:4] == list(range(len(model.pipe.tokenizer) - 3, len(model.pipe.tokenizer)))


def test_jobs_record_the_embeddings_used_as_a1111s_ti_hashes(models, tiny_sd15_file, tmp_path):
    """Through the engine: names and file hashes of the embeddings the prompts used (negative included)."""
    import hashlib

    from pipelines.config import AppConfig
    from pipelines.outputs.reading import read_metadata
    from pipelines.services import build_services
    from pipelines.types import GenerationRequest, ImageParams, JobState, UsedEmbedding
    from tests.support.paths import link_or_copy

    root = tmp_path / "models"
    link_or_copy(tiny_sd15_file, root / "checkpoints" / tiny_sd15_file.name)
    config = tiny_sd15_file.with_name(tiny_sd15_file.stem + ".config.json")
    link_or_copy(config, root / "checkpoints" / config.name)
    for name in ("tiemb.safetensors", "OldStyle.pt"):
        link_or_copy(models / "embeddings" / name, root / "embeddings" / name)
    services = build_services(AppConfig(models_dir=root, output_dir=tmp_path / "out", device="cpu", precision="fp32"))
    try:

        def run(prompt, negative):
            info = services.queue.wait(
                services.queue.submit(
                    GenerationRequest(prompt=prompt, negative_prompt=negative, steps=2, seed=1, width=64, height=64)
                ),
                timeout=120,
            )
            assert info.state is JobState.FINISHED, info.error
            return info.result.images[0]

        item = run("a photo of [tiemb:x:0.5]", "OldStyle, blurry")  # a name inside a prompt edit counts too
        digest = {
            n: hashlib.sha256((models / "embeddings" / n).read_bytes()).hexdigest() for n in ("tiemb.safetensors", "OldStyle.pt")
        }
        assert item.params.embeddings == (
            UsedEmbedding("OldStyle", digest["OldStyle.pt"]),
            UsedEmbedding("tiemb", digest["tiemb.safetensors"]),
        )
        expected = f'TI hashes: "OldStyle: {digest["OldStyle.pt"][:12]}, tiemb: {digest["tiemb.safetensors"][:12]}"'
        assert expected in item.infotext
        meta = read_metadata(item.path)
        assert meta.params["TI hashes"] == f"OldStyle: {digest['OldStyle.pt'][:12]}, tiemb: {digest['tiemb.safetensors'][:12]}"
        assert ImageParams.from_dict(meta.image_params) == item.params
        plain = run("a photo of a cat", "blurry")
        assert plain.params.embeddings == () and "TI hashes" not in plain.infotext
    finally:
        services.close()


# Embedding files as each tool publishes them, at the real text encoders' widths (768 CLIP-L, 1280 OpenCLIP-G).
PUBLISHED = {  # file -> (what it holds, the tables read_tables gives, architecture)
    "a1111-trained.pt": (  # A1111's Embedding.save(): a trained Parameter and bookkeeping beside it
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": torch.nn.Parameter(torch.ones(2, 768))},
            "name": "a1111-trained",
            "step": 3000,
            "sd_checkpoint": "e1441589a6",
            "sd_checkpoint_name": "v1-5-pruned-emaonly",
        },
        {"": torch.ones(2, 768)},
        Architecture.SD1,
    ),
    "learned_embeds.bin": ({"<cat-toy>": torch.full((768,), 2.0)}, {"": torch.full((1, 768), 2.0)}, Architecture.SD1),
    "kohya-fp16.safetensors": (
        {"emb_params": torch.full((3, 768), 0.5, dtype=torch.float16)},
        {"": torch.full((3, 768), 0.5)},
        Architecture.SD1,
    ),
    "sdxl.safetensors": (
        {"clip_l": torch.zeros(2, 768, dtype=torch.float16), "clip_g": torch.ones(2, 1280, dtype=torch.float16)},
        {"clip_l": torch.zeros(2, 768), "clip_g": torch.ones(2, 1280)},
        Architecture.SDXL,
    ),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_embedding_files_are_identified_and_read(tmp_path, name):
    """diffusers' textual_inversion writes one 1-D vector under the token's name; A1111's .pt nests its table
    in `string_to_param` (the probe reads its width there, to tell SD 1.x from SD 2.x)."""
    from pipelines.loading.probe import probe_file

    content, tables, arch = PUBLISHED[name]
    path = tmp_path / name
    if path.suffix == ".safetensors":
        save_file(content, str(path))
    else:
        torch.save(content, path)
    probe = probe_file(path)
    assert (probe.kind, probe.architecture, probe.note) == (ModelKind.EMBEDDING, arch, "")
    got = read_tables(path)
    assert got.keys() == tables.keys() and all(torch.equal(got[k], tables[k]) for k in tables)


def test_a1111_parameter_and_fp16_files_put_their_vectors_into_the_encoder(tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    trained = torch.nn.Parameter(SD15_TWO.clone())  # what A1111 saves after training
    torch.save(
        {"string_to_token": {"*": 265}, "string_to_param": {"*": trained}, "name": "trained", "step": 10}, folder / "trained.pt"
    )
    save_file({"emb_params": SD15_THREE.half()}, str(folder / "halfemb.safetensors"))
    registry = ModelRegistry(tmp_path, tmp_path / "cache")
    registry.refresh()
    model = loaded(tiny_sd15_pipeline(seed=0), Architecture.SD1)
    encoder = CompelEncoder(TextualInversions(registry))
    before = len(model.pipe.tokenizer)
    encoder.encode(model, "trained and halfemb", "", 1, False)
    weights = model.pipe.text_encoder.get_input_embeddings().weight
    assert len(model.pipe.tokenizer) == before + 5
    rewrite = encoder.embeddings.prepare(model, ["trained", "halfemb"])
    for word, vectors in (("trained", SD15_TWO), ("halfemb", SD15_THREE.half().float())):
        ids = model.pipe.tokenizer(rewrite(word), add_special_tokens=False).input_ids
        assert torch.equal(weights[ids], vectors), word
