"""The form as named values, and its mapping to and from a GenerationRequest. Pure functions, no widgets.

The page reads its widgets into a dict {field name: value} (never by position) and hands it here. Most
names are GenerationRequest fields; a few are the UI's own ways of choosing one:

- performance: one of the engine's modes sets steps, guidance, sampler and schedule (pipelines/performance);
  "Custom" keeps `steps`, `cfg_scale`, `sampler`, `scheduler` as set by hand.
- aspect_ratio ("1152x896") gives width/height unless custom_size is on, then width/height are used.
- random_seed: on sends seed -1 (the engine draws one); off sends `seed`.
- lora_N_enabled / lora_N_name / lora_N_weight (N = 1..5): the Models tab's LoRA slots -> `loras`.
- refiner "None" and vae "Automatic" mean no refiner and the checkpoint's own VAE.

Going back (history, a dropped image, a preset), `form_from_fields` turns request fields into form
values; it returns only the names it was given, so a partial source leaves the rest of the form as it is.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from pipelines import (
    FOOOCUS_V2,
    MAX_LORAS,
    REFINER_ARCHITECTURES,
    Architecture,
    GenerationRequest,
    ImageMetadata,
    ImageParams,
    InvalidRequest,
    LoraRef,
    ModelKind,
    PerformanceTable,
    SamplerTable,
    SeedBehavior,
    StyleLibrary,
    control_request_fields,
    page_defaults,
    parse_name_list,
    record_request_fields,
)
from ui.form import modes
from ui.form.image_parts import PART_DEFAULTS, form_from_parts, parts_from_form
from ui.form.modes import CUSTOM
from ui.form.sizes import AspectRatios, Size

REQUEST_DEFAULTS = GenerationRequest()
REQUEST_FIELDS = {f.name for f in dataclasses.fields(GenerationRequest)}
LORA_SLOTS = MAX_LORAS
NO_LORA = "None"
NO_REFINER = "None"
AUTOMATIC_VAE = "Automatic"
DEFAULT_LORA_WEIGHT = 1.0


def slot_names(slot: int) -> tuple[str, str, str]:
    """The form fields of LoRA slot `slot` (1-based): enabled, name, weight."""
    return f"lora_{slot}_enabled", f"lora_{slot}_name", f"lora_{slot}_weight"


SLOT_FIELDS = tuple(name for slot in range(1, LORA_SLOTS + 1) for name in slot_names(slot))
UI_FIELDS = ("aspect_ratio", "custom_size", "random_seed", *SLOT_FIELDS)
# Form fields handled by hand below; every other GenerationRequest field maps one to one.
_SPECIAL = {
    "performance",
    "steps",
    "width",
    "height",
    "seed",
    "aspect_ratio",
    "custom_size",
    "random_seed",
    "loras",
    "refiner",
    "vae",
    "input",
    "hires",
    *SLOT_FIELDS,
}
# (name, kind) -> (name as installed, architecture), or None when this install has no such model.
ModelLookup = Callable[[str, ModelKind], "tuple[str, Architecture] | None"]


@dataclass(frozen=True)
class FormTables:
    """The data the form needs: sizes per architecture, and the engine's modes, samplers and styles."""

    sizes: AspectRatios
    performance: PerformanceTable
    samplers: SamplerTable
    styles: StyleLibrary

    @classmethod
    def for_services(cls, services: Any) -> FormTables:
        """The tables of a running app: the engine's own mode table, sampler table and style library."""
        return cls(AspectRatios.load(), services.performance, services.samplers, services.styles)


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


def _chosen(value: Any, none_word: str) -> str | None:
    """A dropdown's pick as a name, None for its "nothing" entry (None, "", "None", "Automatic")."""
    text = str(value or "").strip()
    return None if text.lower() in ("", none_word.lower()) else text


def loras_from_slots(values: Mapping[str, Any]) -> tuple[LoraRef, ...]:
    """The LoRA slots that hold a file, in slot order; an unticked slot is sent as disabled (kept for restores)."""
    refs = []
    for slot in range(1, LORA_SLOTS + 1):
        enabled, name, weight = slot_names(slot)
        chosen = _chosen(values.get(name), NO_LORA)
        if chosen is None:
            continue
        refs.append(LoraRef(chosen, _coerce(weight, values.get(weight), DEFAULT_LORA_WEIGHT), bool(values.get(enabled, True))))
    return tuple(refs)


