"""What an image file says about how it was made, written into it: A1111's infotext and our JSON (reading.py
reads it back).

Two copies are written on purpose. The A1111 "parameters" infotext is what CivitAI, A1111, Forge, Fooocus and
most viewers read, so it follows A1111's conventions to the letter. It is lossy (styles are already folded into
the prompt, names are free text), so a second copy, our `easel` JSON, carries `ImageParams` and the
`GenerationRequest` exactly, for re-creating an image and for rebuilding the history.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from pipelines.about import APP_NAME, __version__
from pipelines.errors import InvalidRequest
from pipelines.outputs.fooocus_controls import control_fields
from pipelines.outputs.inpaint_fields import mask_fields
from pipelines.types import GenerationRequest, ImageParams

EASEL_KEY = "easel"  # PNG text chunk holding our JSON
JSON_VERSION = 1
FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp"}
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}

EXIF_IFD, USER_COMMENT, IMAGE_DESCRIPTION, SOFTWARE, MAKER_NOTE = 0x8769, 0x9286, 0x010E, 0x0131, 0x927C
UNICODE_PREFIX = b"UNICODE\0"
_JPEG_EXIF_LIMIT = 65000  # a JPEG APP1 segment holds at most 65533 bytes; Pillow refuses more


log = logging.getLogger(__name__)


def app_version() -> str:
    return f"{APP_NAME} {__version__}"


def normalize_format(fmt: str | None) -> str:
    """"jpg" -> "jpeg"; anything we cannot write is the user's `output_format` mistake."""
    name = FORMATS.get(str(fmt or "").strip().lower().lstrip("."))
    if name is None:
        raise InvalidRequest(f"Unknown output format {fmt!r}; use png, jpeg or webp.", field="output_format")
    return name


# --------------------------------------------------------------------------------------------- writing


def _num(value: float | int) -> str:
    """Numbers as A1111 prints them: 7 not 7.0 (its sliders hand integral values over as ints)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _quote(value: Any) -> str:
    """A1111's quote(), also quoting `"` and edge spaces so that every value parses back unchanged."""
    text = str(value)
    if any(c in text for c in ',:\n"') or text != text.strip():
        return json.dumps(text, ensure_ascii=False)
    return text


def _lora_label(name: str) -> str:
    return name.translate(str.maketrans("", "", ":,"))  # what A1111's Lora hashes does to names


def infotext_fields(params: ImageParams) -> dict[str, str]:
    """The last infotext line as an ordered dict, in A1111's field order; empty fields are left out."""
    version = params.version or app_version()
    if not version.startswith(APP_NAME):
        version = f"{APP_NAME} {version}"
    fields: dict[str, str] = {  # hashes: A1111's "AutoV2" short hash, sha256[:10]
        "Steps": _num(params.steps), "Sampler": params.sampler, "Schedule type": params.scheduler,
        "CFG scale": _num(params.cfg_scale), "Seed": _num(params.seed), "Size": f"{params.width}x{params.height}",
        "Model hash": (params.model_hash or "")[:10], "Model": params.model,
    }
    if params.vae:
        fields.update({"VAE hash": (params.vae_hash or "")[:10], "VAE": params.vae})
    if params.denoising_strength is not None:
        fields["Denoising strength"] = _num(params.denoising_strength)
    fields.update(mask_fields(params))
    if params.clip_skip > 1:
        fields["Clip skip"] = _num(params.clip_skip)
    fields.update(_second_pass_fields(params))
    if params.refiner:  # A1111: the checkpoint's short_title, "name [sha256[:10]]"
        fields["Refiner"] = f"{params.refiner} [{params.refiner_hash[:10]}]" if params.refiner_hash else params.refiner
        fields["Refiner switch at"] = "" if params.refiner_switch is None else _num(params.refiner_switch)
    if params.loras:  # A1111 writes "name: sha256[:12]"; Fooocus adds the weights the same way
        fields["Lora hashes"] = ", ".join(f"{_lora_label(lo.name)}: {lo.hash[:12]}" for lo in params.loras if lo.hash)
        fields["Lora weights"] = ", ".join(f"{_lora_label(lo.name)}: {_num(lo.weight)}" for lo in params.loras)
    if params.embeddings:  # A1111: "name: sha256[:12]" of each textual inversion the prompts used
        fields["TI hashes"] = ", ".join(f"{_lora_label(e.name)}: {e.hash[:12]}" for e in params.embeddings)
    if params.styles:
        fields["Styles"] = repr(list(params.styles))  # Fooocus's form, which Fooocus reads back
    if params.performance:
        fields["Performance"] = params.performance
    fields.update(control_fields(params))  # Fooocus's sampling controls, in Fooocus's words
    if params.step_cache > 1:  # CPU Turbo's approximations, so the image is made again the same way
        fields["Step cache"] = _num(params.step_cache)
    if params.token_merging > 0:  # A1111's name for the same switch
        fields["Token merging ratio"] = _num(params.token_merging)
    if params.fast_decode:
        fields["Decoder"] = "TAESD"
    if params.prompt_template:  # what the user typed, before styles and wildcards (sd-dynamic-prompts' labels)
        fields["Template"] = params.prompt_template
    if params.negative_template:
        fields["Negative Template"] = params.negative_template
    fields["Version"] = version
    return {k: v for k, v in fields.items() if v not in ("", None)}


