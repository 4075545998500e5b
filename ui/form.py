"""Named form values <-> GenerationRequest. Components are looked up by name, never by position."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from pipelines.types import GenerationRequest

# Form field name -> GenerationRequest field name (identical unless the UI needs a different shape).
REQUEST_FIELDS = {f.name for f in dataclasses.fields(GenerationRequest)}


def request_from_form(values: Mapping[str, Any], defaults: GenerationRequest | None = None) -> GenerationRequest:
    """Build a request from the form's named values; blank numbers fall back to the defaults."""
    base = defaults or GenerationRequest()
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name not in REQUEST_FIELDS or value is None:
            continue
        current = getattr(base, name)
        if isinstance(current, bool):
            changes[name] = bool(value)
        elif isinstance(current, int) and not isinstance(current, bool):
            changes[name] = int(value)
        elif isinstance(current, float):
            changes[name] = float(value)
        elif isinstance(current, tuple):
            changes[name] = tuple(value)
        else:
            changes[name] = value
    if changes.get("model") == "":
        changes["model"] = None
    return base.replace(**changes)


def form_from_request(request: GenerationRequest) -> dict[str, Any]:
    """The inverse: named values to put back into the form (used by history restore)."""
    values = request.to_dict()
    values["styles"] = list(request.styles)
    return values
