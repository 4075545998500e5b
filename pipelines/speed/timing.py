"""How long images take on this machine, measured by the jobs themselves, for the estimate shown before a job.

Each finished image records its seconds per step and the seconds outside the steps (decoding, saving)
under its architecture, size, guidance and step caching; the record survives restarts (a JSON file in the
cache folder). An estimate uses the same key when it was measured, else the closest measurement of the
architecture scaled by pixel count and by the CFG batch: rough, and said to be "about".
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measured:
    step: float  # seconds per step
    extra: float  # seconds per image outside the steps (decode, encode, save)


def key(architecture: str, width: int, height: int, guidance: bool, step_cache: int, token_merging: float = 0.0) -> str:
    merging = f":merge{token_merging:g}" if token_merging > 0 else ""
    return f"{architecture}:{width}x{height}:{'cfg' if guidance else 'nocfg'}:cache{max(step_cache, 1)}{merging}"


class StepTimes:
    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, float]] = self._read()

    def _read(self) -> dict[str, dict[str, float]]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {k: v for k, v in data.items() if isinstance(v, dict) and {"step", "extra"} <= set(v)}
        except (OSError, ValueError):
            return {}

    def record(self, name: str, step: float, extra: float) -> None:
        with self._lock:
            self._data[name] = {"step": round(step, 4), "extra": round(max(0.0, extra), 4)}
            if self.path is None:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile("w", dir=self.path.parent, delete=False, suffix=".tmp") as tmp:
                    json.dump(self._data, tmp, indent=1, sort_keys=True)
                os.replace(tmp.name, self.path)
            except OSError as exc:
                log.warning("could not save step times to %s: %s", self.path, exc)

    def record_image(self, architecture: str, request, started: float | None, last_step: float | None, steps: int) -> None:
        """One finished image: seconds per step (first step's start to the last one's end) and after the steps."""
        if not steps or started is None or last_step is None:
            return
        guidance = request.cfg_scale > 1.0
        name = key(architecture, request.width, request.height, guidance, request.step_cache, request.token_merging)
        self.record(name, (last_step - started) / steps, time.perf_counter() - last_step)

    def measured(self, name: str) -> Measured | None:
        with self._lock:
            entry = self._data.get(name)
        return Measured(entry["step"], entry["extra"]) if entry else None

    def estimate(
        self,
        architecture: str,
        width: int,
        height: int,
        steps: int,
        images: int,
        guidance: bool,
        step_cache: int = 0,
        token_merging: float = 0.0,
    ) -> float | None:
        """Seconds for the job, or None when this architecture was never measured here."""
        exact = self.measured(key(architecture, width, height, guidance, step_cache, token_merging))
        if exact is not None:
            return images * (steps * exact.step + exact.extra)
        with self._lock:
            near = [(k, v) for k, v in self._data.items() if k.startswith(f"{architecture}:")]
        if not near:
            return None
        pixels = width * height

        def distance(item: tuple[str, dict[str, float]]) -> float:
            w, h = item[0].split(":")[1].split("x")
            return abs(int(w) * int(h) - pixels) + (0 if (":cfg:" in item[0]) == guidance else pixels)

        name, entry = min(near, key=distance)
        w, h = name.split(":")[1].split("x")
        scale = pixels / (int(w) * int(h))
        batch = (2.0 if guidance else 1.0) / (2.0 if ":cfg:" in name else 1.0)
        step = entry["step"] * scale * (batch if batch >= 1 else 0.55)  # one image of a batch of 2 costs more than half
        return images * (steps * step + entry["extra"] * scale)
