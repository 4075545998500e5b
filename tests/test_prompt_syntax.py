"""The prompt language on its own: A1111 parsing, syntax detection, <lora:…> tags, A1111's chunking.

The expected parses of the first rows are the examples A1111 documents for its own
`parse_prompt_attention`, so these rows pin "reads it as A1111 does" to A1111's word.
"""

from __future__ import annotations

import random

import pytest

from pipelines.prompts.syntax import (
    BREAK_MARK,
    Fragment,
    PromptSyntaxError,
    a1111_chunks,
    find_lora_tags,
    is_compel_syntax,
    parse_a1111,
    plain_text,
    strip_lora_tags,
)


def pairs(text: str) -> list[tuple[str, float]]:
    return [(f.text, f.weight) for f in parse_a1111(text)]


A1111_DOCUMENTED = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    (r"\(literal\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
]

TRICKY = [
    ("((word))", [("word", 1.1 * 1.1)]),
    ("[word]", [("word", 1 / 1.1)]),
    ("[[word]]", [("word", 1 / 1.1 / 1.1)]),
    ("(word:1.3)", [("word", 1.3)]),
    ("(word: 1.3 )", [("word", 1.3)]),
    ("(a phrase, with commas:0.8)", [("a phrase, with commas", 0.8)]),
    ("((a) b:1.5)", [("a", 1.1 * 1.5), (" b", 1.5)]),
    ("(word:1.0) rest", [("word rest", 1.0)]),  # weight 1 merges back into plain text
    ("(word:-0.5)", [("word", -0.5)]),
    (r"\(x\) \[y\] a\\b", [("(x) [y] a\\b", 1.0)]),
    ("a \\ b", [("a  b", 1.0)]),  # a lone backslash is dropped, as A1111 does
    ("unmatched) close] brackets", [("unmatched) close] brackets", 1.0)]),
    ("a:1.2) b", [("a:1.2) b", 1.0)]),  # a weight with no open bracket is text
    ("(word:1.3", [("word:1.3", 1.1)]),  # never closed: the weight is text, the bracket still counts
    ("(a:1.2.3)", [("a:1.2.3)", 1.1)]),  # not a number: text, where A1111 would raise
    ("[a (b] c)", [("a ", 1 / 1.1), ("b", 1.1 / 1.1), (" c", 1.1)]),  # crossed brackets close in order
    ("a BREAK b", [("a", 1.0), (BREAK_MARK, 1.0), ("b", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), (BREAK_MARK, 1.0), ("b", 1.1)]),  # BREAK stays a BREAK inside brackets
    ("BREAKfast at noon", [("BREAKfast at noon", 1.0)]),
    ("", [("", 1.0)]),
    ("(", [("", 1.0)]),
    ("()", [("", 1.0)]),
    ("((((((((", [("", 1.0)]),
    (")))][[[", [(")))]", 1.0)]),
    ("a\x1e\x00b", [("a  b", 1.0)]),  # control characters never reach the tokenizer
]


