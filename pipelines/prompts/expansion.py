"""Prompt expansion ("Fooocus V2"): a small language model continues the prompt with words that describe it.

The model is the user's: a Hugging Face causal-LM folder in models/prompt_expansion/<name>/ (config.json,
weights, tokenizer files), such as a GPT-2 fine-tuned on image prompts; Fooocus's `fooocus_expansion`
folder loads as it is. An optional word list in the folder (`positive.txt`, as that folder has, or
`words.txt`) limits the words it may add. Nothing of Fooocus's is shipped: its weights and word list are
licensed for use inside Fooocus only.

How the words are chosen (Easel's own procedure): the prompt, tidied and ended with a comma, is fed to the
model; each next token is drawn from the 100 likeliest (top-k sampling) by a torch.Generator seeded with the
image's seed, so a seed always gives the same words; a token the text already holds is not drawn again
(commas excepted), nor special tokens or line breaks, and with a word list only its words and commas are.
The continuation stops where the prompt's 75-token CLIP chunk ends: it fills the chunk the prompt ends in
and never starts another. It runs on the CPU in float32, so the words are the same on every machine; a
GPT-2 of 124 M parameters takes a second or two there for a whole chunk (bench/quality_controls.py).
"""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pipelines.errors import InvalidRequest, ModelNotFound
from pipelines.loading.probe import ProbeResult
from pipelines.types import Architecture, ModelKind, ModelRecord

CHUNK = 75  # CLIP tokens per chunk of a long prompt
FOOOCUS_V2 = "Fooocus V2"  # Fooocus's name for its expansion; as a model name: the first one installed
TOP_K = 100
WORD_LISTS = ("positive.txt", "words.txt")
_CAUSAL_LM = ("ForCausalLM", "LMHeadModel")
_LORA_TAG = re.compile(r"<(?:lora|lyco):[^>]*>", re.IGNORECASE)


def probe_expansion_folder(path: Path, filenames: Iterable[str]) -> ProbeResult | None:
    """A prompt-expansion model folder (None when `path` is no model folder); `note` says what is missing."""
    names = set(filenames)
    if "config.json" not in names:
        return None
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        config = None
    note = ""
    architectures = config.get("architectures") or [] if isinstance(config, dict) else []
    if not isinstance(config, dict):
        note = "config.json cannot be read"
    elif not any(str(a).endswith(_CAUSAL_LM) for a in architectures):
        note = f"not a causal language model (config.json names {architectures or config.get('model_type')!r})"
    elif not any(n.endswith((".safetensors", ".bin")) for n in names):
        note = "its weights are missing (pytorch_model.bin or model.safetensors)"
    elif "tokenizer.json" not in names and not {"vocab.json", "merges.txt"} <= names:
        note = "its tokenizer is missing (tokenizer.json, or vocab.json and merges.txt)"
    return ProbeResult(ModelKind.PROMPT_EXPANSION, Architecture.UNKNOWN, note)


def tidy(prompt: str) -> str:
    """The text the model continues: without <lora:…> tags, spaces collapsed, no trailing comma or full stop."""
    text = " ".join(_LORA_TAG.sub(" ", prompt).split())
    return text.strip(",. ")


def joined(prompt: str, continuation: str) -> str:
    """A prompt with a continuation after a comma (the prompt alone when there is none)."""
    head = prompt.rstrip(" ,")
    return f"{head}, {continuation}" if head and continuation else (head or continuation)


@dataclass
class _Loaded:
    name: str
    model: Any  # transformers causal LM, CPU float32, eval mode
    tokenizer: Any
    blocked: Any  # bool tensor over the vocabulary: tokens never drawn
    comma: int | None


