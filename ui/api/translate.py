"""A1111 payloads <-> Easel's GenerationRequest / GenerationResult / queue state.

Pure translation: the request a txt2img payload means (the same GenerationRequest the page would build
for the same settings), and the A1111 answer a finished job gives (`images`, `parameters`, `info`).
No generation logic lives here; the pipeline manager does the work, the router only delegates.
"""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

from PIL import Image

from pipelines import (
    APP_NAME,
    FOOOCUS_V2,
    LIMITS,
    EaselError,
    GenerationRequest,
    GenerationResult,
    HiresFix,
    ImageInput,
    InvalidRequest,
    JobInfo,
    JobQueue,
    JobState,
    Services,
    __version__,
    encode_image,
    normalize_format,
)
from ui.api.catalog import find_checkpoint
from ui.api.options import ApiOptions
from ui.api.schemas import Img2ImgRequest, ProcessingRequest, ProgressResponse, ProgressState, Txt2ImgRequest

# GenerationRequest field -> the A1111 field a client sent it as (used to name the field in a 422).
A1111_FIELD = {
    "sampler": "sampler_name",
    "image_count": "batch_size",
    "clip_skip": "override_settings.CLIP_stop_at_last_layers",
    "output_format": "override_settings.samples_format",
    "model": "override_settings.sd_model_checkpoint",
    "vae": "override_settings.sd_vae",
    "loras": "prompt",  # A1111 clients name LoRAs with <lora:name:weight> tags in the prompt
    "input.image": "init_images",
    "input.denoise": "denoising_strength",
    "input.resize_mode": "resize_mode",
    "input.scale": "upscaling_resize",
    "input.upscaler": "upscaler_1",
    "input.upscaler_2": "upscaler_2",
    "input.upscaler_2_visibility": "extras_upscaler_2_visibility",
    "input.mask": "mask",
    "input.mask_blur_x": "mask_blur_x",
    "input.mask_blur_y": "mask_blur_y",
    "input.inpaint_fill": "inpainting_fill",
    "input.only_masked_padding": "inpaint_full_res_padding",
    "input.noise_multiplier": "initial_noise_multiplier",
    "hires.scale": "hr_scale",
    "hires.resize_x": "hr_resize_x",
    "hires.resize_y": "hr_resize_y",
    "hires.upscaler": "hr_upscaler",
    "hires.steps": "hr_second_pass_steps",
    "hires.denoise": "denoising_strength",
    "hires.sampler": "hr_sampler_name",
    "hires": "enable_hr",
    "refiner": "refiner_checkpoint",
    "refiner_switch": "refiner_switch_at",
    "refiner_swap": "refiner_swap_method",
    "adm_positive": "adm_scaler_positive",
    "adm_negative": "adm_scaler_negative",
    "adm_end": "adm_scaler_end",
    "freeu": "freeu_enabled",
}
RESIZE_MODES = ("just_resize", "crop_and_resize", "resize_and_fill", "latent_upscale")  # A1111's resize_mode 0-3
INPAINTING_FILL = ("fill", "original", "latent_noise", "latent_nothing")  # A1111's inpainting_fill 0-3
_SAME = ("", "use same sampler", "use same scheduler", "none")  # A1111's words for "as the first pass"

# A1111 features Easel does not implement: field -> the values that mean "off". A request that turns one
# on still runs (as A1111 runs with an unknown extension's args), and the answer's info lists the field.
UNSUPPORTED_WHEN_NOT: dict[str, tuple[Any, ...]] = {
    "subseed_strength": (0, 0.0),
    "seed_resize_from_h": (-1, 0),
    "seed_resize_from_w": (-1, 0),
    "restore_faces": (None, False),
    "tiling": (None, False),
    "script_name": (None, ""),
    "script_args": ([],),
    "alwayson_scripts": ({},),
    "firstpass_image": (None, ""),
    "latent_mask": (None, ""),  # a second mask for the latent blend: the mask itself is used
    "mask_round": (True,),  # masks are always made binary at 128
    "eta": (None, 1, 1.0),  # A1111's default eta for ancestral samplers, which diffusers uses too
    "s_churn": (None, 0, 0.0),
    "s_noise": (None, 1, 1.0),
}