def slots_from_loras(loras: Any) -> dict[str, Any]:
    """Every slot's fields for a LoRA list (LoraRefs or dicts): the first five fill the slots, the rest empty."""
    out: dict[str, Any] = {}
    refs = [
        ref if isinstance(ref, LoraRef) else LoraRef(**{k: v for k, v in dict(ref).items() if k in ("name", "weight", "enabled")})
        for ref in loras or ()
    ]
    for slot in range(1, LORA_SLOTS + 1):
        enabled, name, weight = slot_names(slot)
        ref = refs[slot - 1] if slot <= len(refs) else None
        out[enabled] = ref.enabled if ref else True
        out[name] = ref.name if ref else NO_LORA
        out[weight] = float(ref.weight) if ref else DEFAULT_LORA_WEIGHT
    return out


def request_from_form(
    values: Mapping[str, Any],
    tables: FormTables,
    defaults: GenerationRequest = REQUEST_DEFAULTS,
    input_image: str | None = None,
    input_source: str | None = None,
    input_mask: str | None = None,
) -> GenerationRequest:
    """Build the request the form describes. Range checks are the engine's (manager.validate).

    `input_image` is the sha256 of the Input Image panel's picture in the engine's input store (the page stores
    it), `input_source` the result it was sent from, `input_mask` the Inpaint tab's mask in the store."""
    data = defaults.to_dict()
    for name, value in values.items():
        if name in REQUEST_FIELDS and name not in _SPECIAL:
            data[name] = _coerce(name, value, getattr(defaults, name))
    if data.get("model") == "":
        data["model"] = None
    if any(name in values for name in SLOT_FIELDS):
        data["loras"] = list(loras_from_slots(values))
    elif "loras" in values:
        data["loras"] = list(values["loras"] or ())
    if "refiner" in values:
        data["refiner"] = _chosen(values["refiner"], NO_REFINER)
    if "vae" in values:
        data["vae"] = _chosen(values["vae"], AUTOMATIC_VAE)

    data["steps"] = _coerce("steps", values.get("steps"), defaults.steps)
    mode = values.get("performance") or CUSTOM
    data.update(modes.mode_fields(tables.performance, mode))  # InvalidRequest naming the modes for a typo
    data["performance"] = modes.canonical(tables.performance, mode) if mode != CUSTOM else None

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
    data.update(parts_from_form(values, input_image, input_source, input_mask))
    return GenerationRequest.from_dict(data)


def form_from_fields(fields: Mapping[str, Any], tables: FormTables, architecture: Architecture | str | None) -> dict[str, Any]:
    """Form values for the request fields given (a request's to_dict(), or a partial set from metadata)."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name in REQUEST_FIELDS and name not in _SPECIAL:
            out[name] = list(value) if isinstance(value, (list, tuple)) else value
    if isinstance(out.get("seed_behavior"), SeedBehavior):
        out["seed_behavior"] = out["seed_behavior"].value
    if "loras" in fields:
        out.update(slots_from_loras(fields["loras"]))
    if "refiner" in fields:
        out["refiner"] = fields["refiner"] or NO_REFINER
    if "vae" in fields:
        out["vae"] = fields["vae"] or AUTOMATIC_VAE
    out.update(form_from_parts(fields))
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
        mode = modes.matching(tables.performance, fields.get("performance"), fields)
        out["performance"] = mode
        out.update(modes.mode_fields(tables.performance, mode))
        if "steps" in fields and mode == CUSTOM:
            out["steps"] = int(fields["steps"])
    return out


def form_from_request(request: GenerationRequest, tables: FormTables, architecture: Architecture | str | None) -> dict[str, Any]:
    return form_from_fields(request.to_dict(), tables, architecture)


def default_form(tables: FormTables, architecture: Architecture | str | None) -> dict[str, Any]:
    """A complete form: the request defaults (Custom: their steps and sampler), the architecture's default size."""
    values = form_from_request(REQUEST_DEFAULTS, tables, architecture)
    size = tables.sizes.default(architecture)
    values.update(
        performance=CUSTOM,
        steps=REQUEST_DEFAULTS.steps,
        aspect_ratio=size.key,
        custom_size=False,
        width=size.width,
        height=size.height,
        random_seed=True,
        seed=0,
        styles=[],
        model=None,
        refiner=NO_REFINER,
        vae=AUTOMATIC_VAE,
        prompt_expansion="",
    )
    values.update(page_defaults())  # Fooocus's sampling controls on, as in Fooocus (requests default to off)
    values.update(slots_from_loras(()))
    values.update(PART_DEFAULTS)
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
            "styles": list(params.styles),
            "steps": params.steps,
            "sampler": params.sampler,
            "scheduler": params.scheduler,
            "cfg_scale": params.cfg_scale,
            "width": params.width,
            "height": params.height,
            "clip_skip": params.clip_skip,
            "performance": params.performance,
            **record_request_fields(params),
            "step_cache": params.step_cache,
            "token_merging": params.token_merging,
            "fast_decode": params.fast_decode,
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
    fields.update(control_request_fields(meta.params, meta.source_app))  # Fooocus's controls, in its words
    performance = meta.params.get("Performance")
    if isinstance(performance, str) and performance:
        fields["performance"] = performance
    styles = meta.params.get("Styles")
    if meta.source_app == "fooocus":
        if isinstance(styles, list):  # Fooocus records the raw prompt beside its styles; "Fooocus V2" is expansion
            fields["styles"] = [str(s) for s in styles if str(s) != FOOOCUS_V2]
        loras = []  # Fooocus applies LoRAs from its slots, not from tags in the prompt
        for name, weight in parse_name_list(meta.params.get("Lora weights")):
            try:
                loras.append({"name": name, "weight": float(weight)})
            except ValueError:
                continue
        fields["loras"] = loras
    elif "prompt" in fields and "loras" not in fields:
        fields["loras"] = []  # A1111's LoRAs are <lora:…> tags in the restored prompt: the slots are emptied
    return fields


