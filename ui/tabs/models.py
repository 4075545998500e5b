"""The Models tab: base checkpoint, SDXL refiner and its switch, five LoRA slots, refresh, unusable files.

Every list shows each file's architecture. A refiner can only follow an SDXL base, so with another
base the refiner list is locked at None and says why (the engine's own words). LoRAs made for another
architecture than the model's are marked in the lists and explained under the slots (the engine
refuses them, or leaves them out when "Skip LoRAs that cannot be used" is ticked); a picked LoRA's
trigger words are shown, and one click adds them to the prompt.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Mapping

import gradio as gr

from pipelines import LORA_WEIGHT, Architecture, EaselError, ModelKind
from ui.context import UIContext, describe_record, lora_mismatch
from ui.form.fields import LORA_SLOTS, NO_REFINER, slot_names

QUIET = dict(show_progress="hidden", api_visibility="private")


@dataclass
class LoraSlot:
    enabled: gr.Checkbox
    name: gr.Dropdown
    weight: gr.Slider


@dataclass
class ModelsTab:
    model: gr.Dropdown
    model_info: gr.Markdown
    refresh: gr.Button
    refiner: gr.Dropdown
    refiner_switch: gr.Slider
    refiner_info: gr.Markdown
    slots: list[LoraSlot]
    lora_notes: gr.Markdown
    add_triggers: gr.Button
    skip_invalid_loras: gr.Checkbox
    unusable: gr.Markdown

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "refiner": self.refiner,
            "refiner_switch": self.refiner_switch,
            "skip_invalid_loras": self.skip_invalid_loras,
        }
        for number, slot in enumerate(self.slots, 1):
            enabled, name, weight = slot_names(number)
            out.update({enabled: slot.enabled, name: slot.name, weight: slot.weight})
        return out

    def shown(self) -> dict[str, Any]:
        return {"model_info": self.model_info, "refiner_info": self.refiner_info, "lora_notes": self.lora_notes}


# -- pure views ------------------------------------------------------------------------------------------


def unusable_markdown(ctx: UIContext) -> str:
    """The files the registry found but cannot use, each with its reason; empty when there are none."""
    rows = ctx.unusable_models()
    if not rows:
        return ""
    lines = ["**Files that cannot be used:**", ""]
    lines += [f"- `{html.escape(name)}`: {html.escape(reason)}" for name, reason in rows]
    return "\n".join(lines)


def model_info(ctx: UIContext, model: str | None) -> str:
    record = ctx.record(model)
    return describe_record(record) if record is not None else ctx.notice()


def refiner_markdown(problem: str | None) -> str:
    if problem:
        return f"**Refiner unavailable**: {html.escape(problem)}"
    return "The refiner finishes the last steps, from the switch point on (0.8: the base model does 80%)."


def trigger_words(ctx: UIContext, name: str) -> list[str]:
    try:
        return list(ctx.services.lora_info(name).trigger_words)
    except (EaselError, OSError):
        return []


def lora_markdown(ctx: UIContext, values: Mapping[str, Any], architecture: Architecture) -> str:
    """One line per filled slot: the file's architecture, why it does not fit, its trigger words and top tags."""
    lines = []
    for slot in range(1, LORA_SLOTS + 1):
        enabled, name, weight = slot_names(slot)
        record = ctx.lora_record(values.get(name))
        if record is None:
            continue
        parts = [
            f"**{slot}. {html.escape(record.name)}** ({record.architecture.label}{'' if values.get(enabled, True) else ', off'})"
        ]
        mismatch = lora_mismatch(record, architecture)
        if mismatch:
            parts.append(
                f"⚠ {html.escape(mismatch)} The job refuses it, or leaves it out when *Skip LoRAs that cannot be used* is ticked."
            )
        try:
            info = ctx.services.lora_info(record.name)
        except (EaselError, OSError):
            info = None
        if info is not None and info.trigger_words:
            parts.append("trigger words: " + ", ".join(f"`{html.escape(w)}`" for w in info.trigger_words))
        if info is not None and info.top_tags:
            parts.append("trained on: " + ", ".join(html.escape(tag) for tag, _count in info.top_tags[:8]))
        lines.append("- " + " · ".join(parts))
    return "\n".join(lines)


