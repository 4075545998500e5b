"""Reading back how an image was made: our JSON record exactly, else A1111's infotext or Fooocus's JSON.

Reading accepts images from A1111 and Fooocus too, so that the UI can restore a form from any image a user
drops in; reading a foreign or damaged file never raises, only bytes that are not an image at all do.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from pipelines.speed.token_merging import MAX_RATIO
from pipelines.about import APP_NAME
from pipelines.errors import InvalidRequest
from pipelines.outputs.metadata import EASEL_KEY, EXIF_IFD, IMAGE_DESCRIPTION, MAKER_NOTE, SOFTWARE, UNICODE_PREFIX, USER_COMMENT

SOURCE_APPS = ("easel", "a1111", "fooocus", "unknown")

# A1111's own pattern (modules/infotext_utils.py), except that the key is bounded to 100 characters: the
# unbounded `[\w \-/]+` makes findall quadratic on long comma-free lines, and real keys are short.
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]{1,100}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_SIZE = re.compile(r"^(\d+)x(\d+)$")
_RE_INT = re.compile(r"^[+-]?\d+$")
_RE_FLOAT = re.compile(r"^[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?$")
_MAX_PARAM_LINE = 65536  # a longer last line is treated as prompt text, never scanned for parameters
# Values that look numeric but are names or hashes (a hash can be all digits, a model can be called "2024").
_TEXT_KEY_WORDS = ("hash", "model", "vae", "version", "sampler", "schedule", "lora", "style", "user", "prompt",
                   "upscaler", "name", "performance", "template", "resize", "expansion")
_PARAM_LINE_KEYS = ("Steps", "Sampler", "Seed", "CFG scale", "Size-1")
_SCHEDULE_SUFFIXES = ("Karras", "Exponential", "SGM Uniform", "Polyexponential", "Uniform")
_RE_HASHED_NAME = re.compile(r"^(.*\S)\s+\[([0-9A-Fa-f]{8,64})\]$")  # A1111's short_title: "name [hash]"
_NO_MODEL = ("", "none", "automatic", "default (model)")  # how A1111/Fooocus write "the checkpoint's own"

log = logging.getLogger(__name__)


@dataclass
class ImageMetadata:
    """What `read_metadata` found. `params` always uses A1111's labels, whichever app wrote the file."""

    source_app: str  # one of SOURCE_APPS
    infotext: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # parsed infotext fields ("Prompt", "Steps", "Size-1"...)
    request: dict[str, Any] | None = None  # GenerationRequest.to_dict() from our JSON
    raw: dict[str, Any] = field(default_factory=dict)  # the text chunks / EXIF strings as found
    image_params: dict[str, Any] | None = None  # ImageParams.to_dict() from our JSON (exact, unlike `params`)

    def request_fields(self) -> dict[str, Any]:
        """GenerationRequest fields to restore a form: ours exactly when present, else mapped from `params`."""
        if self.request:
            return dict(self.request)
        return request_fields_from_params(self.params)


# --------------------------------------------------------------------------------------------- parsing


def _convert(key: str, value: str) -> Any:
    if any(word in key.lower() for word in _TEXT_KEY_WORDS):
        return value
    if _RE_INT.match(value):
        return int(value)
    number = _number(value) if _RE_FLOAT.match(value) else None
    return value if number is None else number


