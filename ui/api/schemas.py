"""Request and response bodies of the /sdapi/v1 API, with AUTOMATIC1111's field names and defaults.

Clients written for A1111 send its JSON as it is, so the names, the defaults (steps 50, sampler Euler,
save_images false...) and the response shapes follow A1111's API. Unknown fields are ignored, as A1111
does; a value of the wrong type or out of range is refused (HTTP 422) with the field named. The ranges
come from the engine's validation table, the same limits the page has.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from pipelines import LIMITS


def _not_bool(value: Any) -> Any:
    """Lax numbers ("7", 7.0) as A1111 accepts them, but not true/false, which are a client's mistake."""
    if isinstance(value, bool):
        raise ValueError("a number is expected, not true/false")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]


def _range(name: str) -> dict[str, float]:
    low, high = LIMITS[name]
    return {"ge": low, "le": high}


class A1111Model(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=(), populate_by_name=True)


class Txt2ImgRequest(A1111Model):
    """A1111's StableDiffusionProcessingTxt2Img as its API takes it. Fields Easel does not implement
    (hires fix, refiner, face restoration, scripts...) are accepted and, when set, listed in the answer's
    `info` under `ignored_fields`."""

    prompt: str = Field("", description="The prompt.")
    negative_prompt: str = Field("", description="The negative prompt.")
    styles: list[str] | None = Field(None, description="Names of saved styles to apply (see prompt-styles).")
    seed: Int = Field(-1, description="-1 picks a random seed; image i of a batch gets seed + i.", **_range("seed"))
    subseed: Int = Field(-1, description="Accepted for compatibility; variation seeds are not implemented.")
    subseed_strength: Float = Field(0.0, description="Variation strength; not implemented (reported when not 0).")
    seed_resize_from_h: Int = -1
    seed_resize_from_w: Int = -1
    sampler_name: str | None = Field(
        None, description="Sampler, e.g. 'DPM++ 2M' or the combined 'DPM++ 2M Karras' (see samplers)."
    )
    scheduler: str | None = Field(None, description="Schedule type, e.g. 'Karras' or 'karras' (see schedulers).")
    batch_size: Int = Field(1, ge=1, le=int(LIMITS["image_count"][1]), description="Images per batch.")
    n_iter: Int = Field(1, ge=1, le=int(LIMITS["image_count"][1]), description="Batches; batch_size × n_iter images in all.")
    steps: Int = Field(50, description="Sampling steps.", **_range("steps"))
    cfg_scale: Float = Field(7.0, allow_inf_nan=False, description="Classifier-free guidance scale.", **_range("cfg_scale"))
    width: Int = Field(512, description="Width in pixels, a multiple of 8.", **_range("width"))
    height: Int = Field(512, description="Height in pixels, a multiple of 8.", **_range("height"))
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: Float | None = None
    denoising_strength: Float | None = None
    s_min_uncond: Float | None = None
    s_churn: Float | None = None
    s_tmax: Float | None = None
    s_tmin: Float | None = None
    s_noise: Float | None = None
    override_settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Options for this request only: sd_model_checkpoint, sd_vae, CLIP_stop_at_last_layers, samples_format.",
    )
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: Float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    enable_hr: bool = False
    firstphase_width: Int = 0
    firstphase_height: Int = 0
    hr_scale: Float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: Int = 0
    hr_resize_x: Int = 0
    hr_resize_y: Int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    force_task_id: str | None = None
    sampler_index: str = Field("Euler", description="Old name of sampler_name, used when sampler_name is not given.")
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = Field(True, description="Return the images as base64 in `images`.")
    save_images: bool = Field(False, description="Also write the images to the output folder and the history.")
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None
    # Easel's own (A1111 clients leave them out): a performance mode, and CPU Turbo's approximations
    performance: str | None = Field(
        None, description="Easel: a performance mode (Speed, Quality, CPU Turbo...) setting steps, guidance, sampler, LoRA."
    )
    step_cache: Int = Field(0, description="Easel: step caching, only every Nth step runs the whole UNet (0: off).")
    fast_decode: bool = Field(False, description="Easel: decode the final image with TAESD when installed.")


