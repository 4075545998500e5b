"""Style presets: the shipped library, application order, and imports of A1111 and Fooocus files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.config import AppConfig
from pipelines.errors import InvalidRequest
from pipelines.prompts.styles import StyleLibrary, join_negatives, merge_template, split_items


@pytest.fixture(scope="module")
def shipped() -> StyleLibrary:
    return StyleLibrary(AppConfig().styles_dir)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ shipped styles


def test_shipped_library_has_over_100_styles_in_many_categories(shipped):
    styles = shipped.all()
    assert len(styles) >= 100 and shipped.problems == []
    assert len({s.name.lower() for s in styles}) == len(styles)
    assert {
        "Photography",
        "Cinematic",
        "Illustration",
        "Anime & Manga",
        "Painting",
        "3D & Render",
        "Graphic Design",
        "Pixel Art & Games",
        "Fantasy",
        "Sci-Fi",
    } <= set(shipped.categories())
    for style in styles:
        assert "{prompt}" in style.prompt, style.name
        assert style.negative_prompt and style.source is not None and style.line


def test_every_shipped_style_wraps_the_prompt(shipped):
    for style in shipped.all():
        prompt, negative = shipped.apply([style.name], "a lighthouse on a cliff", "")
        assert "a lighthouse on a cliff" in prompt and "{prompt}" not in prompt
        assert negative == ", ".join(split_items(style.negative_prompt))


def test_search_and_categories(shipped):
    names = [s.name for s in shipped.search("noir")]
    assert "Cinematic - Film Noir" in names and "Illustration - Graphic Novel Noir" in names
    in_category = [s.name for s in shipped.search("noir", category="cinematic")]
    assert in_category == ["Cinematic - Film Noir", "Cinematic - Neo-Noir Neon"]
    assert all(s.category == "Pixel Art & Games" for s in shipped.search(category="Pixel Art & Games"))
    assert shipped.search("pixel 16-bit")[0].name == "Pixel Art - 16-bit"
    assert len(shipped.search("")) == len(shipped.all())
    assert shipped.search("no such style at all") == []


def test_unknown_style_names_close_matches(shipped):
    with pytest.raises(InvalidRequest) as err:
        shipped.get("Cinematic - Film Nior")
    assert err.value.field == "styles" and "Did you mean: Cinematic - Film Noir" in str(err.value)
    assert shipped.get("cinematic - film noir").name == "Cinematic - Film Noir"  # any case


# ------------------------------------------------------------------------------------ applying


@pytest.fixture
def two_styles(tmp_path) -> StyleLibrary:
    write(
        tmp_path,
        "mine.yaml",
        """
category: Test
styles:
  - name: Round
    prompt: "round({prompt})"
    negative_prompt: "ugly, Text"
  - name: Square
    prompt: "square[{prompt}], (detailed:1.2)"
    negative_prompt: "text, watermark, (bad hands, extra fingers:1.3)"
  - name: Suffix Only
    prompt: "oil on canvas"
  - name: Negative Wrapper
    negative_prompt: "({prompt}:1.2), lowres"
