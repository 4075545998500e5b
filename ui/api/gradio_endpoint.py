"""A stable Gradio API endpoint, `/generate`, for gradio_client users.

The page's own event handlers take whole forms and stream widget updates, which makes a poor API:
their parameters are widgets, unnamed and unordered. This endpoint has named, typed parameters, starts
from the request the page starts from (the launch preset), puts the caller's values on it, and submits
it to the same queue; it answers with the image files and their parameters. An input image (and mask)
comes as gradio_client uploads it (`handle_file`), and is stored in the engine's input store as the page's
uploads are: Vary, Upscale, A1111's img2img and the inpaint modes work as in the page.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr
from gradio.data_classes import FileData
from gradio.utils import get_upload_folder, is_in_or_equal

from pipelines import GenerationRequest, ImageInput, InvalidRequest, JobState, LoraRef
from ui.context import UIContext
from ui.errors import user_message
from ui.form.fields import request_from_form
from ui.form.modes import CUSTOM, MODE_FIELDS


def loras_given(loras: Any) -> tuple[LoraRef, ...]:
    """[{"name", "weight"}] as the engine's LoRA list (the engine checks names, weights and the count)."""
    if not isinstance(loras, list) or not all(isinstance(item, dict) and item.get("name") for item in loras):
        raise InvalidRequest('loras must be a list of {"name": ..., "weight": ...}.', field="loras")
    try:
        return tuple(LoraRef(str(item["name"]), float(item.get("weight", 1.0))) for item in loras)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"loras: a weight is not a number ({exc}).", field="loras") from exc


INPUT_FIELDS = ("input_image", "input_mode", "denoise", "mask", "outpaint")
DEFAULT_INPUT_MODE = "img2img"  # an API caller with an image and nothing else means A1111's img2img


def uploaded_path(value: Any, field: str) -> str:
    """The server-side path of a file gradio_client uploaded (`handle_file`); only its upload folder is read."""
    path = value.get("path") if isinstance(value, dict) else getattr(value, "path", None)
    if not isinstance(path, str) or not path:
        raise InvalidRequest(f"{field}: give a file, e.g. gradio_client's handle_file(path).", field=field)
    if not is_in_or_equal(path, get_upload_folder()):
        raise InvalidRequest(f"{field}: only files uploaded with this call can be used.", field=field)
    return path


def input_for_call(ctx: UIContext, given: dict[str, Any]) -> ImageInput | None:
    """The request's input part from the call's image fields; None without an input image."""
    image = given.get("input_image")
    if image is None:
        extra = [name for name in INPUT_FIELDS[1:] if given.get(name) is not None]
        if extra:
            raise InvalidRequest(f"{extra[0]} needs an input_image.", field="input_image")
        return None
    inputs = ctx.services.inputs
    stored = inputs.put_file(uploaded_path(image, "input_image"), field="input_image")
    mask = given.get("mask")
    return ImageInput(
        stored.sha256,
        mode=str(given.get("input_mode") or DEFAULT_INPUT_MODE),
        denoise=given.get("denoise"),
        mask=None if mask is None else inputs.put_file(uploaded_path(mask, "mask"), field="mask", mask=True).sha256,
        outpaint=tuple(str(side).lower() for side in given.get("outpaint") or ()),
    )


def request_for_call(ctx: UIContext, given: dict[str, Any]) -> GenerationRequest:
    """The launch preset's request with the caller's values on top.

    Steps, guidance, sampler or schedule given without a performance mode mean Custom (no mode), as
    editing them in the page does; "Custom" names that choice explicitly.
    """
    base = request_from_form(ctx.initial_form(), ctx.tables)
    changes = {name: value for name, value in given.items() if value is not None and name not in INPUT_FIELDS}
    changes["input"] = input_for_call(ctx, given)
    if "loras" in changes:
        changes["loras"] = loras_given(changes["loras"])
    if "styles" in changes:
        changes["styles"] = tuple(changes["styles"])
    mode = changes.pop("performance", None)
    if mode is not None:
        changes["performance"] = None if mode == CUSTOM else mode
    elif any(name in changes for name in MODE_FIELDS):
        changes["performance"] = None
    return base.replace(**changes)


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
        sharpness: float | None = None,
        adaptive_cfg: float | None = None,
        adm_positive: float | None = None,
        adm_negative: float | None = None,
        adm_end: float | None = None,
        freeu: bool | None = None,
        freeu_b1: float | None = None,
        freeu_b2: float | None = None,
        freeu_s1: float | None = None,
        freeu_s2: float | None = None,
        refiner_swap: str | None = None,
        prompt_expansion: str | None = None,
        input_image: FileData | None = None,
        input_mode: str | None = None,
        denoise: float | None = None,
        mask: FileData | None = None,
        outpaint: list[str] | None = None,
    ) -> tuple[str, list[FileData]]:
        """Make images as the page's Generate button does; unset values come from the launch preset.

        styles: style names, applied in order; performance: one of the engine's modes (or "Custom");
        loras: [{"name": file name, "weight": -2..2}], at most five; refiner: an SDXL checkpoint or "None";
        vae: a VAE file or "Automatic"; sharpness … refiner_swap: Fooocus's sampling controls (the launch
        preset's, Fooocus's values, when not given); prompt_expansion: a prompt-expansion model or "" (off).
        input_image: start from this image (gradio_client's handle_file), with input_mode a row of the engine's
        input modes by key or label (default img2img: A1111's), denoise its strength (the mode's when not
        given), mask (white = change) and outpaint sides ("left", "right", "top", "bottom") for the inpaint
        modes. Returns a JSON text ({"status", "job_id", "seeds", "infotexts", "error"}) and the image files.
        """
        given = {k: v for k, v in locals().items() if k != "ctx"}
        try:
            job_id = ctx.services.queue.submit(request_for_call(ctx, given), owner="gradio-api")
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