def a1111_field(name: str | None) -> str:
    return A1111_FIELD.get(name or "", name or "body")


def ignored_fields(payload: ProcessingRequest) -> list[str]:
    """The A1111 features the payload turns on that Easel does not have."""
    names = [name for name, off in UNSUPPORTED_WHEN_NOT.items() if getattr(payload, name, off[0]) not in off]
    if len(getattr(payload, "init_images", None) or ()) > 1:
        names.append("init_images")  # one input image per job: the first is used
    return names


def override_setting(overrides: dict[str, Any], name: str, default: Any) -> Any:
    """An override_settings value, or the API-wide option when the request leaves it out (or sends null)."""
    value = overrides.get(name)
    return default if value is None else value


def whole_number(value: Any) -> int | None:
    """7, 7.0 or "7" -> 7 (A1111 takes settings loosely); anything else -> None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def request_from_txt2img(payload: Txt2ImgRequest, services: Services, options: ApiOptions) -> GenerationRequest:
    """The request a txt2img payload means, its hires fix included."""
    request = base_request(payload, services, options)
    if not payload.enable_hr:
        return request
    hires = HiresFix(
        scale=payload.hr_scale,
        resize_x=payload.hr_resize_x,
        resize_y=payload.hr_resize_y,
        upscaler=payload.hr_upscaler or "Latent",
        steps=payload.hr_second_pass_steps,
        denoise=0.75 if payload.denoising_strength is None else payload.denoising_strength,
        prompt=payload.hr_prompt,
        negative_prompt=payload.hr_negative_prompt,
        sampler="" if str(payload.hr_sampler_name or "").lower() in _SAME else str(payload.hr_sampler_name),
        scheduler="" if str(payload.hr_scheduler or "").lower() in _SAME else str(payload.hr_scheduler),
    )
    return request.replace(hires=hires)


def request_from_img2img(
    payload: Img2ImgRequest, services: Services, options: ApiOptions, image: bytes, mask: bytes | None = None
) -> GenerationRequest:
    """The request an img2img payload means, its first init image (and its mask) stored in the input store, which
    checks them and names the field of one that is not an image. A mask makes it an inpaint, in A1111's terms."""
    denoise = 0.75 if payload.denoising_strength is None else payload.denoising_strength
    request = base_request(payload, services, options)
    stored = services.inputs.put(image, field="init_images")
    multiplier = 1.0 if payload.initial_noise_multiplier is None else payload.initial_noise_multiplier
    part = ImageInput(
        stored.sha256,
        mode="img2img",
        denoise=denoise,
        resize_mode=RESIZE_MODES[payload.resize_mode],
        noise_multiplier=multiplier,
    )
    if mask is not None:
        blur_x, blur_y = (
            (payload.mask_blur, payload.mask_blur)
            if payload.mask_blur is not None
            else (payload.mask_blur_x, payload.mask_blur_y)
        )
        part = part.replace(
            mask=services.inputs.put_mask(mask, field="mask").sha256,
            mask_blur_x=blur_x,
            mask_blur_y=blur_y,
            inpaint_fill=INPAINTING_FILL[payload.inpainting_fill],
            only_masked=bool(payload.inpaint_full_res),
            only_masked_padding=payload.inpaint_full_res_padding,
            invert_mask=bool(payload.inpainting_mask_invert),
        )
    return request.replace(input=part)


