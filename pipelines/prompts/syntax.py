"""The prompt language: A1111 attention syntax, compel syntax, BREAK, `<lora:…>` tags and A1111's chunking.

Everything here is plain text and token-id lists, no torch, so the rules can be tested on their own.

Two weighting syntaxes are accepted and told apart by `is_compel_syntax`:
- A1111's, the one in prompts copied from CivitAI: `(word)` ×1.1, `((word))` ×1.21, `[word]` ÷1.1,
  `(word:1.3)`, `\\(` escapes, `BREAK`. `parse_a1111` reads it exactly as A1111's
  `parse_prompt_attention` does, unmatched brackets included, and never raises.
- compel's own (`word++`, `(word)1.2`, `("a", "b").blend(…)`, `.and()`), parsed by compel itself.
A prompt is read as compel syntax only when it has a compel-only construct and no A1111-only one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
CHUNK_TOKENS = 75  # CLIP's 77 positions less the start and end markers
COMMA_BACKTRACK = 20  # A1111's default "comma_padding_backtrack"

# Stands for BREAK in a list of fragment texts. Control characters never reach the tokenizer (the parser
# drops them), so no user text can be mistaken for it.
BREAK_MARK = "\x1eBREAK\x1e"


@dataclass(frozen=True)
class Fragment:
    """A run of prompt text with one weight (1.0 = unweighted)."""

    text: str
    weight: float = 1.0

    @property
    def is_break(self) -> bool:
        return self.text == BREAK_MARK


# A1111's tokens for attention parsing (modules/prompt_parser.py), in the same order of precedence.
_RE_ATTENTION = re.compile(
    r"""
    \\\(|\\\)|\\\[|\\]|\\\\|\\|   # escapes, and a lone backslash
    \(|\[|                         # openers
    :\s*([+-]?[.\d]+)\s*\)|        # ":1.3)" closes a round bracket with an explicit weight
    \)|]|                          # closers
    [^\\()\[\]:]+|                 # plain text
    :
    """,
    re.X,
)
_RE_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_RE_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def parse_a1111(text: str) -> list[Fragment]:
    """A1111 attention syntax -> fragments with weights; BREAK becomes a Fragment(BREAK_MARK).

    Unmatched `(`/`[` weight everything after them, as A1111 does; unmatched `)`/`]` are kept as text;
    a weight that is not a number (`(a:1.2.3)`) is kept as text instead of failing.
    """
    text = _RE_CONTROL.sub(" ", text)
    res: list[list] = []  # [text, weight] pairs, mutated while brackets close
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for item in res[start:]:
            if item[0] is not BREAK_MARK:
                item[1] *= multiplier

    for match in _RE_ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        number = _number(weight) if weight is not None else None
        if token.startswith("\\"):
            res.append([token[1:], 1.0])  # a lone backslash is dropped, as A1111 does
        elif token == "(":
            round_open.append(len(res))
        elif token == "[":
            square_open.append(len(res))
        elif number is not None and round_open:
            multiply_range(round_open.pop(), number)
        elif token == ")" and round_open:
            multiply_range(round_open.pop(), ROUND_MULTIPLIER)
        elif token == "]" and square_open:
            multiply_range(square_open.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_RE_BREAK.split(token)):
                if i > 0:
                    res.append([BREAK_MARK, 1.0])
                res.append([part, 1.0])
    for start in round_open:
        multiply_range(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply_range(start, SQUARE_MULTIPLIER)
    return _merge(res)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _merge(res: list[list]) -> list[Fragment]:
    """Join neighbours of equal weight (so `(a:1.0)` is the same text as `a`), drop empty text."""
    out: list[list] = []
    for text, weight in res:
        if text is BREAK_MARK or not out or out[-1][0] is BREAK_MARK or out[-1][1] != weight:
            out.append([text, weight])
        else:
            out[-1][0] += text
    fragments = [Fragment(t, w) for t, w in out if t]
    return fragments or [Fragment("", 1.0)]


def plain_text(fragments: Sequence[Fragment]) -> str:
    """The words of a parsed prompt without weights or BREAKs (what the pooled SDXL embedding sees)."""
    return " ".join(f.text.strip() for f in fragments if not f.is_break and f.text.strip())


# ---------------------------------------------------------------------------------- telling syntaxes apart

_COMPEL_MARKERS = re.compile(
    r"""
    \)[+-]?(?:\d+\.?\d*|\.\d+)      # (words)1.2
    | \)[+-]+                       # (words)++
    | [\w)][+]+(?=[\s,.;)]|$)       # word+ / word++
    | \w-+(?=[\s,.;)]|$)            # word- / word--
    | \)\s*\.\s*(?:blend|and|swap)\s*\(   # ("a", "b").blend(…)
    """,
    re.X,
)
_A1111_MARKERS = re.compile(r":\s*[+-]?[.\d]+\s*\)|\[|\bBREAK\b")


def is_compel_syntax(text: str) -> bool:
    """True when the prompt uses compel's own weighting and none of A1111's (see the module docstring)."""
    unescaped = re.sub(r"\\.", " ", text)
    return bool(_COMPEL_MARKERS.search(unescaped)) and not _A1111_MARKERS.search(unescaped)


# ---------------------------------------------------------------------------------- <lora:…> tags

_RE_LORA_TAG = re.compile(r"<(lora|lyco):([^>]*)>", re.I)
_RE_EXTRA_NETWORK = re.compile(r"\s*<(?:lora|lyco):[^>]*>\s*", re.I)


@dataclass(frozen=True)
class LoraTag:
    name: str
    weight: float
    text: str  # the tag as written, for messages


class PromptSyntaxError(ValueError):
    """A tag that cannot be read; the message names it."""


def find_lora_tags(text: str) -> list[LoraTag]:
    """`<lora:name>`, `<lora:name:0.8>` (and `<lyco:…>`); A1111's extra arguments after the weight are ignored."""
    tags = []
    for match in _RE_LORA_TAG.finditer(text):
        parts = [p.strip() for p in match.group(2).split(":")]
        name = parts[0]
        if not name:
            raise PromptSyntaxError(f"{match.group(0)} names no LoRA; write <lora:name:weight>.")
        weight = 1.0
        if len(parts) > 1 and parts[1] and "=" not in parts[1]:
            number = _number(parts[1])
            if number is None:
                raise PromptSyntaxError(f"{match.group(0)}: the weight {parts[1]!r} is not a number.")
            weight = number
        tags.append(LoraTag(name, weight, match.group(0)))
    return tags


def strip_lora_tags(text: str) -> str:
    """The prompt as the text encoder should see it: tags removed, the text around them joined with a space."""
    return _RE_EXTRA_NETWORK.sub(" ", text).strip()


# ---------------------------------------------------------------------------------- A1111's chunking


def a1111_chunks(
    token_ids: Sequence[Sequence[int]],
    weights: Sequence[float],
    breaks: Sequence[bool],
    comma_id: int,
    embedding_start: Callable[[int], bool] = lambda token: False,
    is_embedding: Callable[[int], bool] = lambda token: False,
    chunk_tokens: int = CHUNK_TOKENS,
    backtrack: int = COMMA_BACKTRACK,
) -> list[tuple[list[int], list[float]]]:
    """Split fragments' tokens into chunks of at most `chunk_tokens`, as A1111's `tokenize_line` does.

    A full chunk is cut after its last comma when that comma is at most `backtrack` tokens back, so
    phrases stay whole; BREAK closes the current chunk (even an empty one); a run of textual-inversion
    vectors (a token where `embedding_start`, then the `is_embedding` ones after it) is never split across
    chunks. Returns (token ids, per-token weights) without start/end markers.
    """
    chunks: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    mults: list[float] = []
    last_comma = -1

    def close() -> None:
        nonlocal ids, mults, last_comma
        chunks.append((ids, mults))
        ids, mults, last_comma = [], [], -1

    for tokens, weight, is_break in zip(token_ids, weights, breaks):
        if is_break:
            close()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == comma_id:
                last_comma = len(ids)
            elif backtrack and len(ids) == chunk_tokens and last_comma != -1 and len(ids) - last_comma <= backtrack:
                cut = last_comma + 1
                moved_ids, moved_mults = ids[cut:], mults[cut:]
                ids, mults = ids[:cut], mults[:cut]
                close()
                ids, mults = moved_ids, moved_mults
            if len(ids) == chunk_tokens:
                close()
            run = _embedding_run(tokens, position, embedding_start, is_embedding)
            if run > 1 and len(ids) + run > chunk_tokens and ids:
                close()  # keep all vectors of one embedding in one chunk
            for token in tokens[position : position + max(run, 1)]:
                if len(ids) == chunk_tokens:
                    close()
                ids.append(token)
                mults.append(weight)
            position += max(run, 1)
    if ids or not chunks:
        close()
    return chunks


def _embedding_run(
    tokens: Sequence[int], start: int, embedding_start: Callable[[int], bool], is_embedding: Callable[[int], bool]
) -> int:
    """How many vectors of one embedding begin at `start` (0 when none does)."""
    if not embedding_start(tokens[start]):
        return 0
    end = start + 1
    while end < len(tokens) and is_embedding(tokens[end]) and not embedding_start(tokens[end]):
        end += 1
    return end - start
