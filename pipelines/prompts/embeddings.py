"""Textual-inversion embeddings from models/embeddings, used when their file name appears in a prompt.

As in A1111, writing the embedding's name (`EasyNegative`, `(bad-hands-5:1.2)`) is all it takes. Each
embedding is loaded into a pipeline the first time one of its prompts names it, and stays there for as
long as that pipeline is loaded.

The vectors are added to the tokenizer under private placeholder tokens (`<ti3f2a9c1en0>`, one per
vector), and the name is replaced by those placeholders, as a whole word only, just before encoding.
Adding the name itself as a token (what diffusers' `load_textual_inversion` does) would also match it
inside longer words, refuses names that are words of the vocabulary, and, with the tokenizers-backed
CLIPTokenizer of transformers 5, silently uses only the first vector of a multi-vector embedding.
"""

from __future__ import annotations

import functools
import hashlib
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from pipelines.errors import InvalidRequest
from pipelines.loading.loader import LoadedModel
from pipelines.loading.probe import SAFETENSORS_SUFFIXES, load_pickle_state_dict
from pipelines.loading.registry import ModelRegistry
from pipelines.types import Architecture, ModelKind, ModelRecord

SDXL_KEYS = ("clip_l", "clip_g")  # which SDXL file table goes to text_encoder, which to text_encoder_2


@dataclass(frozen=True)
class LoadedEmbedding:
    name: str  # the word that calls it in a prompt
    record: ModelRecord
    placeholders: str  # what the name is replaced with: one token per vector


PLACEHOLDER = re.compile(r"^<ti[0-9a-f]{8}n(\d+)>$")


def placeholder_tokens(record: ModelRecord, count: int) -> list[str]:
    """The private tokens of one embedding's vectors: `<ti` + 8 hex digits of its name + `n<i>>`."""
    digest = hashlib.sha1(record.name.encode("utf-8")).hexdigest()[:8]
    return [f"<ti{digest}n{i}>" for i in range(count)]


def embedding_start_ids(tokenizer: Any) -> set[int]:
    """Token ids of the first vector of every embedding loaded into this tokenizer."""
    return {i for token, i in tokenizer.added_tokens_encoder.items() if (m := PLACEHOLDER.match(token)) and m.group(1) == "0"}


def embedding_word(record: ModelRecord) -> str:
    """The word a prompt uses: the file name without folder or suffix."""
    return record.name.rsplit("/", 1)[-1]


def embedding_shape(record: ModelRecord) -> tuple[int, int] | None:
    """(vectors, width summed over the text encoders) of an embedding file; None when it cannot be read."""
    if record.path is None:
        return None
    try:
        tables = read_tables(record.path)
    except (OSError, ValueError, RuntimeError):
        return None
    first = next(iter(tables.values()))
    return int(first.shape[0]), sum(int(t.shape[-1]) for t in tables.values())


def read_tables(path: Path) -> dict[str, torch.Tensor]:
    """The vector tables of an embedding file: {"": table} for SD 1.x/2.x, {"clip_l":…, "clip_g":…} for SDXL.

    Reads A1111 `.pt` (string_to_param), diffusers/kohya `.safetensors` (emb_params, or one table under
    any name) and SDXL files; pickles are read with weights_only, as every pickle here is.
    """
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        data: dict[str, Any] = load_file(str(path))
    else:
        data = load_pickle_state_dict(path)
    if all(k in data for k in SDXL_KEYS):
        return {k: _as_table(data[k]) for k in SDXL_KEYS}
    if isinstance(data.get("string_to_param"), dict) and data["string_to_param"]:
        return {"": _as_table(next(iter(data["string_to_param"].values())))}
    if "emb_params" in data:
        return {"": _as_table(data["emb_params"])}
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(tensors) == 1:
        return {"": _as_table(tensors[0])}
    raise ValueError("no embedding vectors found (expected emb_params, string_to_param, or clip_l and clip_g)")


def _as_table(value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"expected a tensor of vectors, found {type(value).__name__}")
    table = value.detach().float()
    return table.unsqueeze(0) if table.ndim == 1 else table


