"""Wildcards and {a|b} variants: a seed always makes the same choices, in any process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.config import AppConfig
from pipelines.errors import InvalidRequest
from pipelines.prompts.wildcards import Wildcards

COLORS = ["red", "green", "blue", "amber"]


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "colors.txt").write_text("# a comment\n" + "\n".join(COLORS) + "\n\n", encoding="utf-8")
    (tmp_path / "creatures" / "sea").mkdir(parents=True)
    (tmp_path / "creatures" / "sea" / "fish.txt").write_text("cod\ntuna\n", encoding="utf-8")
    (tmp_path / "creatures" / "birds.txt").write_text("owl\n__colors__ parrot\n", encoding="utf-8")
    (tmp_path / "broken.txt").write_text("a __nothing_here__ b\n", encoding="utf-8")
    return tmp_path


def test_same_seed_same_choice_and_seeds_vary(folder):
    wildcards = Wildcards(folder)
    template = "a __colors__ {cat|dog|fox} in __creatures/sea/fish__ country"
    first = [wildcards.expand(template, seed) for seed in range(30)]
    assert first == [wildcards.expand(template, seed) for seed in range(30)]
    assert len(set(first)) > 5
    for text in first:
        color, animal = text.split()[1:3]
        assert color in COLORS and animal in ("cat", "dog", "fox")
    assert {t.split()[1] for t in first} == set(COLORS)  # every line gets picked, comments never


def test_a_seed_reproduces_the_choice_in_another_process(folder):
    template = "a __colors__ {cat|dog|fox}, __creatures/*__"
    here = [Wildcards(folder).expand(template, seed) for seed in (0, 1, 2**40 + 3)]
    code = (
        "import sys; from pathlib import Path; from pipelines.prompts.wildcards import Wildcards; "
        f"print('\\n'.join(Wildcards(Path(sys.argv[1])).expand({template!r}, s) for s in (0, 1, 2**40 + 3)))"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder)],
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert out.stdout.splitlines() == here


def test_nested_folders_globs_and_wildcards_inside_wildcards(folder):
    wildcards = Wildcards(folder)
    assert wildcards.names() == ["broken", "colors", "creatures/birds", "creatures/sea/fish"]
    seen = {wildcards.expand("__creatures/*__", seed) for seed in range(40)}
    assert {"cod", "tuna", "owl"} <= seen
    assert all(s.split()[0] in COLORS for s in seen if s.endswith("parrot"))  # the inner wildcard was expanded
    assert {wildcards.expand("{a|{b|c}}", seed) for seed in range(40)} == {"a", "b", "c"}


def test_plain_text_passes_through_untouched(folder):
    wildcards = Wildcards(folder)
    for text in [r"a \(cat\) [dog] (x:1.2), BREAK", "weird __ text a_b", "cat++ (dog)1.2", "<lora:x:0.5> fox", ""]:
        assert wildcards.expand(text, 1) == text


def test_missing_wildcards_are_named_with_close_matches(folder):
    with pytest.raises(InvalidRequest) as err:
        Wildcards(folder).expand("a __colours__ cat", 1)
    assert "__colours__" in str(err.value) and "Did you mean: __colors__" in str(err.value)
    assert err.value.field == "prompt"
    with pytest.raises(InvalidRequest, match="__nothing_here__"):  # named inside a wildcard file
        Wildcards(folder).expand("__broken__", 1)
    with pytest.raises(InvalidRequest) as err:
        Wildcards(folder).check("x __nope__", "negative_prompt")
    assert err.value.field == "negative_prompt"


def test_unreadable_syntax_is_an_error_not_a_crash(folder):
    with pytest.raises(InvalidRequest, match="cannot be read"):
        Wildcards(folder).expand("a {red|green cat", 1)


def test_edited_files_are_read_again(folder):
    wildcards = Wildcards(folder)
    assert wildcards.expand("__creatures/sea/fish__", 3) in ("cod", "tuna")
    (folder / "creatures" / "sea" / "fish.txt").write_text("eel\n", encoding="utf-8")
    assert wildcards.expand("__creatures/sea/fish__", 3) == "eel"


def test_shipped_samples(tmp_path):
    wildcards = Wildcards(AppConfig().wildcards_dir)
    assert {"colors", "animals", "lighting", "places/cities", "places/landscapes"} <= set(wildcards.names())
    text = wildcards.expand("a __colors__ __animals__ in __places/*__, __lighting__", 42)
    assert "__" not in text and "{" not in text