def _parse_list(value: Any) -> list[str] | None:
    """A JSON or Python list/tuple literal of plain values, read without eval (Fooocus writes str(list))."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    text = str(value).strip()
    if not text or text[0] not in "[(" or len(text) > 20000:
        return None
    for loader in (json.loads, ast.literal_eval):
        try:
            data = loader(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(data, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in data):
            return [str(v) for v in data]
    return None


def parse_infotext(text: str) -> dict[str, Any]:
    """A1111's parse_generation_parameters without eval or defaults: only what the text says.

    Returns "Prompt", "Negative prompt" and every "Key: value" of the last line (quoted values unquoted,
    numbers as int/float, `WxH` values split into "Key-1"/"Key-2" ints as A1111 does: "Size-1" is the width).
    Garbage gives whatever could be read, never an exception.
    """
    if not isinstance(text, str):
        return {}
    *lines, lastline = text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "").strip().split("\n")
    if len(lastline) > _MAX_PARAM_LINE or len(_RE_PARAM.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    prompt: list[str] = []
    negative: list[str] = []
    done_with_prompt = False  # the first "Negative prompt:" line starts the negative; it may span lines
    for line in lines:
        line = line.strip()
        if not done_with_prompt and line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        (negative if done_with_prompt else prompt).append(line)
    result: dict[str, Any] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _RE_PARAM.findall(lastline):
        key, quoted = key.strip(), len(value) >= 2 and value[0] == value[-1] == '"'
        if quoted:
            try:
                value = json.loads(value)
            except ValueError:
                pass  # A1111's unquote keeps the text as it is
        size = _RE_SIZE.match(value.strip())
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = int(size.group(1)), int(size.group(2))
        elif key == "Styles" or key == "Refiner":
            result[key] = (_parse_list(value) or value) if key == "Styles" else value
        else:
            result[key] = value if quoted else _convert(key, value.strip())
    return result


def split_hashed_name(value: Any) -> tuple[str, str | None]:
    """`"sd_xl_refiner_1.0 [7440042bbd]"` -> ("sd_xl_refiner_1.0", "7440042bbd"); a plain name has no hash."""
    text = str(value or "").strip()
    match = _RE_HASHED_NAME.match(text)
    return (match.group(1), match.group(2)) if match else (text, None)


def parse_name_list(value: Any) -> list[tuple[str, str]]:
    """`"a: 1f2e3d4c5b6a, b: 0.8"` (Lora hashes / Lora weights) -> [("a", "1f2e..."), ("b", "0.8")]."""
    pairs = []
    for part in str(value or "").split(","):
        name, sep, item = part.rpartition(":")
        if sep and name.strip():
            pairs.append((name.strip(), item.strip()))
    return pairs


def _number(value: Any, integer: bool = False) -> Any:
    """A finite number (an int if `integer`) from text or a number; None for anything else."""
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        return None
    if number != number or abs(number) == float("inf") or (integer and not number.is_integer()):
        return None
    return int(number) if integer else number


def request_fields_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """Map parsed A1111 labels to GenerationRequest field names; fields the text lacks are left out.

    Styles are not restored: the infotext prompt has them applied already. LoRAs (`<lora:...>` in the
    prompt) are left in the prompt text for the prompt parser to handle.
    """
    out: dict[str, Any] = {}
    for name, key in (("prompt", "Prompt"), ("negative_prompt", "Negative prompt")):
        text = params.get(f"Raw {key.lower()}", params.get(key))  # Fooocus: as typed, before its expansion
        if isinstance(text, str):
            out[name] = text
    for key, name in (("Steps", "steps"), ("CFG scale", "cfg_scale"), ("Seed", "seed"), ("Size-1", "width"),
                      ("Size-2", "height"), ("Clip skip", "clip_skip")):
        value = _number(params.get(key), integer=name != "cfg_scale")
        if value is not None:
            out[name] = value
    sampler = params.get("Sampler")
    schedule = params.get("Schedule type", params.get("Scheduler"))
    if isinstance(sampler, str) and sampler:
        if schedule is None:  # A1111 < 1.9 wrote "DPM++ 2M Karras" as one sampler name
            for suffix in _SCHEDULE_SUFFIXES:
                if sampler.endswith(" " + suffix):
                    sampler, schedule = sampler[: -len(suffix) - 1], suffix
                    break
        out["sampler"] = sampler
    if any(k in params for k in _PARAM_LINE_KEYS):
        out["scheduler"] = str(schedule) if schedule else "Automatic"  # A1111: missing means Automatic
        out.setdefault("clip_skip", 1)  # A1111: missing Clip skip means 1
    model = params.get("Model")
    if model not in (None, ""):
        out["model"] = str(model)
    for key, name in (("VAE", "vae"), ("Refiner", "refiner")):
        value = split_hashed_name(params.get(key))[0]
        if value.lower() not in _NO_MODEL:
            out[name] = value
    if any(k in params for k in _PARAM_LINE_KEYS):  # CPU Turbo's switches: missing means off, as A1111 images have them
        out["step_cache"] = _number(params.get("Step cache"), integer=True) or 0
        # A1111 allows up to 0.9; with one destination per 2x2 cell, more than 0.75 merges the same tokens
        out["token_merging"] = min(float(_number(params.get("Token merging ratio")) or 0.0), MAX_RATIO)
        out["fast_decode"] = str(params.get("Decoder", "")).upper() == "TAESD"
    switch = _number(params.get("Refiner switch at"))
    if "refiner" in out and switch is not None and 0 < switch <= 1:
        out["refiner_switch"] = switch
    hires = _hires_fields(params)
    if hires:
        out["hires"] = hires
    return out


def _hires_fields(params: dict[str, Any]) -> dict[str, Any]:
    """HiresFix fields from A1111's Hires labels ({} when the image had no hires fix)."""
    if not params.get("Hires upscaler") and _number(params.get("Hires upscale")) is None and "Hires resize-1" not in params:
        return {}
    out: dict[str, Any] = {"upscaler": str(params.get("Hires upscaler") or "Latent")}
    scale, steps, denoise = _number(params.get("Hires upscale")), _number(params.get("Hires steps"), True), _number(
        params.get("Denoising strength")
    )
    if "Hires resize-1" in params:  # "Hires resize: 1024x768", split as A1111 splits sizes
        out["resize_x"], out["resize_y"] = _number(params["Hires resize-1"], True) or 0, _number(params.get("Hires resize-2"), True) or 0
    for name, value in (("scale", scale), ("steps", steps), ("denoise", denoise)):
        if value is not None:
            out[name] = value
    for key, name in (("Hires prompt", "prompt"), ("Hires negative prompt", "negative_prompt"), ("Hires sampler", "sampler"),
                      ("Hires schedule type", "scheduler")):
        if isinstance(params.get(key), str):
            out[name] = params[key]
    return out