""",
    )
    return StyleLibrary(tmp_path)


def test_styles_apply_in_the_order_chosen(two_styles):
    assert two_styles.apply(["Round", "Square"], "a cat", "")[0] == "square[round(a cat)], (detailed:1.2)"
    assert two_styles.apply(["Square", "Round"], "a cat", "")[0] == "round(square[a cat], (detailed:1.2))"
    assert two_styles.apply([], "a cat", "blurry") == ("a cat", "blurry")


def test_negatives_are_joined_without_duplicates(two_styles):
    _, negative = two_styles.apply(["Round", "Square"], "a cat", "blurry, ugly")
    assert negative == "blurry, ugly, Text, watermark, (bad hands, extra fingers:1.3)"
    _, negative = two_styles.apply(["Square", "Round"], "a cat", "")
    assert negative == "text, watermark, (bad hands, extra fingers:1.3), ugly"


def test_templates_without_placeholder_and_negative_templates(two_styles):
    assert two_styles.apply(["Suffix Only"], "a cat", "")[0] == "a cat, oil on canvas"  # A1111's rule
    assert two_styles.apply(["Negative Wrapper"], "a cat", "blurry")[1] == "(blurry:1.2), lowres"


def test_empty_prompt_leaves_no_dangling_commas():
    assert merge_template("photo of {prompt}, sharp, 85mm", "") == "photo of, sharp, 85mm"
    assert merge_template("{prompt}, moody light", "  ") == "moody light"
    assert join_negatives("", "a, b, A") == "a, b"


# ------------------------------------------------------------------------------------ importing


A1111_CSV = """name,prompt,negative_prompt
Ink Sketch,"ink sketch of {prompt}, loose lines","colour, photo"
Multi Line,"a {prompt}
on two lines",blurry
,"nameless {prompt}",
Appended,"masterpiece, best quality","lowres, (worst quality:1.4)"
"""

FOOOCUS_JSON = [
    {"name": "Neon Dream", "prompt": "neon dream of {prompt}, glowing", "negative_prompt": "dull, flat"},
    {"name": "Quiet Sepia", "prompt": "sepia photo of {prompt}", "negative_prompt": ""},
    {"prompt": "missing a name {prompt}"},
    {"name": "Only Negative", "negative_prompt": "cartoon"},
]


def test_a1111_styles_csv_imports_without_conversion(tmp_path):
    write(tmp_path, "styles.csv", A1111_CSV)
    lib = StyleLibrary(tmp_path)
    assert [s.name for s in lib.all()] == ["Ink Sketch", "Multi Line", "Appended"]
    assert lib.get("Ink Sketch").category == "Styles"
    assert lib.apply(["Multi Line"], "cat", "")[0] == "a cat\non two lines"
    assert lib.apply(["Appended"], "a cat", "text") == ("a cat, masterpiece, best quality", "text, lowres, (worst quality:1.4)")
    assert [str(p) for p in lib.problems] == ["styles.csv:5: row skipped: it has no name"]
    assert lib.get("Appended").line == 6


def test_fooocus_json_imports_without_conversion(tmp_path):
    write(tmp_path, "sdxl_styles_mine.json", json.dumps(FOOOCUS_JSON, indent=4))
    lib = StyleLibrary(tmp_path)
    assert [s.name for s in lib.all()] == ["Neon Dream", "Quiet Sepia", "Only Negative"]
    assert lib.categories() == ["Sdxl Styles Mine"]
    assert lib.apply(["Neon Dream", "Only Negative"], "a fox", "") == ("neon dream of a fox, glowing", "dull, flat, cartoon")
    [problem] = lib.problems
    assert str(problem) == "sdxl_styles_mine.json:12: style 3 skipped: it has no name"


def test_malformed_files_are_reported_by_name_and_line_and_skipped(tmp_path):
    write(tmp_path, "good.yaml", "styles:\n  - name: Good\n    prompt: 'good {prompt}'\n")
    write(tmp_path, "broken.json", '[\n  {"name": "A", "prompt": "x {prompt}"},\n  {"name": "B" "prompt": "y"}\n]\n')
    write(tmp_path, "broken.yaml", "styles:\n  - name: C\n    prompt: [unclosed\n")
    write(tmp_path, "wrong_shape.yaml", "styles: just text\n")
    write(tmp_path, "bad_entry.yaml", "styles:\n  - name: D\n    prompt: 5\n  - name: E\n")
    write(tmp_path, "no_header.csv", "Just,A,Row\n")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00garbage")
    lib = StyleLibrary(tmp_path)
    assert sorted(s.name for s in lib.all()) == ["E", "Good"]
    messages = sorted(str(p) for p in lib.problems)
    assert messages[0] == "bad_entry.yaml:2: style 1 skipped: D: `prompt` must be text"
    assert messages[1].startswith("binary.csv: cannot be read")
    assert messages[2] == "broken.json:3: not valid JSON: Expecting ',' delimiter"
    assert messages[3].startswith("broken.yaml:4: not valid YAML")
    assert messages[4] == "no_header.csv:1: the first line must be a header with name, prompt, negative_prompt"
    assert messages[5] == "wrong_shape.yaml:1: expected a list of styles (or `styles:` with a list)"


def test_later_files_override_and_say_so(tmp_path):
    write(tmp_path, "a.yaml", "styles:\n  - name: Same\n    prompt: 'first {prompt}'\n")
    write(tmp_path, "b.json", json.dumps([{"name": "same", "prompt": "second {prompt}"}]))
    lib = StyleLibrary(tmp_path)
    assert lib.apply(["Same"], "x", "")[0] == "second x"
    assert [str(p) for p in lib.problems] == ["b.json:1: style 'same' replaces the one in a.yaml"]


def test_previews_explicit_and_by_convention(tmp_path):
    (tmp_path / "previews").mkdir()
    (tmp_path / "previews" / "by_name.png").write_bytes(b"png")
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "given.webp").write_bytes(b"webp")
    write(tmp_path, "s.yaml", "styles:\n  - name: By Name\n  - name: Given\n    preview: art/given.webp\n  - name: None\n")
    lib = StyleLibrary(tmp_path)
    assert lib.get("By Name").preview == tmp_path / "previews" / "by_name.png"
    assert lib.get("Given").preview == (tmp_path / "art" / "given.webp").resolve()
    assert lib.get("None").preview is None


def test_reload_picks_up_new_files_and_missing_folder_is_empty(tmp_path):
    lib = StyleLibrary(tmp_path / "styles")
    assert lib.all() == [] and lib.problems == []
    (tmp_path / "styles").mkdir()
    write(tmp_path / "styles", "new.yaml", "category: New\nstyles:\n  - name: Fresh\n")
    lib.reload()
    assert lib.names() == ["Fresh"] and lib.categories() == ["New"]
