"""Wildcards and variants, through the dynamicprompts library, seeded by the image seed.

`__name__` picks a line of `wildcards/name.txt` (`__folder/name__` for nested folders, `__name*__` for a
glob); `{red|green|blue}` picks one option; both nest. The same seed always makes the same choices, so
an image's seed reproduces its prompt. Text without `{` or `__name__` is never handed to the parser, so
ordinary prompts (A1111 escapes, compel syntax) pass through untouched.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from pipelines.errors import InvalidRequest

_RE_WILDCARD = re.compile(r"__([^\s_][^\s]*?)__")


def has_dynamic_syntax(text: str) -> bool:
    return "{" in text or bool(_RE_WILDCARD.search(text))


class Wildcards:
    """Expands prompt templates with the wildcard files of one folder, re-read on every job."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def names(self) -> list[str]:
        """Every wildcard a prompt can use, as written between the double underscores."""
        return sorted(self._manager().get_collection_names())

    def expand(self, text: str, seed: int, what: str = "prompt") -> str:
        """The template with every wildcard and variant chosen by `seed`; raises InvalidRequest if it can't."""
        if not has_dynamic_syntax(text):
            return text
        from dynamicprompts.generators import RandomPromptGenerator
        from pyparsing import ParseException

        manager = self._manager()
        self._check_names(text, manager, what)
        try:
            result = RandomPromptGenerator(wildcard_manager=manager, seed=seed).generate(text, 1)[0]
        except ParseException as exc:
            raise InvalidRequest(
                f"The {what} has {{…|…}} or __wildcard__ syntax that cannot be read: {exc.msg} at character {exc.loc + 1}.",
                field=what,
            ) from exc
        self._check_names(result, manager, what)  # a wildcard file may name one that does not exist
        return result

    def check(self, text: str, what: str = "prompt") -> None:
        """Refuse a template that cannot be expanded (at submit time, before any image is made)."""
        self.expand(text, 0, what)

    def _manager(self):
        from dynamicprompts.wildcards import WildcardManager

        return WildcardManager(self.folder)

    def _check_names(self, text: str, manager, what: str) -> None:
        for name in _RE_WILDCARD.findall(text):
            if not manager.get_values(name):
                known = sorted(manager.get_collection_names())
                close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
                hint = f" Did you mean: {', '.join('__' + c + '__' for c in close)}?" if close else ""
                raise InvalidRequest(
                    f"The {what} uses wildcard __{name}__, but there is no {name}.txt (or it is empty) in {self.folder}.{hint}",
                    field=what,
                )
