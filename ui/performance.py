"""Performance modes (Speed, Quality, ...): named sets of request fields, read from tables/performance.yaml.

The UI picks a mode; the mode's fields (steps, and whatever else a mode sets) go into the request and
its name is recorded in the image's metadata. "Custom" is the UI's own choice: the steps set by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from pipelines.types import GenerationRequest

TABLE_PATH = Path(__file__).parent / "tables" / "performance.yaml"
CUSTOM = "Custom"
# The request fields a mode may set.
MODE_FIELDS = ("steps", "cfg_scale", "sampler", "scheduler", "clip_skip")
_KIND_NAMES = {int: "a whole number", float: "a number", str: "text"}


class PerformanceTable:
    def __init__(self, data: dict[str, Any], source: str = "performance.yaml"):
        modes = data.get("modes") if isinstance(data, dict) else None
        if not isinstance(modes, dict) or not modes:
            raise ValueError(f"{source}: needs a `modes` mapping of mode name -> request fields")
        self._modes: dict[str, dict[str, Any]] = {}
        for name, fields in modes.items():
            where = f"{source}: mode {name!r}"
            if str(name) == CUSTOM:
                raise ValueError(f"{where}: {CUSTOM!r} is reserved for hand-set steps")
            if not isinstance(fields, dict) or not fields:
                raise ValueError(f"{where} must set at least one of {', '.join(MODE_FIELDS)}")
            unknown = sorted(set(fields) - set(MODE_FIELDS))
            if unknown:
                raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; a mode may set {', '.join(MODE_FIELDS)}")
            typed = {}
            for key, value in fields.items():
                kind = type(getattr(GenerationRequest(), key))
                if isinstance(value, bool) or not isinstance(value, (kind, int) if kind is float else kind):
                    raise ValueError(f"{where}: {key} must be {_KIND_NAMES[kind]}, got {value!r}")
                typed[key] = kind(value)
            self._modes[str(name)] = typed
        self.default = str(data.get("default") or next(iter(self._modes)))
        if self.default not in self._modes:
            raise ValueError(f"{source}: default {self.default!r} is not one of the modes ({', '.join(self._modes)})")

    @classmethod
    def load(cls, path: Path = TABLE_PATH) -> PerformanceTable:
        return cls(yaml.safe_load(Path(path).read_text(encoding="utf-8")), source=Path(path).name)

    @property
    def names(self) -> list[str]:
        return list(self._modes)

    @property
    def choices(self) -> list[str]:
        """What the Setting tab lists: every mode, then Custom."""
        return [*self._modes, CUSTOM]

    def fields(self, name: str | None) -> dict[str, Any]:
        """The request fields a mode sets; {} for Custom (and for None)."""
        if name in (None, "", CUSTOM):
            return {}
        if name not in self._modes:
            raise KeyError(name)
        return dict(self._modes[name])

    def matching(self, name: str | None, values: Mapping[str, Any]) -> str:
        """`name` if it is a mode whose fields all agree with `values` (a restored image), else Custom."""
        if name not in self._modes:
            return CUSTOM
        for key, value in self._modes[name].items():
            if key in values and values[key] != value:
                return CUSTOM
        return name
