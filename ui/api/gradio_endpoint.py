"""A stable Gradio API endpoint, `/generate`, for gradio_client users.

The page's own event handlers take whole forms and stream widget updates, which makes a poor API:
their parameters are widgets, unnamed and unordered. This endpoint has named, typed parameters, starts
from the same form the page starts from (the launch preset), goes through the same form-to-request
mapping and the same queue, and answers with the image files and their parameters.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from pipelines.errors import InvalidRequest
from pipelines.types import JobState
from ui.context import UIContext
from ui.errors import user_message
from ui.form.fields import LORA_SLOTS, request_from_form, slots_from_loras
from ui.form.modes import CUSTOM, MODE_FIELDS


def form_for_call(ctx: UIContext, given: dict[str, Any]) -> dict[str, Any]:
    """The page's starting form with the caller's values on top; a size or seed given turns those fields on.

    `loras` ([{"name", "weight"}], at most five) fills the page's LoRA slots; steps, guidance, sampler or
    schedule given without a performance mode mean Custom, as editing them in the page does.
    """
    values = ctx.initial_form()
    loras = given.pop("loras", None)
    values.update({k: v for k, v in given.items() if v is not None})
    if given.get("width") or given.get("height"):
        values["custom_size"] = True
    if given.get("seed") is not None:
        values["random_seed"] = given["seed"] == -1
    if given.get("performance") is None and any(given.get(name) is not None for name in MODE_FIELDS):
        values["performance"] = CUSTOM
    if loras is not None:
        if not isinstance(loras, list) or not all(isinstance(item, dict) and item.get("name") for item in loras):
            raise InvalidRequest('loras must be a list of {"name": ..., "weight": ...}.', field="loras")
        if len(loras) > LORA_SLOTS:
            raise InvalidRequest(f"At most {LORA_SLOTS} LoRAs can be used at once.", field="loras")
        values.update(slots_from_loras(loras))
    return values


def register(ctx: UIContext) -> None:
    """Add `/generate` to the Blocks being built (call inside its `with` block)."""

    def generate(
        prompt: str,
        negative_prompt: str | None = None,
        model: str | None = None,
        styles: list[str] | None = None,
        performance: str | None = None,
        loras: list[dict] | None = None,
        refiner: str | None = None,
        refiner_switch: float | None = None,
        vae: str | None = None,
        skip_invalid_loras: bool | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
        sampler: str | None = None,
        scheduler: str | None = None,
        seed: int | None = None,
        image_count: int | None = None,
        output_format: str | None = None,
    ) -> tuple[str, list[FileData]]:
        """Make images as the page's Generate button does; unset values come from the launch preset.

        styles: style names, applied in order; performance: one of the engine's modes (or "Custom");
        loras: [{"name": file name, "weight": -2..2}], at most five; refiner: an SDXL checkpoint or "None";
        vae: a VAE file or "Automatic". Returns a JSON text ({"status", "job_id", "seeds", "infotexts",
        "error"}) and the image files.
        """
        given = {k: v for k, v in locals().items() if k != "ctx"}
        try:
            request = ctx.services.manager.validate(request_from_form(form_for_call(ctx, given), ctx.tables))
            job_id = ctx.services.queue.submit(request, owner="gradio-api")
        except Exception as exc:  # noqa: BLE001 - answered as a message, never a traceback
            return json.dumps({"status": "failed", "error": user_message(exc)}), []
        info = ctx.services.queue.wait(job_id)
        images = info.result.images if info.result else []
        answer = {
            "status": info.state.value,
            "job_id": job_id,
            "seeds": [image.params.seed for image in images],
            "infotexts": [image.infotext for image in images],
            "error": info.error if info.state is JobState.FAILED else None,
        }
        return json.dumps(answer), [FileData(path=str(image.path)) for image in images if image.path is not None]

    gr.api(generate, api_name="generate", concurrency_limit=None)
