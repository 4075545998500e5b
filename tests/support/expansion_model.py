"""A tiny random GPT-2 prompt-expansion folder in the Hugging Face layout, as Fooocus's fooocus_expansion is laid out.

The folder holds what such a folder holds: config.json, model.safetensors (transformers' own writer),
a byte-level BPE tokenizer (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json) and
optionally a word list. GPT-2's real BPE files are not available offline, so the tokenizer is built here
from scratch the way GPT-2's is defined: the 256 byte symbols, then merges that spell each word of a small
vocabulary after "Ġ" (a leading space), then <|endoftext|>.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Words the tiny tokenizer has as single tokens (Easel's own list, for tests).
WORDS = (
    "red", "fox", "cat", "snow", "forest", "detailed", "sharp", "cinematic", "light", "soft", "vivid", "glow",
    "misty", "golden", "dramatic", "calm", "ornate", "rich", "deep", "bright", "warm", "cold", "quiet", "elegant",
    "intricate", "dusk", "dawn", "moody", "clear", "crisp",
)  # fmt: skip
END = "<|endoftext|>"


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (printable bytes as themselves, the rest from U+0100 on)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def write_tiny_expansion(folder: Path, seed: int = 0, words: tuple[str, ...] | None = None) -> Path:
    """Write the folder (random weights from `seed`); `words` (a subset of WORDS) becomes its positive.txt."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {symbol: i for i, symbol in enumerate(byte_symbols())}
    merges = []
    for word in WORDS:
        token = "Ġ"
        for letter in word:
            merges.append(f"{token} {letter}")
            token += letter
            vocab.setdefault(token, len(vocab))
    vocab[END] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n", encoding="utf-8")
    special = {"bos_token": END, "eos_token": END, "unk_token": END}
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    tokenizer_config = {**special, "tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False, "model_max_length": 1024}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=256, n_embd=32, n_layer=2, n_head=2, bos_token_id=vocab[END], eos_token_id=vocab[END]
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(folder)
    if words is not None:
        (folder / "positive.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return folder


TINY_EXPANSION = "tiny-expansion"  # with a word list
FREE_EXPANSION = "free-expansion"  # without one


def add_expansion_models(models_dir: Path) -> Path:
    """models_dir/prompt_expansion/ with both tiny folders (the word-list one has a third of WORDS)."""
    folder = models_dir / "prompt_expansion"
    write_tiny_expansion(folder / TINY_EXPANSION, seed=0, words=WORDS[::3] + ("cinematic", "detailed"))
    write_tiny_expansion(folder / FREE_EXPANSION, seed=1)
    return folder
