"""Rules of the code base that a reader relies on: layering, documented settings, data tables."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from pipelines.config import AppConfig

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_ENGINE = ("gradio", "fastapi", "starlette", "uvicorn", "ui")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").rglob("*.py")), ids=lambda p: p.name)
def test_the_engine_never_imports_the_ui_or_a_web_framework(path):
    assert not imported_modules(path) & set(FORBIDDEN_IN_ENGINE)


def test_every_setting_is_a_documented_flag():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for field in dataclasses.fields(AppConfig):
        assert field.metadata.get("help"), f"AppConfig.{field.name} has no description"
        flag = "--" + field.name.replace("_", "-")
        assert flag in readme, f"{flag} is not documented in README.md"


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- test-command -->", 1)[1].split("<!-- /test-command -->", 1)[0]
    assert "python -m pytest" in block
    assert "<!-- test-command -->" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
