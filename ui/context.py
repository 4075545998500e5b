"""What every part of the page needs, built once per app: the services, the form's tables, the presets.

It also answers the page's questions about models (which ones can be picked, what architecture a name
is), always by asking the registry, so a refresh is seen everywhere at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines import (
    FOOOCUS_V2,
    REFINER_ARCHITECTURES,
    Architecture,
    EaselError,
    GenerationRequest,
    InvalidRequest,
    ModelFormat,
    ModelKind,
    ModelRecord,
    Services,
    check_pair,
)
from ui.form import modes
from ui.form.fields import AUTOMATIC_VAE, NO_LORA, NO_REFINER, FormTables, Restored, default_form
from ui.form.presets import DEFAULT_PRESET, PresetLibrary, apply_preset


def describe_record(record: ModelRecord) -> str:
    """One line for the Models tab: architecture, format and size."""
    if record.format is ModelFormat.HUB:
        return f"{record.name}: downloaded from the Hugging Face hub on first use"
    kind = "diffusers folder" if record.format is ModelFormat.DIFFUSERS else "single file"
    size = (
        f", {record.size_bytes / 1024**3:.1f} GB"
        if record.size_bytes >= 1024**3
        else (f", {record.size_bytes / 1024**2:.0f} MB" if record.size_bytes else "")
    )
    inpainting = " inpainting" if record.inpainting else ""
    return f"{record.architecture.label}{inpainting} · {kind}{size}"


def lora_mismatch(record: ModelRecord, architecture: Architecture) -> str | None:
    """Why a LoRA does not suit a model of `architecture` (the engine refuses it), or None when it may."""
    unknown = Architecture.UNKNOWN
    if record.architecture in (unknown, architecture) or architecture is unknown:
        return None
    return f"{record.name} is a LoRA for {record.architecture.label}; the model is {architecture.label}."


@dataclass
class UIContext:
    services: Services
    tables: FormTables
    presets: PresetLibrary
    preset: str  # the preset the app was started with

    @classmethod
    def build(
        cls, services: Services, presets: PresetLibrary | None = None, preset: str = "default", tables: FormTables | None = None
    ) -> UIContext:
        """The context for a page; tables default to the engine's, presets to the bundled ones."""
        tables = tables or FormTables.for_services(services)
        presets = presets or PresetLibrary.load(tables)
        presets.get(preset)  # a bad name fails here, with the list of names
        return cls(services, tables, presets, preset)

    # -- base models --------------------------------------------------------------------------------

    def model_records(self) -> list[ModelRecord]:
        """What the model list offers: usable checkpoints that can start an image (no refiners), else the hub model."""
        records = [
            r for r in self.services.registry.checkpoints() if r.usable and r.architecture is not Architecture.SDXL_REFINER
        ]
        if not records and self.services.config.hub_model:
            records = [self.services.registry.hub_record(self.services.config.hub_model)]
        return records

    def model_choices(self) -> list[tuple[str, str]]:
        return [
            (
                f"{r.name}  ·  {r.architecture.label}"
                if r.format is not ModelFormat.HUB
                else f"{r.name}  ·  download from the hub",
                r.name,
            )
            for r in self.model_records()
        ]

    def record(self, name: str | None) -> ModelRecord | None:
        """The offered model called `name` (None: the engine's current default), or None when there is none."""
        records = self.model_records()
        if not name:
            default = self.services.manager.default_model  # the HTTP API may have switched it
            found = self.lookup(default) if default else None
            name = found[0] if found else None
            return next((r for r in records if r.name == name), records[0] if records else None)
        try:
            wanted = self.services.registry.find(ModelKind.CHECKPOINT, name).name
        except EaselError:
            wanted = name
        return next((r for r in records if r.name == wanted), None)

    def lookup(self, name: str, kind: ModelKind = ModelKind.CHECKPOINT) -> tuple[str, Architecture] | None:
        """(name as listed, architecture) for a model named by a preset or an image; None if not offered.

        Checkpoints are looked up among the base models, or among the refiner candidates when the name is one;
        "Fooocus V2" as a prompt-expansion model means the first one installed."""
        if kind is ModelKind.PROMPT_EXPANSION and name == FOOOCUS_V2:
            records = self.expansion_records()
            return (records[0].name, records[0].architecture) if records else None
        try:
            record = self.services.registry.find(kind, name)
        except EaselError:
            return None
        if not record.usable:
            return None
        if kind is ModelKind.CHECKPOINT:
            offered = {r.name for r in self.model_records()} | {r.name for r in self.refiner_records()}
            if record.name not in offered:
                return None
        return record.name, record.architecture

    def architecture(self, model: str | None) -> Architecture:
        record = self.record(model)
        return record.architecture if record is not None else Architecture.UNKNOWN

    def unusable_models(self) -> list[tuple[str, str]]:
        """(file, reason) for every model file that cannot be used, as the registry explains it."""
        rows = [
            (r.name, r.note)
            for kind in (ModelKind.CHECKPOINT, ModelKind.LORA, ModelKind.VAE, ModelKind.PROMPT_EXPANSION)
            for r in self.services.registry.list(kind)
            if not r.usable
        ]
        rows += [(str(path), why) for path, why in self.services.registry.skipped]
        return rows

    def notice(self) -> str:
        if any(r.usable for r in self.services.registry.checkpoints()):
            return ""
        return self.services.registry.missing_checkpoint_message()

    # -- refiner, LoRAs, VAEs -----------------------------------------------------------------------

    def refiner_records(self) -> list[ModelRecord]:
        """Checkpoints that can refine an SDXL image: SDXL refiners and SDXL models."""
        return [r for r in self.services.registry.checkpoints() if r.usable and r.architecture in REFINER_ARCHITECTURES]

    def refiner_choices(self) -> list[tuple[str, str]]:
        return [(NO_REFINER, NO_REFINER)] + [(f"{r.name}  ·  {r.architecture.label}", r.name) for r in self.refiner_records()]

    def refiner_problem(self, model: str | None) -> str | None:
        """Why no refiner can be used with this base model (the engine's own words), or None when one can."""
        record = self.record(model)
        if record is None:
            return None
        try:
            check_pair(record.name, record.architecture, "", Architecture.SDXL)
        except InvalidRequest as exc:
            return str(exc)
        return None

    def lora_records(self) -> list[ModelRecord]:
        return [r for r in self.services.registry.list(ModelKind.LORA) if r.usable]

    def lora_choices(self, architecture: Architecture) -> list[tuple[str, str]]:
        """ "None", then every LoRA with its architecture; those for another architecture marked."""
        out = [(NO_LORA, NO_LORA)]
        for record in self.lora_records():
            label = f"{record.name}  ·  {record.architecture.label}"
            if lora_mismatch(record, architecture):
                label += f"  ·  not for {architecture.label}"
            out.append((label, record.name))
        return out

    def lora_record(self, name: str | None) -> ModelRecord | None:
        if not name or name == NO_LORA:
            return None
        try:
            return self.services.registry.find(ModelKind.LORA, name)
        except EaselError:
            return None

    def expansion_records(self) -> list[ModelRecord]:
        return [r for r in self.services.registry.list(ModelKind.PROMPT_EXPANSION) if r.usable]

    def vae_choices(self) -> list[tuple[str, str]]:
        records = [r for r in self.services.registry.list(ModelKind.VAE) if r.usable]
        return [("Automatic (the model's own VAE)", AUTOMATIC_VAE)] + [
            (r.name if r.architecture is Architecture.UNKNOWN else f"{r.name}  ·  {r.architecture.label}", r.name)
            for r in records
        ]

    # -- performance modes --------------------------------------------------------------------------

    def mode_reasons(self, model: str | None) -> dict[str, str]:
        """{mode: why it cannot run} for the modes the engine refuses with this model."""
        return modes.unavailable(self.tables.performance, self.architecture(model))

    def fallback_mode(self, reasons: dict[str, str]) -> tuple[str, dict[str, Any]]:
        """The mode a form falls back to when its own cannot run, and the fields it sets: the launch preset's mode,
        else the default preset's, else Custom with the launch preset's steps, guidance and sampler (or the
        request defaults) rather than the settings of a fast mode that do not suit a plain model."""
        defaults = GenerationRequest()
        launch = self.presets.get(self.preset)
        for preset in (launch, self.presets.get(DEFAULT_PRESET)):
            mode = modes.canonical(self.tables.performance, preset.values.get("performance"))
            if mode and mode != modes.CUSTOM and mode not in reasons:
                break
        else:
            mode, preset = modes.CUSTOM, launch
        settings = {name: preset.values.get(name, getattr(defaults, name)) for name in modes.MODE_FIELDS}
        return mode, {**settings, **modes.mode_fields(self.tables.performance, mode)}

    def settle(self, values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The form made consistent with its model: a mode that cannot run and a refiner that cannot be used are
        replaced, each with a note saying why; the fields a mode sets take the mode's values."""
        values, notes = dict(values), []
        record = self.record(values.get("model")) or self.record(None)
        model = record.name if record else None
        mode = modes.canonical(self.tables.performance, values.get("performance")) or modes.CUSTOM
        reasons = self.mode_reasons(model)
        if mode in reasons:
            fallback, settings = self.fallback_mode(reasons)
            notes.append(f"{reasons[mode]} {fallback} is used instead.")
            mode = fallback
            values.update(settings)
        values["performance"] = mode
        values.update(modes.mode_fields(self.tables.performance, mode))
        problem = self.refiner_problem(model)
        if problem and str(values.get("refiner") or NO_REFINER) != NO_REFINER:
            notes.append(f"The refiner is turned off. {problem}")
            values["refiner"] = NO_REFINER
        return values, notes

    # -- form ---------------------------------------------------------------------------------------

    def preset_values(self, name: str, model: str | None) -> Restored:
        """A preset's form values; on a CPU one image at a time (each takes minutes there), whatever it says."""
        restored = apply_preset(self.presets.get(name), self.tables, self.lookup, self.architecture(model))
        if self.services.plan.device.type == "cpu" and "image_count" in restored.values:
            restored.values["image_count"] = 1
        return restored

    def initial_form(self) -> dict[str, Any]:
        """The form a new page starts from: defaults, then the launch preset, with a model that exists."""
        record = self.record(None)
        values = default_form(self.tables, record.architecture if record else Architecture.UNKNOWN)
        values["model"] = record.name if record else None
        values.update(self.preset_values(self.preset, values["model"]).values)
        values["preset"] = self.preset
        return self.settle(values)[0]