class PromptExpander:
    """Finds expansion models in the registry, keeps the last one used loaded, and expands prompts with it.

    Used on the worker thread only (as every torch call is); `find` may be called from any thread."""

    def __init__(self, registry: Any):
        self.registry = registry
        self._loaded: _Loaded | None = None
        self._clip: Any = None
        self._lock = threading.Lock()

    def find(self, name: str) -> ModelRecord:
        """The model called `name`, usable ("Fooocus V2": the first one installed); InvalidRequest otherwise."""
        if name == FOOOCUS_V2:
            usable = [r for r in self.registry.list(ModelKind.PROMPT_EXPANSION) if r.usable]
            if not usable:
                raise InvalidRequest(
                    f"{FOOOCUS_V2} asks for prompt expansion, and no model is installed. {where_to_get_one(self.registry)}",
                    field="prompt_expansion",
                )
            return usable[0]
        try:
            record = self.registry.find(ModelKind.PROMPT_EXPANSION, name)
        except ModelNotFound as exc:
            raise InvalidRequest(f"Prompt expansion: {exc} {where_to_get_one(self.registry)}", field="prompt_expansion") from exc
        if not record.usable:
            raise InvalidRequest(f"Prompt expansion {record.name} cannot be used: {record.note}.", field="prompt_expansion")
        return record

    def expand(self, name: str, prompt: str, seed: int) -> str:
        """The words model `name` adds to `prompt` for this seed ("" when the prompt is empty or fills its chunk)."""
        import torch

        text = tidy(prompt)
        if not text:
            return ""
        used = self.clip_tokens(text + ",")
        limit = CHUNK * math.ceil(used / CHUNK)
        if used >= limit:
            return ""
        loaded = self.load(self.find(name))
        ids = loaded.tokenizer(text + ",")["input_ids"]
        blocked = loaded.blocked.clone()
        blocked[[i for i in ids if i != loaded.comma]] = True
        generator = torch.Generator("cpu").manual_seed(int(seed))
        room = getattr(loaded.model.config, "n_positions", None) or getattr(loaded.model.config, "max_position_embeddings", 1024)
        new: list[int] = []
        step_input, past = ids, None
        with torch.inference_mode():
            while len(ids) + len(new) < room and len(new) < 2 * CHUNK:
                out = loaded.model(input_ids=torch.tensor([step_input]), past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[0, -1].float().masked_fill(blocked, float("-inf"))
                allowed = int((~blocked).sum())
                if allowed == 0:
                    break
                top = torch.topk(logits, min(TOP_K, allowed))
                token = int(top.indices[torch.multinomial(torch.softmax(top.values, -1), 1, generator=generator)])
                words = clean(loaded.tokenizer.decode(new + [token]))
                if self.clip_tokens(f"{text}, {words}") > limit:
                    break
                new.append(token)
                if token != loaded.comma:
                    blocked[token] = True
                step_input = [token]
        return clean(loaded.tokenizer.decode(new))

    def clip_tokens(self, text: str) -> int:
        """How many CLIP tokens `text` is, as the prompt encoder counts them (without start and end)."""
        if self._clip is None:
            from pipelines.loading.configs import clip_tokenizer

            self._clip = clip_tokenizer()
        return len(self._clip(text, add_special_tokens=False)["input_ids"])

    def load(self, record: ModelRecord) -> _Loaded:
        with self._lock:
            if self._loaded is None or self._loaded.name != record.name:
                self._loaded = None  # one model at a time: free the previous one first
                self._loaded = _load(record)
            return self._loaded


def clean(text: str) -> str:
    """A continuation as it goes into the prompt: one line, single spaces, no empty items, no edge commas."""
    items = [" ".join(part.split()) for part in text.replace("\n", " ").split(",")]
    return ", ".join(item for item in items if item)


def where_to_get_one(registry: Any) -> str:
    folder = registry.folder(ModelKind.PROMPT_EXPANSION)
    return (
        f"Put a Hugging Face causal-LM folder (a GPT-2 fine-tuned on prompts, e.g. Fooocus's fooocus_expansion with "
        f"its pytorch_model.bin) in {folder}/<name>/ and press Refresh models."
    )


def _load(record: ModelRecord) -> _Loaded:
    """The model in float32 on the CPU, its tokenizer, and the tokens it may never draw."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(record.path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"Prompt expansion {record.name} cannot be loaded: {exc}", field="prompt_expansion") from exc
    model.eval().requires_grad_(False)
    size = model.get_output_embeddings().weight.shape[0]
    pieces = tokenizer.batch_decode([[i] for i in range(min(size, len(tokenizer)))])
    blocked = torch.ones(size, dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    for i, piece in enumerate(pieces):
        blocked[i] = i in special or not piece.strip() or any(ord(ch) < 32 or ord(ch) == 127 or ch == "\ufffd" for ch in piece)
    words = _word_list(path)
    if words is not None:
        vocab = tokenizer.get_vocab()
        listed = {vocab[token] for token in (f"Ġ{w}" for w in words) if token in vocab}
        blocked |= ~torch.isin(torch.arange(size), torch.tensor(sorted(listed) or [-1]))
    comma = tokenizer.convert_tokens_to_ids(",")
    comma = comma if isinstance(comma, int) and 0 <= comma < size else None
    if comma is not None:
        blocked[comma] = False
    return _Loaded(record.name, model, tokenizer, blocked, comma)


def _word_list(folder: Path) -> list[str] | None:
    for name in WORD_LISTS:
        file = folder / name
        if file.is_file():
            return [w.strip().lower() for w in file.read_text(encoding="utf-8").splitlines() if w.strip()]
    return None
