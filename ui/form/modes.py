"""The page's view of the engine's performance modes (pipelines/performance.py, tables/performance.yaml).

The engine owns the modes: what each one sets and whether it can run with a model (`availability`).
This module only words them for the Setting tab, with "Custom" beside them (the steps, guidance and
sampler set by hand in Advanced), and says which form fields a mode sets, so that editing one of them
by hand switches the form to Custom.
"""

from __future__ import annotations

import html
from typing import Any, Mapping

from pipelines import Architecture, InvalidRequest, PerformanceTable

CUSTOM = "Custom"
MODE_FIELDS = ("steps", "cfg_scale", "sampler", "scheduler", "step_cache", "token_merging", "fast_decode")  # a mode sets
UNAVAILABLE = "unavailable"  # marks a mode's label in the list; page.js disables such choices


def canonical(table: PerformanceTable, name: str | None) -> str | None:
    """The mode's name as the table spells it; CUSTOM for Custom/None/""; None when the table has no such mode."""
    if name in (None, "", CUSTOM):
        return CUSTOM
    try:
        return table.get(str(name)).name
    except InvalidRequest:
        return None


def mode_fields(table: PerformanceTable, name: str | None) -> dict[str, Any]:
    """The form fields a mode sets ({} for Custom); InvalidRequest naming the known modes for an unknown one."""
    if name in (None, "", CUSTOM):
        return {}
    mode = table.get(str(name))
    return {field: getattr(mode, field) for field in MODE_FIELDS if getattr(mode, field) is not None}


def matching(table: PerformanceTable, name: str | None, values: Mapping[str, Any]) -> str:
    """`name` when it is a mode whose fields all agree with `values` (a restored image), else Custom."""
    mode = canonical(table, name)
    if mode in (None, CUSTOM):
        return CUSTOM
    for key, value in mode_fields(table, mode).items():
        if key in values and values[key] != value:
            return CUSTOM
    return mode


def unavailable(table: PerformanceTable, architecture: Architecture | str | None) -> dict[str, str]:
    """{mode: the engine's reason} for every mode that cannot run on a model of this architecture."""
    arch = Architecture(architecture) if architecture else Architecture.UNKNOWN
    reasons = {}
    for name in table.names():
        why = table.availability(name, arch)
        if why:
            reasons[name] = why
    return reasons


def choices(table: PerformanceTable, reasons: Mapping[str, str]) -> list[tuple[str, str]]:
    """(label, value) pairs for the radio list: every mode (those that cannot run marked), then Custom."""
    listed = [(f"{name} ({UNAVAILABLE})" if name in reasons else name, name) for name in table.names()]
    return [*listed, (CUSTOM, CUSTOM)]


def notes_markdown(table: PerformanceTable, selected: str | None, reasons: Mapping[str, str]) -> str:
    """What the picked mode does, and why the marked ones cannot be picked with this model."""
    lines = []
    mode = canonical(table, selected)
    if mode == CUSTOM:
        lines.append("**Custom**: the steps, guidance and sampler set in Advanced.")
    elif mode is not None and table.get(mode).description:
        lines.append(f"**{html.escape(mode)}**: {html.escape(table.get(mode).description)}")
    if reasons:
        lines.append("")
    for name, why in reasons.items():
        lines.append(f"- *{html.escape(name)} is unavailable*: {html.escape(why)}")
    return "\n".join(lines)
