"""A1111's prompt editing read as A1111 reads it: which prompt each denoising step sees."""

from __future__ import annotations

import pytest

from pipelines.prompts.editing import is_scheduled, joint_schedule, prompt_schedule, text_for_step


@pytest.mark.parametrize(
    "prompt,steps,expected",
    [
        # [from:to:when]: an integer is a step, a number with a dot a fraction of the steps
        ("a [cat:dog:10] on grass", 20, [(10, "a cat on grass"), (20, "a dog on grass")]),
        ("a [cat:dog:0.25] on grass", 20, [(5, "a cat on grass"), (20, "a dog on grass")]),
        ("[cat:dog: 0.5 ]", 20, [(10, "cat"), (20, "dog")]),
        ("[cat:dog:1]", 20, [(1, "cat"), (20, "dog")]),  # step 1, not the whole run
        ("[cat:dog:1.0]", 20, [(20, "cat")]),  # the whole run: `to` never comes
        ("[cat:dog:30]", 20, [(20, "cat")]),  # past the end
        ("[cat:dog:0]", 20, [(20, "dog")]),  # from the start
        # [add:when] and [remove::when]
        ("[hat:3] man", 20, [(3, " man"), (20, "hat man")]),
        ("[hat::3] man", 20, [(3, "hat man"), (20, " man")]),
        # weights stay as text for the attention parser, inside and around the edit
        ("(a:1.2) [b:(c:1.3):0.25] ((d))", 20, [(5, "(a:1.2) b ((d))"), (20, "(a:1.2) (c:1.3) ((d))")]),
        ("[a [x:y:2] b:c:4]", 8, [(2, "a x b"), (4, "a y b"), (8, "c")]),  # nested edits
        # alternation: a new option at every step
        ("[fox|owl]", 4, [(1, "fox"), (2, "owl"), (3, "fox"), (4, "owl")]),
        ("[fox|owl|]", 3, [(1, "fox"), (2, "owl"), (3, "")]),
        # no editing: A1111 emphasis, escapes, stray brackets, what its grammar cannot read
        ("[word] (x) <lora:style:0.8>", 20, [(20, "[word] (x) <lora:style:0.8>")]),
        (r"\[a:b:2\]", 20, [(20, r"\[a:b:2\]")]),
        ("[a:b:c:0.5]", 20, [(20, "[a:b:c:0.5]")]),
        ("a | b [x:y:2]", 20, [(20, "a | b [x:y:2]")]),  # "|" outside brackets: A1111 uses it whole
        ("unbalanced [x:y:2", 20, [(20, "unbalanced [x:y:2")]),
        ("x ] [y:z:2]", 4, [(2, "x ] y"), (4, "x ] z")]),  # a stray closer is text
    ],
)
def test_schedules_as_a1111_reads_them(prompt, steps, expected):
    assert prompt_schedule(prompt, steps) == expected


def test_step_counting_follows_a1111s_sampler():
    """Step s (from 0) uses the first entry lasting to s or later: [a:b:2] of 4 steps is a, a, a, b."""
    schedule = prompt_schedule("[a:b:2]", 4)
    assert [text_for_step(schedule, s) for s in range(4)] == ["a", "a", "a", "b"]
    assert [text_for_step(prompt_schedule("[a|b]", 4), s) for s in range(4)] == ["a", "a", "b", "a"]


def test_prompt_and_negative_share_one_timeline():
    assert joint_schedule("a [x:y:5]", "[n:m:10]", 20) == [(5, "a x", "n"), (10, "a y", "n"), (20, "a y", "m")]
    # entries whose prompts do not change are one entry
    assert joint_schedule("[a|a]", "n", 4) == [(4, "a", "n")]
    assert not is_scheduled("plain (weighted:1.2) [down]", "neg")
    assert is_scheduled("plain", "[blurry:sharp:0.5]")


def test_pathological_prompts_do_not_hang_or_crash():
    deep = "[" * 40 + "x" + "]" * 40
    assert prompt_schedule(deep, 20) == [(20, deep)]
    very_deep = "(" * 5000 + "x"
    assert prompt_schedule("[a:b:2] " + very_deep, 20) in (
        [(20, "[a:b:2] " + very_deep)],
        [(2, "a " + very_deep), (20, "b " + very_deep)],
    )
    many = "[a:b:1]" * 300
    assert prompt_schedule(many, 20) == [(1, "a" * 300), (20, "b" * 300)]