class TextualInversions:
    """Finds embedding names in prompts, loads those embeddings into a pipeline once, and rewrites prompts."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry
        # pipeline -> word (lower case) -> loaded embedding; entries go when the pipeline is unloaded
        self._loaded: weakref.WeakKeyDictionary[Any, dict[str, LoadedEmbedding]] = weakref.WeakKeyDictionary()

    def named_in(self, texts: Iterable[str]) -> dict[str, list[ModelRecord]]:
        """word (lower case) -> embedding files of that name, for every embedding a text mentions."""
        records = self.registry.list(ModelKind.EMBEDDING)
        pattern = self._pattern([embedding_word(r) for r in records])
        if pattern is None:
            return {}
        found = {m.group(0).lower() for text in texts for m in pattern.finditer(text)}
        by_word: dict[str, list[ModelRecord]] = {}
        for record in records:
            if embedding_word(record).lower() in found:
                by_word.setdefault(embedding_word(record).lower(), []).append(record)
        return by_word

    def prepare(self, model: LoadedModel, texts: Iterable[str]) -> Callable[[str], str]:
        """Load what the texts name into the model (once), and return the prompt rewriter for it."""
        texts = list(texts)
        loaded = self._loaded.setdefault(model.pipe, {})
        for word, records in self.named_in(texts).items():
            if word not in loaded:
                loaded[word] = self._load(model, _best_match(records, model.architecture))
        if not loaded:
            return lambda text: text
        pattern = self._pattern([e.name for e in loaded.values()])
        assert pattern is not None
        return lambda text: pattern.sub(lambda m: loaded[m.group(0).lower()].placeholders, text)

    def used(self, model: LoadedModel, texts: Iterable[str]) -> list[ModelRecord]:
        """The embedding files loaded into this model that the texts name (after `prepare`), in name order."""
        loaded = self._loaded.get(model.pipe, {})
        pattern = self._pattern([e.name for e in loaded.values()])
        if pattern is None:
            return []
        found = {m.group(0).lower() for text in texts for m in pattern.finditer(text)}
        return [loaded[word].record for word in sorted(found)]

    def _pattern(self, words: list[str]) -> re.Pattern[str] | None:
        return _word_pattern(tuple(sorted(set(words))))

    def _load(self, model: LoadedModel, record: ModelRecord) -> LoadedEmbedding:
        assert record.path is not None
        try:
            tables = read_tables(record.path)
        except (OSError, ValueError, RuntimeError) as exc:
            raise InvalidRequest(f"Embedding {record.name} could not be read: {exc}", field="prompt") from exc
        pipe = model.pipe
        sdxl = model.architecture in (Architecture.SDXL, Architecture.SDXL_REFINER)
        targets = [] if model.architecture is Architecture.SDXL_REFINER else [(pipe.tokenizer, pipe.text_encoder, "clip_l")]
        if sdxl:
            targets.append((pipe.tokenizer_2, pipe.text_encoder_2, "clip_g"))
        vectors = [tables.get(key if sdxl else "") for _, _, key in targets]
        _check_fits(record, model, tables, vectors, [encoder for _, encoder, _ in targets])
        tokens = placeholder_tokens(record, vectors[0].shape[0])
        for (tokenizer, encoder, _), table in zip(targets, vectors):
            _add_vectors(tokenizer, encoder, tokens, table)
        return LoadedEmbedding(embedding_word(record), record, " ".join(tokens))


@functools.lru_cache(maxsize=16)
def _word_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex for all names, longest first, matching whole words in any case (CLIP lowercases)."""
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![\w])(?:{alternatives})(?![\w])", re.IGNORECASE)


def _best_match(records: list[ModelRecord], architecture: Architecture) -> ModelRecord:
    """Of several files with the same name, the one made for this model's architecture."""
    for wanted in (architecture, Architecture.UNKNOWN):
        for record in records:
            if record.architecture is wanted:
                return record
    return records[0]


def _check_fits(
    record: ModelRecord,
    model: LoadedModel,
    tables: dict[str, torch.Tensor],
    vectors: list[torch.Tensor | None],
    encoders: list[Any],
) -> None:
    made_for = record.architecture.label if record.architecture is not Architecture.UNKNOWN else None
    if made_for is None:
        made_for = "SDXL" if "clip_g" in tables else f"a text encoder of width {next(iter(tables.values())).shape[-1]}"
    problem = f"Embedding {record.name} is for {made_for}, but {model.name} is {model.architecture.label}"
    if any(v is None for v in vectors):
        raise InvalidRequest(problem + "; use an embedding made for this model.", field="prompt")
    for table, encoder in zip(vectors, encoders):
        width = encoder.get_input_embeddings().embedding_dim
        if table.shape[-1] != width:
            raise InvalidRequest(
                f"{problem} (its vectors have {table.shape[-1]} numbers, this text encoder takes {width}).", field="prompt"
            )
    if len({v.shape[0] for v in vectors}) > 1:
        raise InvalidRequest(f"Embedding {record.name}: clip_l and clip_g hold different numbers of vectors.", field="prompt")


def _add_vectors(tokenizer: Any, encoder: Any, tokens: list[str], table: torch.Tensor) -> None:
    tokenizer.add_tokens(tokens)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if tokenizer(" ".join(tokens), add_special_tokens=False)["input_ids"] != ids:
        raise RuntimeError("the tokenizer does not keep textual-inversion placeholders whole")
    encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weight = encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[ids] = table.to(weight.device, weight.dtype)