@pytest.mark.parametrize("text,expected", A1111_DOCUMENTED + TRICKY)
def test_parse_a1111(text, expected):
    got = pairs(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_documented_weights_are_bit_identical_to_a1111():
    # A1111 multiplies in this order; the floats its users see in infotexts come out the same
    assert pairs("a (((house:1.3)) [on]")[1] == ("house", 1.5730000000000004)


def test_random_bracket_soup_never_raises():
    rng = random.Random(0)
    alphabet = ["(", ")", "[", "]", ":", "1.5", "\\", "BREAK", " ", "word", ",", ":0.3)", "<lora:x:1>"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        fragments = parse_a1111(text)
        assert fragments and all(isinstance(f, Fragment) for f in fragments)


def test_plain_text_drops_weights_and_breaks():
    assert plain_text(parse_a1111("a (red:1.3) [fox] BREAK in snow")) == "a red fox in snow"


@pytest.mark.parametrize(
    "text,compel",
    [
        ("a cat++ on a mat", True),
        ("a cat-- on a mat", True),
        ("(a red cat)1.3, dog", True),
        ("(a red cat)-", True),
        ('("a cat", "a dog").blend(0.7, 0.3)', True),
        ('("a cat", "a dog").and()', True),
        ("a (cat:1.3)", False),
        ("a (cat) [dog]", False),  # plain brackets: A1111, the syntax found in the wild
        ("a cat++ and (dog:1.2)", False),  # mixed: A1111's explicit weights win
        ("a cat++ BREAK a dog", False),
        ("sci-fi close-up of a well-lit t-rex", False),
        ("photo --ar 16:9", False),
        (r"a \(cat\)1.2", False),  # escaped: literal text, not a compel weight
        ("masterpiece, best quality, 1girl", False),
        ("", False),
    ],
)
def test_telling_compel_from_a1111(text, compel):
    assert is_compel_syntax(text) is compel


def test_lora_tags():
    text = "a cat <lora:add_detail:0.6>, <LORA:styles/ink> <lyco:foo:1.2:0.5> <lora:bar:0.8:lbw=OUTD>"
    tags = find_lora_tags(text)
    assert [(t.name, t.weight) for t in tags] == [("add_detail", 0.6), ("styles/ink", 1.0), ("foo", 1.2), ("bar", 0.8)]
    assert strip_lora_tags(text) == "a cat ,"
    assert strip_lora_tags("<lora:a:1>a cat<lora:b:1>on a mat") == "a cat on a mat"
    with pytest.raises(PromptSyntaxError, match="<lora:x:lots>"):
        find_lora_tags("<lora:x:lots>")
    with pytest.raises(PromptSyntaxError, match="names no LoRA"):
        find_lora_tags("<lora::1>")


# ------------------------------------------------------------------------------------ A1111 chunking

COMMA = 267


def chunk(fragments: list[list[int]], weights=None, breaks=None, **kw):
    weights = weights or [1.0] * len(fragments)
    breaks = breaks or [False] * len(fragments)
    return a1111_chunks(fragments, weights, breaks, COMMA, **kw)


def test_short_prompt_is_one_chunk_and_empty_is_one_empty_chunk():
    assert chunk([[1, 2, 3]]) == [([1, 2, 3], [1.0] * 3)]
    assert chunk([[]]) == [([], [])]


def test_long_prompt_without_commas_is_cut_at_75():
    chunks = chunk([list(range(100, 260))])
    assert [len(ids) for ids, _ in chunks] == [75, 75, 10]
    assert sum((ids for ids, _ in chunks), []) == list(range(100, 260))  # nothing lost


def test_full_chunk_is_cut_after_a_nearby_comma():
    # 7-token phrases ending in a comma: 10 phrases fill 70 tokens, the 11th would straddle the edge
    phrase = [11, 12, 13, 14, 15, 16, COMMA]
    chunks = chunk([phrase * 12])
    assert [len(ids) for ids, _ in chunks] == [70, 14]
    assert chunks[0][0][-1] == COMMA and chunks[1][0] == phrase * 2


def test_comma_further_back_than_20_tokens_is_ignored():
    tokens = [5] * 40 + [COMMA] + [6] * 50
    chunks = chunk([tokens])
    assert [len(ids) for ids, _ in chunks] == [75, 16]


def test_break_closes_chunks_as_a1111_does():
    break_at = lambda frags: chunk(frags, breaks=[f == ["B"] for f in frags])  # noqa: E731
    assert [ids for ids, _ in break_at([[1], ["B"], [2]])] == [[1], [2]]
    assert [ids for ids, _ in break_at([["B"], [1]])] == [[], [1]]  # leading BREAK: an empty chunk first
    assert [ids for ids, _ in break_at([[1], ["B"]])] == [[1]]  # trailing BREAK adds nothing
    assert [ids for ids, _ in break_at([[1], ["B"], ["B"], [2]])] == [[1], [], [2]]


def test_weights_follow_their_tokens_across_chunks():
    chunks = chunk([[1] * 70, [2] * 10], weights=[1.0, 1.5])
    assert chunks[0][1] == [1.0] * 70 + [1.5] * 5 and chunks[1][1] == [1.5] * 5


def test_embedding_vectors_are_never_split_across_chunks():
    ti = dict(embedding_start=lambda t: t in (1000, 2000), is_embedding=lambda t: t >= 1000)
    chunks = chunk([[1] * 73 + [1000, 1001, 1002, 1003] + [2]], **ti)
    assert chunks[0][0] == [1] * 73 and chunks[1][0] == [1000, 1001, 1002, 1003, 2]
    # two embeddings side by side are two runs: the first still fits
    chunks = chunk([[1] * 71 + [2000, 2001] + [1000, 1001, 1002]], **ti)
    assert chunks[0][0] == [1] * 71 + [2000, 2001] and chunks[1][0] == [1000, 1001, 1002]