def base_request(payload: ProcessingRequest, services: Services, options: ApiOptions) -> GenerationRequest:
    """The GenerationRequest a payload means (the queue checks it at submit); InvalidRequest / ModelNotFound
    name the field at fault for what only the API knows: the checkpoint option, CLIP skip, format, batch."""
    overrides = payload.override_settings or {}
    model_text = overrides.get("sd_model_checkpoint")
    record = find_checkpoint(services.registry, model_text) if model_text else services.manager.default_record()
    if not record.usable:
        raise InvalidRequest(f"{record.name} cannot be used: {record.note}.", field="model")

    given = override_setting(overrides, "CLIP_stop_at_last_layers", options.clip_skip)
    clip_skip = whole_number(given)
    low, high = LIMITS["clip_skip"]
    if clip_skip is None or not low <= clip_skip <= high:
        raise InvalidRequest(
            f"CLIP_stop_at_last_layers must be a whole number from {low:g} to {high:g}, got {given!r}.", field="clip_skip"
        )
    fmt = override_setting(overrides, "samples_format", options.output_format)
    try:
        fmt = normalize_format(fmt)
    except InvalidRequest as exc:
        raise InvalidRequest(str(exc), field="output_format") from exc

    count = payload.batch_size * payload.n_iter
    if count > LIMITS["image_count"][1]:
        raise InvalidRequest(
            f"batch_size × n_iter must be at most {LIMITS['image_count'][1]:g} images, got {count}.", field="image_count"
        )
    styles = tuple(payload.styles or ())
    request = GenerationRequest(
        prompt=payload.prompt,
        negative_prompt=payload.negative_prompt,
        styles=tuple(s for s in styles if s != FOOOCUS_V2),
        model=record.name,  # pinned now: a later options change does not move a job already queued
        width=payload.width,
        height=payload.height,
        steps=payload.steps,
        cfg_scale=payload.cfg_scale,
        sampler=payload.sampler_name or payload.sampler_index,
        scheduler=payload.scheduler or "Automatic",
        seed=payload.seed,
        image_count=count,
        clip_skip=clip_skip,
        output_format=fmt,
        vae=str(override_setting(overrides, "sd_vae", options.vae)),
        save_images=payload.save_images and not payload.do_not_save_samples,
        **refiner_fields(payload, services),
        sharpness=payload.sharpness,
        adaptive_cfg=payload.adaptive_cfg,
        adm_positive=payload.adm_scaler_positive,
        adm_negative=payload.adm_scaler_negative,
        adm_end=payload.adm_scaler_end,
        freeu=payload.freeu_enabled,
        freeu_b1=payload.freeu_b1,
        freeu_b2=payload.freeu_b2,
        freeu_s1=payload.freeu_s1,
        freeu_s2=payload.freeu_s2,
        refiner_swap=payload.refiner_swap_method,
        prompt_expansion=expansion_model(payload.prompt_expansion, FOOOCUS_V2 in styles),
        performance=payload.performance or None,
        step_cache=payload.step_cache,
        token_merging=override_setting(
            overrides,
            "token_merging_ratio",
            payload.token_merging if "token_merging" in payload.model_fields_set else options.token_merging,
        ),
        fast_decode=payload.fast_decode,
    )
    return request


def refiner_fields(payload: Txt2ImgRequest, services: Services) -> dict[str, Any]:
    """A1111's refiner_checkpoint (a title, file or model name) and refiner_switch_at, as the engine's fields."""
    name = (payload.refiner_checkpoint or "").strip()
    if name.lower() in ("", "none"):
        return {}
    try:
        record = find_checkpoint(services.registry, name)
    except EaselError as exc:
        raise InvalidRequest(f"Refiner: {exc}", field="refiner") from exc
    switch = 0.8 if payload.refiner_switch_at is None else payload.refiner_switch_at
    return {"refiner": record.name, "refiner_switch": switch}


def expansion_model(name: str | None, fooocus_v2: bool) -> str:
    """The prompt-expansion model asked for: by name, or "Fooocus V2" (the first one installed, the engine
    resolves it) when `styles` holds that name, as Fooocus's own style list does."""
    return name or (FOOOCUS_V2 if fooocus_v2 else "")


# -- the answer