def _second_pass_fields(params: ImageParams) -> dict[str, str]:
    """A1111's labels for the hires fix and for an upscaler run on the image (its extras tab's labels)."""
    fields: dict[str, str] = {}
    if params.hires_upscaler:
        if params.hires_prompt:
            fields["Hires prompt"] = params.hires_prompt
        if params.hires_negative_prompt:
            fields["Hires negative prompt"] = params.hires_negative_prompt
        if params.hires_scale is not None:
            fields["Hires upscale"] = _num(params.hires_scale)
        if params.hires_resize:
            fields["Hires resize"] = params.hires_resize
        if params.hires_steps:
            fields["Hires steps"] = _num(params.hires_steps)
        fields["Hires upscaler"] = params.hires_upscaler
        if params.hires_sampler:
            fields["Hires sampler"] = params.hires_sampler
            fields["Hires schedule type"] = params.hires_scheduler or ""
    if params.postprocess_upscaler:
        fields["Postprocess upscale by"] = "" if params.postprocess_scale is None else _num(params.postprocess_scale)
        fields["Postprocess upscaler"] = params.postprocess_upscaler
    return fields


def infotext(params: ImageParams) -> str:
    """The A1111 "parameters" text: prompt lines, `Negative prompt:` line(s), one line of key: value pairs."""
    line = ", ".join(f"{k}: {_quote(v)}" for k, v in infotext_fields(params).items())
    negative = f"\nNegative prompt: {params.negative_prompt}" if params.negative_prompt else ""
    return f"{params.prompt}{negative}\n{line}".strip()


def easel_json(params: ImageParams, request: GenerationRequest | None, ascii_only: bool = False) -> str:
    """Our exact record; ASCII-only for EXIF, whose ASCII tags cannot hold other characters."""
    data = {"version": JSON_VERSION, "app": app_version(), "params": params.to_dict(),
            "request": request.to_dict() if request is not None else None}
    return json.dumps(data, ensure_ascii=ascii_only)


def _exif_bytes(text: str, description: str | None) -> bytes:
    exif = Image.Exif()
    if description is not None:
        exif[IMAGE_DESCRIPTION] = description
    exif[SOFTWARE] = app_version()
    exif[EXIF_IFD] = {USER_COMMENT: UNICODE_PREFIX + text.encode("utf-16-be")}  # as piexif's helper does
    return exif.tobytes()


def _jpeg_exif(text: str, description: str) -> bytes:
    """Fit the 64 KiB JPEG limit: drop the JSON first, then shorten the prompt, never the parameters line."""
    data = _exif_bytes(text, description)
    if len(data) <= _JPEG_EXIF_LIMIT:
        return data
    data = _exif_bytes(text, None)
    head, _, line = text.rpartition("\n")
    while len(data) > _JPEG_EXIF_LIMIT and head:
        head = head[: max(0, len(head) - (len(data) - _JPEG_EXIF_LIMIT) // 2 - 16)]
        data = _exif_bytes(f"{head}\n{line}" if head else line, None)
    return data


def encode_image(image: Image.Image, params: ImageParams, request: GenerationRequest | None, fmt: str,
                 quality: int = 95) -> bytes:
    """The file's bytes with metadata embedded where A1111 puts it: PNG text chunks or EXIF UserComment."""
    fmt = normalize_format(fmt)
    text = infotext(params)
    out = io.BytesIO()
    if fmt == "png":
        info = PngInfo()
        info.add_text("parameters", text)
        info.add_text(EASEL_KEY, easel_json(params, request))
        image.save(out, "PNG", pnginfo=info)
    elif fmt == "jpeg":
        rgb = image if image.mode in ("RGB", "L", "CMYK") else image.convert("RGB")
        rgb.save(out, "JPEG", quality=quality, exif=_jpeg_exif(text, easel_json(params, request, ascii_only=True)))
    else:
        img = image if image.mode in ("RGB", "RGBA") else image.convert("RGBA" if "A" in image.mode else "RGB")
        img.save(out, "WEBP", quality=quality, exif=_exif_bytes(text, easel_json(params, request, ascii_only=True)))
    return out.getvalue()
