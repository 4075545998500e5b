"""Style presets: data files in styles/, applied in the order chosen, each wrapping the previous result.

Three file formats are read from the styles folder (and its sub-folders), so styles from other apps
work by dropping the file in:

- our YAML: `category:` plus a `styles:` list of {name, prompt, negative_prompt, preview, category};
- Fooocus JSON: a list of {name, prompt, negative_prompt};
- A1111 `styles.csv`: columns name, prompt, negative_prompt (others are ignored).

A style's prompt is a template where `{prompt}` stands for the text it wraps; a template without it is
appended after a comma, as A1111 does. A file that cannot be parsed is reported by name and line and
skipped; a bad entry is reported and skipped; everything else still loads. When two files define the
same name, the later file (in path order) wins and the override is reported.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from pipelines.errors import InvalidRequest

PLACEHOLDER = "{prompt}"
STYLE_SUFFIXES = (".yaml", ".yml", ".json", ".csv")
PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
PREVIEW_FOLDER = "previews"  # <styles>/previews/<slug>.png is found without a `preview:` entry


@dataclass(frozen=True)
class Style:
    name: str
    category: str
    prompt: str = PLACEHOLDER  # template; {prompt} is replaced by the text being styled
    negative_prompt: str = ""
    preview: Path | None = None
    source: Path | None = None  # the file it came from
    line: int | None = None

    def wrap(self, prompt: str) -> str:
        return merge_template(self.prompt, prompt)


@dataclass(frozen=True)
class StyleProblem:
    """Something wrong in a style file; `str()` is the message shown to the user."""

    file: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file.name}:{self.line}" if self.line else self.file.name
        return f"{where}: {self.message}"


def merge_template(template: str, prompt: str) -> str:
    """Put `prompt` into a style template; without {prompt} the style is appended after a comma."""
    if PLACEHOLDER not in template:
        return ", ".join(part for part in (prompt.strip(), template.strip()) if part)
    result = template.replace(PLACEHOLDER, prompt.strip())
    return _tidy(result) if not prompt.strip() else result


def _tidy(text: str) -> str:
    """Remove the empty list items an empty prompt leaves in a template ("a , , b" -> "a, b")."""
    text = re.sub(r"\s*,(\s*,)*", ",", text)
    return re.sub(r"\s{2,}", " ", text).strip(" ,")


def split_items(text: str) -> list[str]:
    """Comma-separated items at bracket depth 0, so `(a, b:1.2)` stays one item."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}" and depth:
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def join_negatives(first: str, second: str) -> str:
    """`first`, then the items of `second` it does not have yet (compared ignoring case and spacing)."""
    seen = {_key(item) for item in split_items(first)}
    extra = []
    for item in split_items(second):
        if _key(item) not in seen:
            seen.add(_key(item))
            extra.append(item)
    return ", ".join(part for part in [first.strip(), *extra] if part)


def _key(item: str) -> str:
    return " ".join(item.lower().split())


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


class StyleLibrary:
    """All styles found in some folders; `reload()` re-reads them (the UI's Refresh)."""

    def __init__(self, folders: Sequence[Path] | Path):
        self.folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
        self._lock = threading.Lock()
        self._styles: dict[str, Style] = {}
        self.problems: list[StyleProblem] = []
        self.reload()

    def reload(self) -> None:
        styles: dict[str, Style] = {}
        problems: list[StyleProblem] = []
        for path in self.files():
            loaded, file_problems = read_style_file(path)
            problems += file_problems
            for style in loaded:
                key = style.name.lower()
                if key in styles:
                    earlier = styles[key].source
                    why = f"replaces the one in {earlier.name}" if earlier != path else "is defined twice; the later one is used"
                    problems.append(StyleProblem(path, style.line, f"style {style.name!r} {why}"))
                styles.pop(key, None)
                styles[key] = style
        with self._lock:
            self._styles, self.problems = styles, problems

    def files(self) -> list[Path]:
        found: list[Path] = []
        for folder in self.folders:
            if folder.is_dir():
                found += sorted(
                    p
                    for p in folder.rglob("*")
                    if p.suffix.lower() in STYLE_SUFFIXES
                    and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                )
        return found

    # -- queries -----------------------------------------------------------------------------------

    def all(self) -> list[Style]:
        with self._lock:
            return list(self._styles.values())

    def names(self) -> list[str]:
        return [s.name for s in self.all()]

    def categories(self) -> list[str]:
        """Categories in the order their first style was found."""
        return list(dict.fromkeys(s.category for s in self.all()))

    def get(self, name: str) -> Style:
        if not isinstance(name, str):
            raise InvalidRequest(f"Style names must be text, got {name!r}.", field="styles")
        with self._lock:
            style = self._styles.get(name.strip().lower())
        if style is None:
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise InvalidRequest(f"No style named {name!r}.{hint}", field="styles")
        return style

    def search(self, text: str = "", category: str | None = None) -> list[Style]:
        """Styles whose name or category holds every word of `text`, optionally in one category."""
        words = text.lower().split()
        wanted = category.lower() if category else None
        return [
            s
            for s in self.all()
            if (wanted is None or s.category.lower() == wanted) and all(w in f"{s.name} {s.category}".lower() for w in words)
        ]

    def apply(self, names: Iterable[str], prompt: str, negative: str) -> tuple[str, str]:
        """Apply styles in order: each wraps the previous result; negatives are joined without duplicates."""
        for style in [self.get(n) for n in names]:
            prompt = style.wrap(prompt)
            if PLACEHOLDER in style.negative_prompt:
                negative = merge_template(style.negative_prompt, negative)
            else:
                negative = join_negatives(negative, style.negative_prompt)
        return prompt, negative