def image_files(result: GenerationResult, request: GenerationRequest) -> list[bytes]:
    """Each image as a file with its metadata: the saved file when there is one, else the same bytes made in memory."""
    files = []
    for item in result.images:
        if item.path is not None and item.path.exists():
            files.append(item.path.read_bytes())
        elif item.image is not None:
            files.append(encode_image(item.image, item.params, request, request.output_format))
        else:
            raise RuntimeError(f"image {item.params.seed} of job {result.job_id} is no longer in memory")
    return files


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def timestamp(seconds: float | None) -> str:
    """A1111's job_timestamp: local time as YYYYmmddHHMMSS ("0" before a job starts)."""
    return time.strftime("%Y%m%d%H%M%S", time.localtime(seconds)) if seconds else "0"


def info_json(payload: ProcessingRequest, request: GenerationRequest, job: JobInfo) -> str:
    """A1111's `info`: Processed.js() keys, from the images made (or the request when none was)."""
    result = job.result or GenerationResult(job.job_id)
    params = [item.params for item in result.images]
    first = params[0] if params else None
    seeds = [p.seed for p in params]
    info: dict[str, Any] = {
        "prompt": first.prompt if first else request.prompt,
        "all_prompts": [p.prompt for p in params],
        "negative_prompt": first.negative_prompt if first else request.negative_prompt,
        "all_negative_prompts": [p.negative_prompt for p in params],
        "seed": seeds[0] if seeds else request.seed,
        "all_seeds": seeds,
        "subseed": payload.subseed,
        "all_subseeds": [payload.subseed] * len(seeds),
        "subseed_strength": payload.subseed_strength,
        "width": request.width,
        "height": request.height,
        "sampler_name": first.sampler if first else request.sampler,
        "scheduler": first.scheduler if first else request.scheduler,
        "cfg_scale": request.cfg_scale,
        "steps": request.steps,
        "batch_size": payload.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": first.model if first else request.model,
        "sd_model_hash": first.model_hash if first else None,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": getattr(payload, "denoising_strength", None),
        "extra_generation_params": {"Schedule type": first.scheduler if first else request.scheduler},
        "index_of_first_image": 0,  # no grid image is prepended
        "infotexts": [item.infotext for item in result.images],
        "styles": list(request.styles),
        "job_timestamp": timestamp(job.started_at),
        "clip_skip": request.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": f"{APP_NAME} {__version__}",
        # Easel's additions
        "job_id": job.job_id,
        "interrupted": job.state is JobState.CANCELLED,
        "skipped_images": result.skipped,
        "image_paths": [str(item.path) for item in result.images if item.path is not None],
        "ignored_fields": ignored_fields(payload),
    }
    return json.dumps(info, ensure_ascii=False)


# -- progress


def png_b64(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, "PNG")
    return b64(out.getvalue())


def progress_of(queue: JobQueue, with_image: bool = True) -> ProgressResponse:
    """A1111's progress for whatever runs now, a page job or an API job: one queue, one worker."""
    waiting = queue.counts()["waiting"]
    job = queue.running()
    if job is None:
        return ProgressResponse(progress=0.0, eta_relative=0.0, state=ProgressState(queue_pending=waiting))
    latest = queue.latest_progress()
    preview = queue.latest_preview() if with_image else None
    state = ProgressState(
        skipped=job.skip_requested,
        interrupted=job.cancel_requested,
        job=job.job_id,
        job_count=job.image_count,
        job_timestamp=timestamp(job.started_at),
        job_no=job.image_index,
        sampling_step=job.step,
        sampling_steps=job.total_steps,
        queue_pending=waiting,
    )
    text = f"Step {job.step}/{job.total_steps}" if job.total_steps else "Starting"
    if job.image_count > 1:
        text += f", image {job.image_index + 1}/{job.image_count}"
    return ProgressResponse(
        progress=min(1.0, latest.fraction) if latest else 0.0,
        eta_relative=float(latest.eta_seconds or 0.0) if latest else 0.0,
        state=state,
        current_image=png_b64(preview) if preview is not None else None,
        textinfo=text,
    )