class TextToImageResponse(BaseModel):
    images: list[str] | None = Field(None, description="The images, base64-encoded files with their metadata.")
    parameters: dict[str, Any] = Field(description="The request as understood, defaults filled in.")
    info: str = Field(description="A JSON string: seeds, prompts, infotexts, sampler, model... as A1111 writes it.")


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = Field("", description="Id of the running job ('' when idle).")
    job_count: int = Field(0, description="Images in the running job.")
    job_timestamp: str = Field("0", description="When the running job started, YYYYmmddHHMMSS.")
    job_no: int = Field(0, description="Index of the image being made.")
    sampling_step: int = 0
    sampling_steps: int = 0
    queue_pending: int = Field(0, description="Jobs (from the page or the API) waiting behind the running one.")


class ProgressResponse(BaseModel):
    progress: float = Field(description="0 to 1, over all images of the running job.")
    eta_relative: float = Field(description="Seconds left, estimated from the steps done so far.")
    state: ProgressState
    current_image: str | None = Field(None, description="The latest preview as a base64 PNG, when there is one.")
    textinfo: str | None = None


class PNGInfoRequest(A1111Model):
    image: str = Field(description="A base64 image (PNG, JPEG or WebP), optionally as a data: URL.")


class PNGInfoResponse(BaseModel):
    info: str = Field(description="The A1111 infotext ('parameters') the image carries, '' when none.")
    items: dict[str, Any] = Field(description="Every other text the image carries (our JSON record, EXIF text...).")
    parameters: dict[str, Any] = Field(description="The infotext parsed as A1111 does: Prompt, Steps, Size-1...")


class SDModelItem(A1111Model):
    title: str
    model_name: str
    hash: str | None = Field(None, description="sha256[:10], once the file has been hashed (on first load).")
    sha256: str | None = None
    filename: str
    config: str | None = None


class LoraItem(A1111Model):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class SDVaeItem(A1111Model):
    model_name: str = Field(description="What sd_vae takes: the file name (a folder's name for diffusers folders).")
    filename: str


class EmbeddingItem(A1111Model):
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    shape: int | None = Field(None, description="Width of each vector (768 SD 1.x, 1024 SD 2.x; SDXL: clip_g's 1280).")
    vectors: int | None = Field(None, description="How many vectors the name stands for.")


class EmbeddingsResponse(A1111Model):
    loaded: dict[str, EmbeddingItem]
    skipped: dict[str, EmbeddingItem] = Field(description="Files that could not be read, with nothing known of them.")


class SamplerItem(A1111Model):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(A1111Model):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float | None = None
    need_inner_model: bool | None = None


class PromptStyleItem(A1111Model):
    name: str
    prompt: str | None = None
    negative_prompt: str | None = None


class MemoryResponse(BaseModel):
    ram: dict[str, Any] = Field(description="free/used/total bytes: used is this process's resident memory.")
    cuda: dict[str, Any] = Field(description="CUDA memory statistics, or {'error': ...} without a CUDA GPU.")


class Options(A1111Model):
    """The options Easel has. GET lists them; POST sets any of them (others are ignored)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    sd_model_checkpoint: str | None = Field(None, description="Title of the default checkpoint; POST to switch.")
    sd_checkpoint_hash: str | None = Field(None, description="Its sha256, once known (read-only).")
    sd_vae: str = Field(
        "Automatic", description="VAE used when a request does not say: Automatic (the checkpoint's own) or a name from sd-vae."
    )
    samples_format: str = Field("png", description="Format of API images: png, jpg or webp.")
    CLIP_stop_at_last_layers: int = Field(1, description="Clip skip used when a request does not say.")
    outdir_samples: str = Field("", description="Read-only: where images are saved.")


class OptionsUpdate(A1111Model):
    sd_model_checkpoint: str | None = None
    sd_vae: str | None = None
    samples_format: str | None = None
    CLIP_stop_at_last_layers: Int | None = Field(None, **_range("clip_skip"))