def request_fields_from_infotext(text: str) -> dict[str, Any]:
    """Form values from any A1111-style infotext (A1111, Forge, Fooocus's a1111 scheme, ours)."""
    return request_fields_from_params(parse_infotext(text))


# Fooocus JSON scheme (and its older label-keyed logs) -> A1111 labels.
_FOOOCUS_KEYS = {
    "prompt": "Prompt", "negative_prompt": "Negative prompt", "full_prompt": "Full prompt",
    "full_negative_prompt": "Full negative prompt", "styles": "Styles", "performance": "Performance",
    "steps": "Steps", "guidance_scale": "CFG scale", "sharpness": "Sharpness", "adm_guidance": "ADM Guidance",
    "base_model": "Model", "base_model_hash": "Model hash", "refiner_model": "Refiner",
    "refiner_model_hash": "Refiner hash", "refiner_switch": "Refiner switch at", "sampler": "Sampler",
    "scheduler": "Schedule type", "seed": "Seed", "vae": "VAE", "clip_skip": "Clip skip", "version": "Version",
    "created_by": "User", "lora_hashes": "Lora hashes", "lora_weights": "Lora weights",
    "adaptive_cfg": "Adaptive CFG", "cfg_mimicking_from_tsnr": "Adaptive CFG", "freeu": "FreeU",
    "refiner_swap_method": "Refiner Swap Method", "prompt_expansion": "Fooocus V2 Expansion",
    "fooocus_v2_expansion": "Fooocus V2 Expansion",
}
_RE_PAIR = re.compile(r"(\d+)\s*[,x×*]\s*(\d+)")


