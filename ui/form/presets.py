"""Named presets (presets/*.yaml): a model, a performance mode, styles, CFG, sampler and size in one pick.

A preset is data: a YAML mapping of form field names to values, plus a `description` and `model`
candidates (the first one installed is used; without any, the current model stays). Every preset is
checked when loaded: its styles against the style library, its performance mode against the engine's
modes, and the request it describes as the engine validates it, so a typo fails at startup naming the
file and the field, not later in the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from pipelines import CONTROL_FIELDS, Architecture, InvalidRequest, ModelKind, validate
from ui.form import modes
from ui.form.fields import FormTables, ModelLookup, Restored, default_form, request_from_form
from ui.form.sizes import Size

BUNDLED_DIR = Path(__file__).resolve().parents[2] / "presets"
DEFAULT_PRESET = "default"
# Form fields a preset may set (besides `description` and `model`).
PRESET_FIELDS = (
    "performance",
    "steps",
    "aspect_ratio",
    "custom_size",
    "width",
    "height",
    "image_count",
    "prompt",
    "negative_prompt",
    "styles",
    "cfg_scale",
    "sampler",
    "scheduler",
    "clip_skip",
    "seed_behavior",
    "output_format",
    *CONTROL_FIELDS,  # Fooocus's sampling controls (the page starts from Fooocus's values without them)
    "prompt_expansion",  # an expansion model's name, or "Fooocus V2" for the first one installed
)
_TEXT_FIELDS = (
    "performance",
    "prompt",
    "negative_prompt",
    "sampler",
    "scheduler",
    "seed_behavior",
    "output_format",
    "refiner_swap",
    "prompt_expansion",
)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    models: tuple[str, ...]  # candidates, tried in order
    values: Mapping[str, Any]  # form field -> value
    path: Path | None = None

    @property
    def styles(self) -> tuple[str, ...]:
        return tuple(self.values.get("styles", ()))


def parse_preset(name: str, data: Any, tables: FormTables, source: str = "") -> Preset:
    """Check one preset's mapping; errors name the source file and the field."""
    where = source or f"preset {name!r}"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a preset is a mapping of field: value")
    unknown = sorted(set(data) - set(PRESET_FIELDS) - {"description", "model"})
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {', '.join(map(str, unknown))}; "
            f"a preset may set description, model, {', '.join(PRESET_FIELDS)}"
        )
    models = data.get("model") or ()
    models = (models,) if isinstance(models, str) else models
    if not isinstance(models, (list, tuple)) or not all(isinstance(m, str) and m for m in models):
        raise ValueError(f"{where}: model must be a name or a list of names")
    values = {k: v for k, v in data.items() if k in PRESET_FIELDS}
    for key in _TEXT_FIELDS:
        if key in values and not isinstance(values[key], str):
            raise ValueError(f"{where}: {key} must be text, got {values[key]!r}")
    styles = values.get("styles", [])
    if not isinstance(styles, list) or not all(isinstance(s, str) for s in styles):
        raise ValueError(f"{where}: styles must be a list of style names")
    if "aspect_ratio" in values:
        try:
            values["aspect_ratio"] = Size.parse(values["aspect_ratio"]).key
        except ValueError as exc:
            raise ValueError(f"{where}: aspect_ratio: {exc}") from None
    if "styles" in values:
        try:  # named as the library spells them
            values["styles"] = [tables.styles.get(style).name for style in styles]
        except InvalidRequest as exc:
            raise ValueError(f"{where}: styles: {exc}") from None
    if "performance" in values:
        mode = modes.canonical(tables.performance, values["performance"])
        if mode is None:
            raise ValueError(
                f"{where}: performance {values['performance']!r} is not one of "
                f"{', '.join([*tables.performance.names(), modes.CUSTOM])}"
            )
        values["performance"] = mode
        for key, value in modes.mode_fields(tables.performance, mode).items():
            if key in values and values[key] != value:
                raise ValueError(
                    f"{where}: {key} {values[key]!r} contradicts performance {mode!r}, which sets "
                    f"{key} {value!r}; leave {key} out or use performance Custom"
                )
    try:  # the request this preset makes must pass the engine's own checks
        form = {**default_form(tables, Architecture.UNKNOWN), **values}
        validate(request_from_form(form, tables), tables.samplers)
    except InvalidRequest as exc:
        raise ValueError(f"{where}: {exc}") from None
    return Preset(name, str(data.get("description") or ""), tuple(models), values, None)


def load_preset(path: Path, tables: FormTables) -> Preset:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot be read as YAML ({exc})") from None
    preset = parse_preset(path.stem, data, tables, source=str(path))
    return Preset(preset.name, preset.description, preset.models, preset.values, path)


class PresetLibrary:
    """Presets by name; folders later in the list override earlier ones with the same name."""

    def __init__(self, presets: Iterable[Preset]):
        self._presets: dict[str, Preset] = {}
        for preset in presets:
            self._presets[preset.name] = preset
        if DEFAULT_PRESET not in self._presets:
            self._presets[DEFAULT_PRESET] = Preset(DEFAULT_PRESET, "Built-in defaults.", (), {})

    @classmethod
    def load(cls, tables: FormTables, folders: Iterable[Path] = (BUNDLED_DIR,)) -> PresetLibrary:
        presets = []
        for folder in folders:
            for path in sorted(Path(folder).glob("*.yaml")):
                presets.append(load_preset(path, tables))
        return cls(presets)

    @property
    def names(self) -> list[str]:
        """The default preset first, then the others by name."""
        return [DEFAULT_PRESET, *sorted(n for n in self._presets if n != DEFAULT_PRESET)]

    def get(self, name: str) -> Preset:
        if name not in self._presets:
            raise KeyError(f"No preset named {name!r}. Available: {', '.join(self.names)}.")
        return self._presets[name]

    def choices(self) -> list[tuple[str, str]]:
        return [(name, name) for name in self.names]


def apply_preset(
    preset: Preset, tables: FormTables, lookup: ModelLookup, current_architecture: Architecture | str | None
) -> Restored:
    """The form values a preset sets, with its model when one of its candidates is installed."""
    values = dict(preset.values)
    notes: list[str] = []
    architecture = current_architecture
    for candidate in preset.models:
        found = lookup(candidate, ModelKind.CHECKPOINT)
        if found is not None:
            values["model"], architecture = found
            break
    else:
        if preset.models:
            notes.append(
                f"Preset {preset.name!r}: its model ({', '.join(preset.models)}) is not installed; the current model is kept."
            )
    if "aspect_ratio" in values:
        values["aspect_ratio"] = tables.sizes.pick(architecture, values["aspect_ratio"])
    if "performance" in values:
        values.update(modes.mode_fields(tables.performance, values["performance"]))
    if "styles" in values:
        values["styles"] = list(values["styles"])
    if values.get("prompt_expansion"):  # used when installed; without one the prompt goes as typed
        found = lookup(str(values["prompt_expansion"]), ModelKind.PROMPT_EXPANSION)
        values["prompt_expansion"] = found[0] if found else ""
    return Restored(values, notes, f"preset {preset.name}")
