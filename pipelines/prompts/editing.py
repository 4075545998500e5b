"""A1111's prompt editing: a prompt that changes while the image denoises.

    [from:to:when]   `from` until step `when`, then `to`   (`when` < 1 with a dot: a fraction of the steps)
    [add:when]       nothing until `when`, then `add`
    [remove::when]   `remove` until `when`, then nothing
    [a|b|c]          a different option at every step, in turn

`prompt_schedule` turns such a prompt into the plain prompts it stands for and the last step each one is
used for, as A1111's `get_learned_conditioning_prompt_schedules` does, so a prompt copied from A1111
gives the same steps here. A1111's grammar (its lark rules, read here by a small recursive-descent
parser) keeps weights, `(…)` and `[…]`, as text for the attention parser; a prompt that grammar cannot
read (a `|` outside brackets, say) is used whole at every step, as A1111 uses it.

Plain text only, no torch: the manager encodes each prompt and switches between them during denoising.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+", re.S)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Scheduled:
    before: "Node"
    after: "Node"
    when: str  # the number as written: a dot makes it a fraction of the steps


@dataclass(frozen=True)
class Alternate:
    options: tuple["Node", ...]


@dataclass(frozen=True)
class Group:
    """Text kept as written around its parts: `(a:1.2)`, `[a]`, or a sequence of parts."""

    parts: tuple[Union[str, "Scheduled", "Alternate", "Group"], ...]


Node = Union[str, Scheduled, Alternate, Group]


class _Unreadable(Exception):
    pass


class _Parser:
    """A1111's rules (modules/prompt_parser.py):

        start: (prompt | /[][():]/+)*
        prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
        emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
        scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
        alternate: "[" prompt ("|" [prompt])+ "]"

    Where the rules allow two readings, bracket constructs win over stray bracket characters.
    """

    def __init__(self, text: str):
        self.text = text
        self._prompts: dict[int, tuple[Group, int]] = {}  # a `prompt` read at a position; keeps backtracking linear

    def start(self) -> Group:
        parts: list[Node] = []
        pos = 0
        while pos < len(self.text):
            node, end = self.prompt(pos)
            if end > pos:
                parts.append(node)
                pos = end
            elif self.text[pos] in "[]():":
                parts.append(self.text[pos])  # a stray bracket or colon is text
                pos += 1
            else:
                raise _Unreadable(pos)  # "|" outside brackets, a lone trailing backslash
        return Group(tuple(parts))

    def prompt(self, pos: int) -> tuple[Group, int]:
        if pos not in self._prompts:
            self._prompts[pos] = self._read_prompt(pos)
        return self._prompts[pos]

    def _read_prompt(self, pos: int) -> tuple[Group, int]:
        parts: list[Node] = []
        while pos < len(self.text):
            char = self.text[pos]
            if char in "([":
                found = self.bracket(pos)
                if found is None:
                    break
                node, pos = found
                parts.append(node)
                continue
            match = _PLAIN.match(self.text, pos)
            if not match:
                break
            parts.append(match.group(0))
            pos = match.end()
        return Group(tuple(parts)), pos

    def bracket(self, pos: int) -> tuple[Node, int] | None:
        if self.text[pos] == "(":
            return self.emphasized_round(pos)
        return self.scheduled(pos) or self.alternate(pos) or self.emphasized_square(pos)

    def emphasized_round(self, pos: int) -> tuple[Node, int] | None:
        inner, end = self.prompt(pos + 1)
        if self.at(end, ")"):
            return Group(("(", inner, ")")), end + 1
        if self.at(end, ":"):
            weight, end2 = self.prompt(end + 1)
            if self.at(end2, ")"):
                return Group(("(", inner, ":", weight, ")")), end2 + 1
        return None

    def emphasized_square(self, pos: int) -> tuple[Node, int] | None:
        inner, end = self.prompt(pos + 1)
        return (Group(("[", inner, "]")), end + 1) if self.at(end, "]") else None

    def scheduled(self, pos: int) -> tuple[Node, int] | None:
        first, end = self.prompt(pos + 1)
        if not self.at(end, ":"):
            return None
        # [from:to:when]
        second, end2 = self.prompt(end + 1)
        if self.at(end2, ":"):
            found = self.when(end2 + 1)
            if found:
                return Scheduled(first, second, found[0]), found[1]
        # [add:when]
        found = self.when(end + 1)
        if found:
            return Scheduled(Group(()), first, found[0]), found[1]
        return None

    def when(self, pos: int) -> tuple[str, int] | None:
        """`[WHITESPACE] NUMBER [WHITESPACE] "]"` -> (the number as written, the position after "]")."""
        pos = self.skip_space(pos)
        match = _NUMBER.match(self.text, pos)
        if not match:
            return None
        end = self.skip_space(match.end())
        return (match.group(0), end + 1) if self.at(end, "]") else None

    def alternate(self, pos: int) -> tuple[Node, int] | None:
        first, end = self.prompt(pos + 1)
        options = [first]
        while self.at(end, "|"):
            option, end = self.prompt(end + 1)
            options.append(option)
        if len(options) < 2 or not self.at(end, "]"):
            return None
        return Alternate(tuple(options)), end + 1

    def at(self, pos: int, char: str) -> bool:
        return pos < len(self.text) and self.text[pos] == char

    def skip_space(self, pos: int) -> int:
        match = _WHITESPACE.match(self.text, pos)
        return match.end() if match else pos


def _when_step(when: str, steps: int) -> int:
    """A1111's rule: `0.5` is half the steps, `10` is step 10; never past the last step."""
    value = float(when)
    if "." in when:
        value *= steps
    return min(steps, int(value))