# ------------------------------------------------------------------------------------------- reading


def read_style_file(path: Path) -> tuple[list[Style], list[StyleProblem]]:
    """Styles in one file and what was wrong with it; never raises for bad content."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [StyleProblem(path, None, f"cannot be read: {exc}")]
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, text)
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        return [], [StyleProblem(path, exc.lineno, f"not valid JSON: {exc.msg}")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        return [], [StyleProblem(path, mark.line + 1 if mark else None, f"not valid YAML: {reason}")]
    return _read_entries(path, data, _entry_lines(text))


def _default_category(path: Path) -> str:
    return path.stem.replace("_", " ").replace("-", " ").strip().title() or "Styles"


def _read_entries(path: Path, data: Any, lines: list[int | None]) -> tuple[list[Style], list[StyleProblem]]:
    category = _default_category(path)
    if isinstance(data, dict):
        category = str(data.get("category") or category)
        entries = data.get("styles")
    else:
        entries = data
    if data is None:
        return [], []
    if not isinstance(entries, list):
        return [], [StyleProblem(path, 1, "expected a list of styles (or `styles:` with a list)")]
    styles, problems = [], []
    for index, entry in enumerate(entries):
        line = lines[index] if index < len(lines) else None
        try:
            styles.append(_style_from(entry, category, path, line))
        except ValueError as exc:
            problems.append(StyleProblem(path, line, f"style {index + 1} skipped: {exc}"))
    return styles, problems


def _read_csv(path: Path, text: str) -> tuple[list[Style], list[StyleProblem]]:
    """A1111's styles.csv; quoted fields may span lines, so the reader's own line count is used."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "name" not in [f.strip().lower() for f in reader.fieldnames]:
        return [], [StyleProblem(path, 1, "the first line must be a header with name, prompt, negative_prompt")]
    styles, problems = [], []
    category = _default_category(path)
    line = 1
    try:
        for row in reader:
            entry = {(k or "").strip().lower(): v for k, v in row.items() if k}
            try:
                styles.append(_style_from(entry, category, path, line + 1))
            except ValueError as exc:
                problems.append(StyleProblem(path, line + 1, f"row skipped: {exc}"))
            line = reader.line_num
    except csv.Error as exc:
        problems.append(StyleProblem(path, reader.line_num, f"not valid CSV: {exc}; the rest of the file is skipped"))
    return styles, problems


def _style_from(entry: Any, category: str, path: Path, line: int | None) -> Style:
    if not isinstance(entry, dict):
        raise ValueError("each style must be a mapping with at least a name")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("it has no name")
    values = {}
    for key in ("prompt", "negative_prompt", "category", "preview"):
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name}: `{key}` must be text")
        values[key] = value or ""
    return Style(
        name=name.strip(),
        category=values["category"].strip() or category,
        prompt=values["prompt"] or PLACEHOLDER,
        negative_prompt=values["negative_prompt"].strip(),
        preview=_preview(path.parent, name.strip(), values["preview"]),
        source=path,
        line=line,
    )


def _preview(folder: Path, name: str, given: str) -> Path | None:
    if given:
        path = (folder / given).resolve()
        return path if path.is_file() else None
    for suffix in PREVIEW_SUFFIXES:
        candidate = folder / PREVIEW_FOLDER / f"{slug(name)}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _entry_lines(text: str) -> list[int | None]:
    """1-based line of each style entry (YAML and JSON alike, via the YAML composer), for messages."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    if isinstance(node, yaml.MappingNode):
        node = next((v for k, v in node.value if getattr(k, "value", None) == "styles"), None)
    if not isinstance(node, yaml.SequenceNode):
        return []
    return [item.start_mark.line + 1 for item in node.value]
