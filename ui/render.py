"""A whole form's values -> what each widget must show, consistently (choices that fit, values among them).

Used whenever the form is set from outside (saved settings on load, a preset, a restored image): the
model decides the aspect-ratio list, the sampler decides the schedule list, toggles decide what is
visible. Returns plain keyword dicts per field name; the page turns them into gr.update(...).
"""

from __future__ import annotations

from typing import Any, Mapping

from .context import UIContext, describe_record
from .performance import CUSTOM


def render_form(values: Mapping[str, Any], ctx: UIContext) -> dict[str, dict[str, Any]]:
    tables = ctx.tables
    out: dict[str, dict[str, Any]] = {name: {"value": value} for name, value in values.items()}
    record = ctx.record(values.get("model")) or ctx.record(None)  # a model since removed: the default one
    architecture = ctx.architecture(record.name if record else None)
    out["model"] = {"choices": ctx.model_choices(), "value": record.name if record else None}
    out["model_info"] = {"value": describe_record(record) if record else ctx.notice()}
    out["aspect_ratio"] = {"choices": tables.sizes.choices(architecture),
                           "value": tables.sizes.pick(architecture, values.get("aspect_ratio")),
                           **aspect_state(bool(values.get("custom_size")))}
    sampler = values.get("sampler")
    if sampler not in tables.samplers.samplers:
        sampler = tables.samplers.samplers[0]
    schedules = tables.samplers.supported_schedules(sampler)
    scheduler = values.get("scheduler")
    out["sampler"] = {"value": sampler}
    out["scheduler"] = {"choices": schedules, "value": scheduler if scheduler in schedules else schedules[0]}
    performance = values.get("performance")
    out["performance"] = {"value": performance if performance in tables.performance.choices else CUSTOM}
    random_seed = bool(values.get("random_seed", True))
    out["seed"] = {"value": values.get("seed", 0), "visible": not random_seed}
    custom = bool(values.get("custom_size"))
    for name in ("width", "height"):
        out[name] = {"value": values.get(name), "visible": custom}
    if "preset" in values and values["preset"] not in ctx.presets.names:
        out["preset"] = {"value": ctx.preset}
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