def _boundaries(node: Node, steps: int, found: set[int]) -> None:
    if isinstance(node, Scheduled):
        step = _when_step(node.when, steps)
        if step >= 1:
            found.add(step)
        _boundaries(node.before, steps, found)
        _boundaries(node.after, steps, found)
    elif isinstance(node, Alternate):
        found.update(range(1, steps + 1))
        for option in node.options:
            _boundaries(option, steps, found)
    elif isinstance(node, Group):
        for part in node.parts:
            _boundaries(part, steps, found)


def _text_at(node: Node, step: int, steps: int) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, Scheduled):
        return _text_at(node.before if step <= _when_step(node.when, steps) else node.after, step, steps)
    if isinstance(node, Alternate):
        return _text_at(node.options[(step - 1) % len(node.options)], step, steps)
    return "".join(_text_at(part, step, steps) for part in node.parts)


def prompt_schedule(text: str, steps: int) -> list[tuple[int, str]]:
    """[(last step, prompt)], steps counted from 1 and the last entry ending at `steps`.

    Denoising step s (counted from 0, as A1111's sampler counts) uses the first entry whose last step
    is >= s: `[a:b:10]` of 20 steps is `a` for steps 0-10 and `b` for 11-19, as in A1111.
    """
    steps = max(1, int(steps))
    if "[" not in text:
        return [(steps, text)]
    try:
        tree = _Parser(text).start()
    except (_Unreadable, RecursionError):  # RecursionError: brackets nested hundreds deep
        return [(steps, text)]
    found = {steps}
    _boundaries(tree, steps, found)
    return [(step, _text_at(tree, step, steps)) for step in sorted(found)]


def joint_schedule(prompt: str, negative: str, steps: int) -> list[tuple[int, str, str]]:
    """The prompt's and the negative prompt's schedules on one timeline: [(last step, prompt, negative)]."""
    positive, negatives = prompt_schedule(prompt, steps), prompt_schedule(negative, steps)
    ends = sorted({end for end, _ in positive} | {end for end, _ in negatives})
    merged: list[tuple[int, str, str]] = []
    for end in ends:
        entry = (end, text_for_step(positive, end), text_for_step(negatives, end))
        if merged and merged[-1][1:] == entry[1:]:
            merged[-1] = entry  # the same pair of prompts: one longer entry
        else:
            merged.append(entry)
    return merged


def text_for_step(schedule: list[tuple[int, str]], step: int) -> str:
    """The prompt used at denoising step `step` (counted from 0)."""
    return next((text for end, text in schedule if step <= end), schedule[-1][1])


def is_scheduled(prompt: str, negative: str = "", steps: int = 20) -> bool:
    """True when the prompts change during denoising."""
    return len(joint_schedule(prompt, negative, steps)) > 1