def _model_stem(value: Any) -> str:
    name = str(value).replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".safetensors", ".ckpt", ".pt", ".pth", ".bin"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def normalize_fooocus(data: dict[str, Any]) -> dict[str, Any]:
    """Fooocus's JSON `parameters` (snake_case keys, or "Guidance Scale"-style labels) -> A1111 labels."""
    out: dict[str, Any] = {}
    weights: list[str] = []
    hashes: list[str] = []
    for label, value in data.items():
        key = str(label).strip().lower().replace(" ", "_")
        if key == "resolution":
            pair = _RE_PAIR.search(str(value))
            if pair:
                out["Size-1"], out["Size-2"] = int(pair.group(1)), int(pair.group(2))
        elif key == "loras" and isinstance(value, list):
            for item in value:
                if isinstance(item, (list, tuple)) and len(item) >= 2:
                    weights.append(f"{_model_stem(item[0])}: {item[1]}")
                    if len(item) >= 3 and item[2]:
                        hashes.append(f"{_model_stem(item[0])}: {item[2]}")
        elif (key.startswith("lora_combined_") or key.startswith("lora_")) and " : " in str(value):
            name, _, weight = str(value).rpartition(" : ")
            weights.append(f"{_model_stem(name)}: {weight.strip()}")
        elif key in ("full_prompt", "full_negative_prompt") and isinstance(value, list):
            out[_FOOOCUS_KEYS[key]] = ", ".join(str(v) for v in value)
        elif key == "styles":
            out["Styles"] = _parse_list(value) or value
        elif key in ("base_model", "refiner_model", "vae"):
            if value not in (None, "", "None", "Default (model)"):
                out[_FOOOCUS_KEYS[key]] = _model_stem(value)
        elif key in ("steps", "seed", "clip_skip", "guidance_scale", "sharpness", "refiner_switch", "adaptive_cfg",
                     "cfg_mimicking_from_tsnr"):
            number = _number(value, integer=key in ("steps", "seed", "clip_skip"))
            out[_FOOOCUS_KEYS[key]] = value if number is None else number
        else:
            out[_FOOOCUS_KEYS.get(key, str(label))] = value
    for key, items in (("Lora weights", weights), ("Lora hashes", hashes)):
        if items and key not in out:
            out[key] = ", ".join(items)
    return {"Prompt": "", "Negative prompt": "", **out}


# --------------------------------------------------------------------------------------------- reading


