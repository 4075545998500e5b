"""The form as named values, and its mapping to and from a GenerationRequest. Pure functions, no widgets.

The page reads its widgets into a dict {field name: value} (never by position) and hands it here. Most
names are GenerationRequest fields; a few are the UI's own ways of choosing one:

- performance: a mode from the performance table sets steps (and whatever else the mode sets); "Custom"
  keeps `steps` as set by hand.
- aspect_ratio ("1152x896") gives width/height unless custom_size is on, then width/height are used.
- random_seed: on sends seed -1 (the engine draws one); off sends `seed`.

Going back (history, a dropped image, a preset), `form_from_fields` turns request fields into form
values; it returns only the names it was given, so a partial source leaves the rest of the form as it is.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from pipelines.errors import InvalidRequest
from pipelines.metadata import ImageMetadata
from pipelines.samplers import SamplerTable
from pipelines.types import Architecture, GenerationRequest, ImageParams, SeedBehavior

from .performance import CUSTOM, PerformanceTable
from .sizes import AspectRatios, Size

REQUEST_DEFAULTS = GenerationRequest()
REQUEST_FIELDS = {f.name for f in dataclasses.fields(GenerationRequest)}
UI_FIELDS = ("aspect_ratio", "custom_size", "random_seed")
# Form fields handled by hand below; every other GenerationRequest field maps one to one.
_SPECIAL = {"performance", "steps", "width", "height", "seed", "aspect_ratio", "custom_size", "random_seed"}
# A name -> (architecture, canonical name) lookup, or None when no such model is installed.
ModelLookup = Callable[[str], "tuple[str, Architecture] | None"]


@dataclass(frozen=True)
class FormTables:
    """The data the form needs to translate: sizes per architecture, performance modes, samplers."""

    sizes: AspectRatios
    performance: PerformanceTable
    samplers: SamplerTable

    @classmethod
    def load(cls, samplers: SamplerTable) -> FormTables:
        return cls(AspectRatios.load(), PerformanceTable.load(), samplers)


@dataclass
class Restored:
    """Form values recovered from an image or a history entry, and what could not be restored."""

    values: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    source: str = ""


def _coerce(name: str, value: Any, default: Any) -> Any:
    """A widget's value as the request field's type; None (a blank number box) means "the default"."""
    if value is None:
        return default
    try:
        if isinstance(default, bool):
            return bool(value)
        if isinstance(default, int):
            number = float(value)
            if not math.isfinite(number) or not number.is_integer():
                raise ValueError
            return int(number)
        if isinstance(default, float):
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if isinstance(default, tuple):
            return tuple(value)
        if isinstance(default, SeedBehavior):
            return SeedBehavior(value).value
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"{name}: {value!r} is not a valid value.", field=name) from exc
    return value


def request_from_form(values: Mapping[str, Any], tables: FormTables,
                      defaults: GenerationRequest = REQUEST_DEFAULTS) -> GenerationRequest:
    """Build the request the form describes. Range checks are the engine's (manager.validate)."""
    data = defaults.to_dict()
    for name, value in values.items():
        if name in REQUEST_FIELDS and name not in _SPECIAL:
            data[name] = _coerce(name, value, getattr(defaults, name))
    if data.get("model") == "":
        data["model"] = None
    if "loras" in data:
        data["loras"] = list(data["loras"])

    mode = values.get("performance") or CUSTOM
    try:
        mode_fields = tables.performance.fields(mode)
    except KeyError:
        raise InvalidRequest(
            f"Unknown performance mode {mode!r}; choose one of {', '.join(tables.performance.choices)}.",
            field="performance",
        ) from None
    data["steps"] = _coerce("steps", values.get("steps"), defaults.steps)
    data.update(mode_fields)
    data["performance"] = None if mode == CUSTOM else mode

    if values.get("custom_size"):
        data["width"] = _coerce("width", values.get("width"), defaults.width)
        data["height"] = _coerce("height", values.get("height"), defaults.height)
    elif "aspect_ratio" in values:
        try:
            size = Size.parse(values["aspect_ratio"])
        except ValueError as exc:
            raise InvalidRequest(f"Aspect ratio: {exc}.", field="aspect_ratio") from exc
        data["width"], data["height"] = size.width, size.height

    if values.get("random_seed", "seed" not in values):
        data["seed"] = -1
    else:
        data["seed"] = _coerce("seed", values.get("seed"), defaults.seed)
    return GenerationRequest.from_dict(data)


