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


def engine_modules_imported(path: Path) -> set[str]:
    """The `pipelines...` modules a file imports, at any depth (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "pipelines")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "pipelines":
            found.add(node.module)
    return found


@pytest.mark.parametrize("path", [*sorted((ROOT / "ui").rglob("*.py")), ROOT / "app.py"], ids=lambda p: str(p.relative_to(ROOT)))
def test_the_ui_and_api_use_only_the_engines_public_surface(path):
    """The page, /generate and /sdapi import the engine as `from pipelines import ...`, never its modules."""
    assert engine_modules_imported(path) <= {"pipelines"}


def test_the_public_surface_resolves_and_stays_light():
    import subprocess
    import sys

    import pipelines

    for name in pipelines.__all__:
        assert getattr(pipelines, name) is not None, name
    # importing the package (for APP_NAME, or before argv is parsed) does not import torch
    code = "import sys, pipelines; pipelines.AppConfig; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


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