SOURCE_LABELS = {"easel": "Easel", "a1111": "A1111", "fooocus": "Fooocus", "unknown": "an unknown app"}


def restore(
    fields: Mapping[str, Any],
    tables: FormTables,
    lookup: ModelLookup,
    current_architecture: Architecture | str | None,
    source: str = "",
) -> Restored:
    """Form values for `fields`, keeping what this install cannot use out of the form and saying so."""
    fields = dict(fields)
    notes: list[str] = []
    architecture = current_architecture
    model = fields.pop("model", None)
    if model:
        found = lookup(str(model), ModelKind.CHECKPOINT)
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
    if performance and modes.canonical(tables.performance, performance) is None:
        notes.append(f"Performance mode {performance!r} is not available here; its steps are kept as Custom.")
    if "styles" in fields:
        fields["styles"], missing = _known_styles(tables.styles, fields["styles"] or ())
        if missing:
            notes.append(f"Style{'s' if len(missing) > 1 else ''} not in the style library, left out: {', '.join(missing)}.")
    if "loras" in fields:
        fields["loras"] = _installed_loras(fields["loras"] or (), lookup, notes)
    if fields.get("refiner"):
        found = lookup(str(fields["refiner"]), ModelKind.CHECKPOINT)
        if found is None or found[1] not in REFINER_ARCHITECTURES:
            why = "is not installed" if found is None else f"is {found[1].label}, not an SDXL model"
            notes.append(f"Refiner {fields['refiner']!r} {why}; no refiner is used.")
            fields["refiner"] = None
        else:
            fields["refiner"] = found[0]
    if fields.get("vae"):
        found = lookup(str(fields["vae"]), ModelKind.VAE)
        if found is None:
            notes.append(f"VAE {fields['vae']!r} is not installed; the model's own VAE is used.")
        fields["vae"] = found[0] if found else None
    if fields.get("prompt_expansion"):
        found = lookup(str(fields["prompt_expansion"]), ModelKind.PROMPT_EXPANSION)
        if found is None:
            notes.append(f"Prompt expansion ({fields['prompt_expansion']}) is not installed here; the prompt is used as typed.")
        fields["prompt_expansion"] = found[0] if found else ""
    return Restored(form_from_fields(fields, tables, architecture), notes, source)


def _known_styles(library: StyleLibrary, names: Any) -> tuple[list[str], list[str]]:
    """(styles the library has, as it spells them; the names it does not have)."""
    known, missing = [], []
    for name in names:
        try:
            known.append(library.get(str(name)).name)
        except InvalidRequest:
            missing.append(str(name))
    return known, missing


def _installed_loras(loras: Any, lookup: ModelLookup, notes: list[str]) -> list[LoraRef]:
    """The LoRAs of a restored list that are installed (named as installed); the others noted and left out."""
    kept = []
    for item in loras:
        ref = (
            item
            if isinstance(item, LoraRef)
            else LoraRef(**{k: v for k, v in dict(item).items() if k in ("name", "weight", "enabled")})
        )
        found = lookup(ref.name, ModelKind.LORA)
        if found is None:
            notes.append(f"LoRA {ref.name!r} is not installed; its slot is left empty.")
        elif len(kept) == LORA_SLOTS:
            notes.append(f"Only {LORA_SLOTS} LoRA slots: {ref.name!r} is left out.")
        else:
            kept.append(dataclasses.replace(ref, name=found[0]))
    return kept