def form_from_fields(fields: Mapping[str, Any], tables: FormTables,
                     architecture: Architecture | str | None) -> dict[str, Any]:
    """Form values for the request fields given (a request's to_dict(), or a partial set from metadata)."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name in REQUEST_FIELDS and name not in _SPECIAL:
            out[name] = list(value) if isinstance(value, (list, tuple)) else value
    if isinstance(out.get("seed_behavior"), SeedBehavior):
        out["seed_behavior"] = out["seed_behavior"].value
    if "seed" in fields:
        seed = int(fields["seed"])
        out["random_seed"] = seed == -1
        if seed != -1:
            out["seed"] = seed
    if "width" in fields and "height" in fields:
        key = tables.sizes.find(architecture, fields["width"], fields["height"])
        out["custom_size"] = key is None
        if key is None:
            out["width"], out["height"] = int(fields["width"]), int(fields["height"])
        else:
            out["aspect_ratio"] = key
    if "steps" in fields or "performance" in fields:
        mode = tables.performance.matching(fields.get("performance"), fields)
        out["performance"] = mode
        out["steps"] = int(fields["steps"]) if "steps" in fields else tables.performance.fields(mode).get("steps")
        if out["steps"] is None:
            del out["steps"]
    return out


def form_from_request(request: GenerationRequest, tables: FormTables,
                      architecture: Architecture | str | None) -> dict[str, Any]:
    return form_from_fields(request.to_dict(), tables, architecture)


def default_form(tables: FormTables, architecture: Architecture | str | None) -> dict[str, Any]:
    """A complete form: the request defaults, the default performance mode, the architecture's default size."""
    values = form_from_request(REQUEST_DEFAULTS, tables, architecture)
    size = tables.sizes.default(architecture)
    mode = tables.performance.default
    values.update(performance=mode, aspect_ratio=size.key, custom_size=False, width=size.width,
                  height=size.height, random_seed=True, seed=0, styles=[], model=None)
    values.update(tables.performance.fields(mode))
    return values


# --------------------------------------------------------------------------------------------- restoring


def fields_from_record(params: ImageParams, request: GenerationRequest | None) -> dict[str, Any]:
    """Request fields that re-make this image: the request as sent, with this image's own seed and model."""
    if request is not None:
        fields = request.to_dict()
    else:
        fields = {
            "prompt": params.prompt_template or params.prompt,
            "negative_prompt": params.negative_template or params.negative_prompt,
            "styles": list(params.styles), "steps": params.steps, "sampler": params.sampler,
            "scheduler": params.scheduler, "cfg_scale": params.cfg_scale, "width": params.width,
            "height": params.height, "clip_skip": params.clip_skip, "performance": params.performance,
        }
    fields["seed"] = params.seed  # image i of a batch: its own seed, so a re-run starts with it
    fields["model"] = params.model or fields.get("model")
    return fields


def fields_from_metadata(meta: ImageMetadata) -> dict[str, Any]:
    """Request fields from any image's metadata: ours exactly, A1111's and Fooocus's as far as they go."""
    if meta.image_params:
        try:
            params = ImageParams.from_dict(meta.image_params)
            request = GenerationRequest.from_dict(meta.request) if meta.request else None
            return fields_from_record(params, request)
        except (TypeError, ValueError, KeyError):
            pass  # a damaged record: fall back to the infotext
    fields = meta.request_fields()
    performance = meta.params.get("Performance")
    if isinstance(performance, str) and performance:
        fields["performance"] = performance
    styles = meta.params.get("Styles")
    if meta.source_app == "fooocus" and isinstance(styles, list):
        fields["styles"] = [str(s) for s in styles]  # Fooocus records the raw prompt beside its styles
    return fields


SOURCE_LABELS = {"easel": "Easel", "a1111": "A1111", "fooocus": "Fooocus", "unknown": "an unknown app"}


def restore(fields: Mapping[str, Any], tables: FormTables, lookup: ModelLookup,
            current_architecture: Architecture | str | None, source: str = "") -> Restored:
    """Form values for `fields`, keeping what this install cannot use out of the form and saying so."""
    fields = dict(fields)
    notes: list[str] = []
    architecture = current_architecture
    model = fields.pop("model", None)
    if model:
        found = lookup(str(model))
        if found is None:
            notes.append(f"Model {model!r} is not installed; the current model is kept.")
        else:
            fields["model"], architecture = found
    if fields.get("sampler"):
        try:
            choice = tables.samplers.resolve(str(fields["sampler"]), fields.get("scheduler"))
        except InvalidRequest as exc:
            notes.append(f"{exc} The current sampler is kept.")
            fields.pop("sampler", None)
            fields.pop("scheduler", None)
        else:
            fields["sampler"], fields["scheduler"] = choice.sampler, choice.schedule
            if choice.note:
                notes.append(choice.note)
    performance = fields.get("performance")
    if performance and performance not in tables.performance.names:
        notes.append(f"Performance mode {performance!r} is not available here; its steps are kept as Custom.")
    return Restored(form_from_fields(fields, tables, architecture), notes, source)
