"""A whole form's values -> what each widget must show, consistently (choices that fit, values among them).

Used whenever the form is set from outside (saved settings on load, a preset, a restored image, another
model): the model decides the aspect-ratio list, the modes that can run, whether a refiner can be used
and how LoRAs are marked; the sampler decides the schedule list; toggles decide what is visible. Returns
plain keyword dicts per field name; the page turns them into gr.update(...).
"""

from __future__ import annotations

from typing import Any, Mapping

from ui.context import UIContext, describe_record
from ui.form import modes
from ui.form.fields import AUTOMATIC_VAE, LORA_SLOTS, NO_LORA, NO_REFINER, slot_names
from ui.tabs import image_settings
from ui.tabs import inpaint as inpaint_view
from ui.tabs import models as models_view
from ui.tabs import quality as quality_view
from ui.tabs import styles as styles_view


def render_form(values: Mapping[str, Any], ctx: UIContext) -> dict[str, dict[str, Any]]:
    tables = ctx.tables
    out: dict[str, dict[str, Any]] = {name: {"value": value} for name, value in values.items()}
    record = ctx.record(values.get("model")) or ctx.record(None)  # a model since removed: the default one
    model = record.name if record else None
    architecture = ctx.architecture(model)
    out["model"] = {"choices": ctx.model_choices(), "value": model}
    out["model_info"] = {"value": describe_record(record) if record else ctx.notice()}
    out["aspect_ratio"] = {
        "choices": tables.sizes.choices(architecture),
        "value": tables.sizes.pick(architecture, values.get("aspect_ratio")),
        **aspect_state(bool(values.get("custom_size"))),
    }
    sampler = values.get("sampler")
    if sampler not in tables.samplers.samplers:
        sampler = tables.samplers.samplers[0]
    out["sampler"] = {"value": sampler}
    out["scheduler"] = schedule_choices(ctx, sampler, values.get("scheduler"))
    out.update(mode_widgets(ctx, model, values.get("performance")))
    random_seed = bool(values.get("random_seed", True))
    out["seed"] = {"value": values.get("seed", 0), "visible": not random_seed}
    custom = bool(values.get("custom_size"))
    for name in ("width", "height"):
        out[name] = {"value": values.get(name), "visible": custom}
    if "preset" in values and values["preset"] not in ctx.presets.names:
        out["preset"] = {"value": ctx.preset}
    out.update(refiner_widgets(ctx, model, values.get("refiner"), values.get("refiner_switch")))
    out.update(lora_widgets(ctx, values, architecture))
    vaes = ctx.vae_choices()
    vae = values.get("vae")
    out["vae"] = {"choices": vaes, "value": vae if vae in [v for _, v in vaes] else AUTOMATIC_VAE}
    styles = styles_view.known(ctx, values.get("styles") or [])
    out["styles"] = {"choices": styles_view.choices(ctx, styles), "value": styles}
    out.update(styles_view.summary(ctx, str(values.get("prompt", "")), str(values.get("negative_prompt", "")), styles))
    out.update(image_settings.widgets(ctx, values))
    out.update(inpaint_view.widgets(ctx, values))
    out["input_panel"] = {"visible": bool(values.get("input_enabled"))}
    out.update(quality_view.widgets(ctx, values))  # Fooocus's controls greyed where they do not act; expansion models
    return out


def mode_widgets(ctx: UIContext, model: str | None, mode: str | None) -> dict[str, dict[str, Any]]:
    """The mode list for this model (those that cannot run marked) and the notes saying why."""
    reasons = ctx.mode_reasons(model)
    table = ctx.tables.performance
    value = modes.canonical(table, mode) or modes.CUSTOM
    return {
        "performance": {"choices": modes.choices(table, reasons), "value": value},
        "performance_notes": {"value": modes.notes_markdown(table, value, reasons)},
    }


def refiner_widgets(ctx: UIContext, model: str | None, refiner: str | None, switch: Any) -> dict[str, dict[str, Any]]:
    """The refiner list and switch: usable only with an SDXL base, otherwise set to None with the reason."""
    problem = ctx.refiner_problem(model)
    choices = ctx.refiner_choices()
    value = refiner if refiner in [v for _, v in choices] and not problem else NO_REFINER
    shown = {
        "refiner": {"choices": choices, "value": value, "interactive": not problem},
        "refiner_switch": {"interactive": not problem and value != NO_REFINER},
        "refiner_info": {"value": models_view.refiner_markdown(problem)},
    }
    if switch is not None:
        shown["refiner_switch"]["value"] = switch
    return shown


def lora_widgets(ctx: UIContext, values: Mapping[str, Any], architecture: Any) -> dict[str, dict[str, Any]]:
    """Every slot's list (marked for this architecture) with its file kept when still installed, and the notes."""
    choices = ctx.lora_choices(architecture)
    offered = {value for _, value in choices}
    out: dict[str, dict[str, Any]] = {}
    for slot in range(1, LORA_SLOTS + 1):
        name = slot_names(slot)[1]
        chosen = values.get(name) or NO_LORA
        out[name] = {"choices": choices, "value": chosen if chosen in offered else NO_LORA}
    slots = {**values, **{k: v["value"] for k, v in out.items()}}
    out["lora_notes"] = {"value": models_view.lora_markdown(ctx, slots, architecture)}
    return out


ASPECT_LABEL = "Aspect ratio (width × height)"


def aspect_state(custom_size: bool) -> dict[str, Any]:
    """The aspect list is set aside (and says why) while a custom size from the Advanced tab is used."""
    if custom_size:
        return {"interactive": False, "label": f"{ASPECT_LABEL}: not used, a custom size is set in Advanced"}
    return {"interactive": True, "label": ASPECT_LABEL}


def schedule_choices(ctx: UIContext, sampler: str, current: str | None) -> dict[str, Any]:
    """The schedule list for a sampler, keeping the current schedule when the sampler supports it."""
    if sampler not in ctx.tables.samplers.samplers:
        sampler = ctx.tables.samplers.samplers[0]
    schedules = ctx.tables.samplers.supported_schedules(sampler)
    return {"choices": schedules, "value": current if current in schedules else schedules[0]}


def aspect_choices(ctx: UIContext, model: str | None, current: str | None) -> dict[str, Any]:
    """The aspect-ratio list for a model's architecture, keeping the current size when it is offered."""
    architecture = ctx.architecture(model)
    return {"choices": ctx.tables.sizes.choices(architecture), "value": ctx.tables.sizes.pick(architecture, current)}