def decode_user_comment(value: Any) -> str:
    """EXIF UserComment in every encoding A1111-family tools write: UNICODE (UTF-16 BE or LE), ASCII, JIS."""
    if isinstance(value, str):
        return value.strip("\0")
    if not isinstance(value, (bytes, bytearray)):
        return ""
    data = bytes(value)
    prefix, body = data[:8], data[8:]
    if prefix == UNICODE_PREFIX:
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            encoding, body = ("utf-16-le" if body[:2] == b"\xff\xfe" else "utf-16-be"), body[2:]
        else:  # no BOM: ASCII characters put their zero byte first in big-endian, second in little-endian
            encoding = "utf-16-le" if body[1::2].count(0) > body[0::2].count(0) else "utf-16-be"
        text = body[: len(body) // 2 * 2].decode(encoding, errors="replace")
    elif prefix == b"JIS\0\0\0\0\0":
        text = body.decode("shift_jis", errors="replace")
    elif prefix in (b"ASCII\0\0\0", b"\0" * 8):
        text = body.decode("utf-8", errors="replace")
    else:
        text = data.decode("utf-8", errors="ignore")  # A1111's fallback for comments without a prefix
    return text.strip("\0")


def _text(value: Any) -> str | None:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None


def _collect(image: Image.Image) -> dict[str, Any]:
    """Text chunks and the EXIF strings that can hold parameters; each read may fail on its own."""
    raw: dict[str, Any] = {}
    info = dict(image.info or {})
    try:
        chunks = getattr(image, "text", None)  # PNG: also finds chunks written after the image data
        if isinstance(chunks, dict):
            info.update(chunks)
    except Exception as exc:  # truncated PNG: keep what image.info already had
        log.info("text chunks after the image data could not be read (%s): %s", type(exc).__name__, exc)
    for key, value in info.items():
        if key in ("exif", "icc_profile", "xmp", "photoshop"):
            continue
        text = _text(value) if isinstance(value, str) or key in ("comment", "parameters", EASEL_KEY) else None
        if text is not None:
            raw[str(key)] = text
    try:
        exif = image.getexif()
        sub = exif.get_ifd(EXIF_IFD) if EXIF_IFD in exif else {}
    except Exception as exc:  # damaged EXIF: the text chunks found so far still count
        log.info("EXIF could not be read (%s): %s", type(exc).__name__, exc)
        return raw
    for name, tag in (("exif_user_comment", USER_COMMENT), ("exif_maker_note", MAKER_NOTE)):
        value = sub.get(tag, exif.get(tag))
        if value is not None:
            raw[name] = decode_user_comment(value) if tag == USER_COMMENT else (_text(value) or "")
    for name, tag in (("exif_image_description", IMAGE_DESCRIPTION), ("exif_software", SOFTWARE)):
        if exif.get(tag) is not None:
            raw[name] = (_text(exif.get(tag)) or "").strip("\0")
    return raw


def _json_dict(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _easel_record(text: Any) -> dict[str, Any] | None:
    data = _json_dict(text) or {}
    return data if str(data.get("app", "")).startswith(APP_NAME) and isinstance(data.get("params"), dict) else None


def _interpret(raw: dict[str, Any]) -> ImageMetadata:
    meta = ImageMetadata(source_app="unknown", raw=raw)
    record = _easel_record(raw.get(EASEL_KEY)) or _easel_record(raw.get("exif_image_description"))
    if record:
        meta.source_app = "easel"
        meta.image_params = record["params"]
        meta.request = record.get("request") if isinstance(record.get("request"), dict) else None
    text = next((raw[k] for k in ("parameters", "exif_user_comment", "comment") if str(raw.get(k) or "").strip()), None)
    if text is None:
        return meta
    software = str(raw.get("exif_software", "")).lower()
    fooocus_data = _json_dict(text)
    if fooocus_data is not None:  # Fooocus's own scheme stores a JSON object as `parameters`
        meta.params = normalize_fooocus(fooocus_data)
        if not record:
            meta.source_app = "fooocus"
        return meta
    meta.infotext = text
    meta.params = parse_infotext(text)
    if record:
        return meta
    version = str(meta.params.get("Version", "")).strip()
    if version.startswith(APP_NAME):
        meta.source_app = "easel"  # our infotext whose JSON was lost (e.g. a JPEG over the EXIF limit)
    elif "fooocus_scheme" in raw or software.startswith("fooocus") or version.lower().startswith("fooocus"):
        meta.source_app = "fooocus"
    elif any(k in meta.params for k in _PARAM_LINE_KEYS):
        meta.source_app = "a1111"
    return meta


def read_metadata(source: Path | str | bytes | Image.Image) -> ImageMetadata:
    """Metadata of an image file, bytes or opened PIL image; only unreadable image data raises."""
    if isinstance(source, Image.Image):
        return _read_image(source)
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            image = Image.open(io.BytesIO(bytes(source)))
        else:
            image = Image.open(Path(source))
    except (OSError, ValueError, TypeError, SyntaxError, Image.DecompressionBombError) as exc:
        name = "The uploaded data" if isinstance(source, (bytes, bytearray, memoryview)) else f"{source}"
        reason = exc.__class__.__name__
        raise InvalidRequest(f"{name} is not an image Easel can read ({reason}).", field="image") from exc
    with image:
        return _read_image(image)


def _read_image(image: Image.Image) -> ImageMetadata:
    raw: dict[str, Any] = {}
    try:
        raw = _collect(image)
        return _interpret(raw)
    except Exception:  # foreign or damaged metadata is "unknown", never a failure; the log says why
        log.warning("image metadata could not be interpreted; read as unknown", exc_info=True)
        return ImageMetadata(source_app="unknown", raw=raw)

