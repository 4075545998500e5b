"""The aspect-ratio list of the Setting tab: sizes that suit the loaded model's architecture.

The sizes are data (tables/aspect_ratios.yaml); this module only reads, checks and looks them up, so
that the form code can turn a picked ratio into width/height and an image's size back into a ratio.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipelines import Architecture

TABLE_PATH = Path(__file__).parent / "tables" / "aspect_ratios.yaml"
_RE_SIZE = re.compile(r"^\s*(\d+)\s*[x×*]\s*(\d+)\s*$")


@dataclass(frozen=True)
class Size:
    width: int
    height: int

    @classmethod
    def parse(cls, text: Any) -> Size:
        """ "1152x896" (also "1152*896" as Fooocus writes it, or "1152×896")."""
        match = _RE_SIZE.match(str(text))
        if not match:
            raise ValueError(f"{text!r} is not a size; write it as WIDTHxHEIGHT, e.g. 1024x1024")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def key(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def ratio(self) -> str:
        g = math.gcd(self.width, self.height)
        return f"{self.width // g}:{self.height // g}"

    @property
    def label(self) -> str:
        return f"{self.width}×{self.height}  ∣  {self.ratio}"


class AspectRatios:
    def __init__(self, data: dict[str, Any], source: str = "aspect_ratios.yaml"):
        families = data.get("families") if isinstance(data, dict) else None
        if not isinstance(families, dict) or not families:
            raise ValueError(f"{source}: needs a `families` mapping of family name -> default and sizes")
        self._sizes: dict[str, list[Size]] = {}
        self._defaults: dict[str, Size] = {}
        for name, entry in families.items():
            where = f"{source}: family {name!r}"
            try:
                sizes = [Size.parse(s) for s in entry["sizes"]]
                default = Size.parse(entry["default"])
            except (KeyError, TypeError) as exc:
                raise ValueError(f"{where} needs `default` and a `sizes` list") from exc
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from exc
            bad = [s.key for s in sizes if s.width % 8 or s.height % 8]
            if bad:
                raise ValueError(f"{where}: sizes must be multiples of 8: {', '.join(bad)}")
            if len(set(sizes)) != len(sizes):
                raise ValueError(f"{where}: a size is listed twice")
            if default not in sizes:
                raise ValueError(f"{where}: default {default.key} is not one of its sizes")
            self._sizes[name], self._defaults[name] = sizes, default
        self._families: dict[str, str] = {}
        for arch in Architecture:
            family = (data.get("architectures") or {}).get(arch.value)
            if family not in self._sizes:
                raise ValueError(f"{source}: architecture {arch.value!r} must map to one of {', '.join(self._sizes)}")
            self._families[arch.value] = family

    @classmethod
    def load(cls, path: Path = TABLE_PATH) -> AspectRatios:
        return cls(yaml.safe_load(Path(path).read_text(encoding="utf-8")), source=Path(path).name)

    def family(self, architecture: Architecture | str | None) -> str:
        key = Architecture(architecture).value if architecture else Architecture.UNKNOWN.value
        return self._families[key]

    def sizes(self, architecture: Architecture | str | None) -> list[Size]:
        return list(self._sizes[self.family(architecture)])

    def default(self, architecture: Architecture | str | None) -> Size:
        return self._defaults[self.family(architecture)]

    def choices(self, architecture: Architecture | str | None) -> list[tuple[str, str]]:
        """(label, value) pairs for a radio list: "1152×896  ∣  9:7" -> "1152x896"."""
        return [(s.label, s.key) for s in self.sizes(architecture)]

    def find(self, architecture: Architecture | str | None, width: int, height: int) -> str | None:
        """The list entry for this size, or None when the architecture's list does not have it."""
        size = Size(int(width), int(height))
        return size.key if size in self._sizes[self.family(architecture)] else None

    def pick(self, architecture: Architecture | str | None, wanted: str | None) -> str:
        """`wanted` when the architecture offers it, else the architecture's default (after a model change)."""
        try:
            size = Size.parse(wanted)
        except ValueError:
            return self.default(architecture).key
        return self.find(architecture, size.width, size.height) or self.default(architecture).key
