"""What every part of the page needs, built once per app: the services, the form's tables, the presets.

It also answers the page's questions about models (which ones can be picked, what architecture a name
is), always by asking the registry, so a refresh is seen everywhere at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.errors import EaselError
from pipelines.services import Services
from pipelines.types import Architecture, ModelFormat, ModelKind, ModelRecord

from .form import FormTables, Restored, default_form
from .presets import PresetLibrary, apply_preset


def describe_record(record: ModelRecord) -> str:
    """One line for the Models tab: architecture, format and size."""
    if record.format is ModelFormat.HUB:
        return f"{record.name}: downloaded from the Hugging Face hub on first use"
    kind = "diffusers folder" if record.format is ModelFormat.DIFFUSERS else "single file"
    size = f", {record.size_bytes / 1024**3:.1f} GB" if record.size_bytes >= 1024**3 else (
        f", {record.size_bytes / 1024**2:.0f} MB" if record.size_bytes else "")
    return f"{record.architecture.label} · {kind}{size}"


@dataclass
class UIContext:
    services: Services
    tables: FormTables
    presets: PresetLibrary
    preset: str  # the preset the app was started with

    @classmethod
    def build(cls, services: Services, presets: PresetLibrary | None = None, preset: str = "default",
              tables: FormTables | None = None) -> UIContext:
        """The context for a page; tables and presets default to the bundled ones."""
        tables = tables or FormTables.load(services.samplers)
        presets = presets or PresetLibrary.load(tables)
        presets.get(preset)  # a bad name fails here, with the list of names
        return cls(services, tables, presets, preset)

    # -- models -------------------------------------------------------------------------------------

    def model_records(self) -> list[ModelRecord]:
        """What the model list offers: usable checkpoints, or the hub model when there are none."""
        records = [r for r in self.services.registry.checkpoints() if r.usable]
        if not records and self.services.config.hub_model:
            records = [self.services.registry.hub_record(self.services.config.hub_model)]
        return records

    def model_choices(self) -> list[tuple[str, str]]:
        return [(f"{r.name}  ·  {r.architecture.label}" if r.format is not ModelFormat.HUB
                 else f"{r.name}  ·  download from the hub", r.name) for r in self.model_records()]

    def record(self, name: str | None) -> ModelRecord | None:
        """The offered model called `name` (None: the default one), or None when there is none."""
        records = self.model_records()
        if not name:
            default = self.services.config.default_model
            if default:
                found = self.lookup(default)
                name = found[0] if found else None
            return next((r for r in records if r.name == name), records[0] if records else None)
        try:
            wanted = self.services.registry.find(ModelKind.CHECKPOINT, name).name
        except EaselError:
            wanted = name
        return next((r for r in records if r.name == wanted), None)

    def lookup(self, name: str) -> tuple[str, Architecture] | None:
        """(name as listed, architecture) for a model name from a preset or an image; None if not offered."""
        try:
            record = self.services.registry.find(ModelKind.CHECKPOINT, name)
        except EaselError:
            return None
        offered = {r.name for r in self.model_records()}
        return (record.name, record.architecture) if record.name in offered else None

    def architecture(self, model: str | None) -> Architecture:
        record = self.record(model)
        return record.architecture if record is not None else Architecture.UNKNOWN

    def unusable_models(self) -> list[tuple[str, str]]:
        """(file, reason) for every model file that cannot be used, as the registry explains it."""
        rows = [(r.name, r.note) for r in self.services.registry.checkpoints() if not r.usable]
        rows += [(str(path), why) for path, why in self.services.registry.skipped]
        return rows

    def notice(self) -> str:
        if any(r.usable for r in self.services.registry.checkpoints()):
            return ""
        return self.services.registry.missing_checkpoint_message()

    # -- form ---------------------------------------------------------------------------------------

    def preset_values(self, name: str, model: str | None) -> Restored:
        return apply_preset(self.presets.get(name), self.tables, self.lookup, self.architecture(model))

    def initial_form(self) -> dict[str, Any]:
        """The form a new page starts from: defaults, then the launch preset, with a model that exists."""
        record = self.record(None)
        values = default_form(self.tables, record.architecture if record else Architecture.UNKNOWN)
        values["model"] = record.name if record else None
        values.update(self.preset_values(self.preset, values["model"]).values)
        values["preset"] = self.preset
        return values
