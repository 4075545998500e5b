"""A1111 sampler and schedule-type names mapped to diffusers schedulers, driven by tables/samplers.yaml."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import yaml

from pipelines.errors import InvalidRequest

TABLE_PATH = Path(__file__).parent / "tables" / "samplers.yaml"


@dataclass(frozen=True)
class SamplerChoice:
    sampler: str
    schedule: str
    note: str = ""  # set when the schedule asked for does not apply to the sampler and Automatic was used


class SamplerTable:
    def __init__(self, data: dict[str, Any]):
        self._samplers: dict[str, dict[str, Any]] = data["samplers"]
        self._schedules: dict[str, dict[str, Any]] = data["schedulers"]
        self._sampler_aliases: dict[str, Any] = data.get("sampler_aliases", {})
        self._schedule_aliases: dict[str, str] = data.get("scheduler_aliases", {})
        for name, entry in self._samplers.items():
            if not hasattr(diffusers, entry["class"]):
                raise ValueError(f"samplers.yaml: {name!r} names unknown diffusers class {entry['class']!r}")

    @classmethod
    def load(cls, path: Path = TABLE_PATH) -> SamplerTable:
        return cls(yaml.safe_load(path.read_text(encoding="utf-8")))

    @property
    def samplers(self) -> list[str]:
        return list(self._samplers)

    @property
    def schedules(self) -> list[str]:
        return list(self._schedules)

    def sampler_aliases(self, sampler: str) -> list[str]:
        """Other names that mean exactly this sampler (no schedule attached), as other tools send them."""
        return [alias for alias, target in self._sampler_aliases.items() if target == sampler]

    def schedule_aliases(self, schedule: str) -> list[str]:
        return [alias for alias, target in self._schedule_aliases.items() if target == schedule]

    def scheduler_class(self, sampler: str) -> type:
        return getattr(diffusers, self._samplers[sampler]["class"])

    def supported_schedules(self, sampler: str) -> list[str]:
        accepted = _init_params(self.scheduler_class(sampler))
        return [name for name, overlay in self._schedules.items() if set(overlay) <= accepted]

    def resolve(self, sampler: str, schedule: str | None) -> SamplerChoice:
        """Normalize names (aliases, case) and check the pair; unknown names are an error."""
        sampler_name, implied = self._find_sampler(sampler)
        schedule_name = self._find_schedule(schedule or implied or "Automatic")
        if schedule and implied and schedule_name == "Automatic":
            schedule_name = implied
        if schedule_name not in self.supported_schedules(sampler_name):
            return SamplerChoice(
                sampler_name,
                "Automatic",
                f"{sampler_name} has no {schedule_name} schedule here; used its default schedule.",
            )
        return SamplerChoice(sampler_name, schedule_name)

    def make(self, base_config: Any, choice: SamplerChoice, seed: int | None = None, extra: dict[str, Any] | None = None):
        """A fresh scheduler for one image, built on the checkpoint's own scheduler config."""
        cls = self.scheduler_class(choice.sampler)
        overrides = dict(self._samplers[choice.sampler].get("config", {}))
        overrides.update(self._schedules[choice.schedule])
        overrides.update(extra or {})
        accepted = _init_params(cls)
        if seed is not None and "noise_sampler_seed" in accepted:
            overrides["noise_sampler_seed"] = seed  # DPM++ SDE's Brownian tree: seeded, so seeds reproduce
        return cls.from_config(base_config, **{k: v for k, v in overrides.items() if k in accepted})

    def count_steps(self, base_config: Any, choice: SamplerChoice, steps: int) -> int:
        """How many denoising steps (step-callback calls) a sampler makes for `steps`: second-order
        samplers (Heun, DPM2, DPM++ SDE) evaluate twice per step, so progress must count 2n-1."""
        scheduler = self.make(base_config, choice)
        scheduler.set_timesteps(steps, device="cpu")
        return len(scheduler.timesteps)

    def _find_sampler(self, name: str) -> tuple[str, str | None]:
        if name in self._samplers:
            return name, None
        alias = _lookup(self._sampler_aliases, name)
        if alias is not None:
            if isinstance(alias, list):
                return alias[0], alias[1]
            return alias, None
        for known in self._samplers:
            if known.lower() == name.strip().lower():
                return known, None
        raise InvalidRequest(f"Unknown sampler {name!r}. Known samplers: {', '.join(self._samplers)}.", field="sampler")

    def _find_schedule(self, name: str) -> str:
        if name in self._schedules:
            return name
        alias = _lookup(self._schedule_aliases, name)
        if alias is not None:
            return alias
        for known in self._schedules:
            if known.lower() == name.strip().lower():
                return known
        raise InvalidRequest(f"Unknown schedule type {name!r}. Known: {', '.join(self._schedules)}.", field="scheduler")


def _lookup(table: dict[str, Any], name: str) -> Any:
    if name in table:
        return table[name]
    lowered = {k.lower(): v for k, v in table.items()}
    return lowered.get(name.strip().lower())


@functools.lru_cache(maxsize=None)
def _init_params(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.__init__).parameters) - {"self"}