def prompt_with_triggers(ctx: UIContext, prompt: str, values: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The prompt with the trigger words of every enabled slot's LoRA that it does not hold yet appended."""
    added: list[str] = []
    for slot in range(1, LORA_SLOTS + 1):
        enabled, name, _weight = slot_names(slot)
        if not values.get(enabled, True) or ctx.lora_record(values.get(name)) is None:
            continue
        for word in trigger_words(ctx, str(values[name])):
            if word.lower() not in prompt.lower() and word not in added:
                added.append(word)
    text = ", ".join(part for part in (prompt.strip(), *added) if part)
    return text, added


# -- the tab ---------------------------------------------------------------------------------------------


def build(ctx: UIContext, initial: dict[str, Any]) -> ModelsTab:
    architecture = ctx.architecture(initial["model"])
    with gr.Row(elem_id="model-row"):
        model = gr.Dropdown(
            ctx.model_choices(), value=initial["model"], label="Base model (checkpoint)", elem_id="model", scale=4
        )
        refresh = gr.Button("Refresh", elem_id="refresh-models", size="sm", scale=1, min_width=90)
    info = gr.Markdown(model_info(ctx, initial["model"]), elem_id="model-info")

    problem = ctx.refiner_problem(initial["model"])
    with gr.Row(equal_height=True):
        refiner = gr.Dropdown(
            ctx.refiner_choices(),
            value=NO_REFINER if problem else initial["refiner"],
            label="Refiner (SDXL)",
            elem_id="refiner",
            interactive=not problem,
            scale=3,
        )
        refiner_switch = gr.Slider(
            0.1,
            1.0,
            initial["refiner_switch"],
            step=0.01,
            label="Switch at",
            elem_id="refiner-switch",
            scale=2,
            interactive=not problem and initial["refiner"] != NO_REFINER,
        )
    refiner_info = gr.Markdown(refiner_markdown(problem), elem_id="refiner-info")

    slots = []
    lora_list = ctx.lora_choices(architecture)
    gr.Markdown(
        "**LoRAs**: tick to use · file (with the architecture it was made for) · weight −2…2", elem_classes=["easel-hint"]
    )
    with gr.Group(elem_id="lora-slots"):
        for number in range(1, LORA_SLOTS + 1):
            enabled, name, weight = slot_names(number)
            with gr.Row(equal_height=True, elem_id=f"lora-{number}", elem_classes=["easel-lora-slot"]):
                slots.append(
                    LoraSlot(
                        gr.Checkbox(
                            initial[enabled],
                            label=str(number),
                            elem_id=f"lora-{number}-enabled",
                            elem_classes=["easel-lora-on"],
                            scale=0,
                            min_width=52,
                            container=False,
                        ),
                        gr.Dropdown(
                            lora_list,
                            value=initial[name],
                            label=f"LoRA {number}",
                            show_label=False,
                            elem_id=f"lora-{number}-name",
                            scale=5,
                            min_width=160,
                            container=False,
                        ),
                        gr.Slider(
                            LORA_WEIGHT[0],
                            LORA_WEIGHT[1],
                            initial[weight],
                            step=0.05,
                            label="Weight",
                            show_label=False,
                            elem_id=f"lora-{number}-weight",
                            scale=3,
                            min_width=150,
                            container=False,
                        ),
                    )
                )
    lora_notes = gr.Markdown(lora_markdown(ctx, initial, architecture), elem_id="lora-notes")
    with gr.Row():
        add_triggers = gr.Button("Add trigger words to the prompt", size="sm", elem_id="lora-triggers")
        skip_invalid_loras = gr.Checkbox(
            initial["skip_invalid_loras"],
            label="Skip LoRAs that cannot be used",
            elem_id="skip-invalid-loras",
            info="Go on without them (the job says which) instead of failing.",
        )
    folders = ", ".join(
        f"`{ctx.services.registry.folder(kind)}`" for kind in (ModelKind.CHECKPOINT, ModelKind.LORA, ModelKind.VAE)
    )
    gr.Markdown(
        f"Put checkpoints, LoRAs and VAEs (SD 1.x, SDXL; `.safetensors` or diffusers folders) in {folders}, "
        "then press Refresh. Each file's architecture is read from its tensors.",
        elem_classes=["easel-hint"],
    )
    unusable = gr.Markdown(unusable_markdown(ctx), elem_id="unusable-models")

    model.change(lambda name: model_info(ctx, name), model, info, **QUIET)
    refiner.change(lambda name: gr.update(interactive=name not in (None, NO_REFINER)), refiner, refiner_switch, **QUIET)

    slot_inputs = [model] + [c for slot in slots for c in (slot.enabled, slot.name, slot.weight)]

    def notes(model_name: str | None, *flat: Any) -> str:
        values = {name: value for name, value in zip(_slot_field_names(), flat)}
        return lora_markdown(ctx, values, ctx.architecture(model_name))

    gr.on(
        [e for slot in slots for e in (slot.name.change, slot.enabled.change)],
        notes,
        slot_inputs,
        lora_notes,
        trigger_mode="always_last",
        preprocess=False,
        **QUIET,
    )
    return ModelsTab(
        model, info, refresh, refiner, refiner_switch, refiner_info, slots, lora_notes, add_triggers, skip_invalid_loras, unusable
    )


def _slot_field_names() -> list[str]:
    return [name for number in range(1, LORA_SLOTS + 1) for name in slot_names(number)]
