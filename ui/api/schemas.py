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


class ProcessingRequest(A1111Model):
    """What A1111's txt2img and img2img both take (StableDiffusionProcessing). Fields Easel does not implement
    (refiner checkpoint, face restoration, variation seeds, scripts...) are accepted and, when set, listed in
    the answer's `info` under `ignored_fields`."""

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
    s_min_uncond: Float | None = None
    s_churn: Float | None = None
    s_tmax: Float | None = None
    s_tmin: Float | None = None
    s_noise: Float | None = None
    override_settings: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Options for this request only: sd_model_checkpoint, sd_vae, CLIP_stop_at_last_layers, samples_format, "
            "token_merging_ratio."
        ),
    )
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = Field(None, description="An SDXL refiner (or SDXL model) to finish the image.")
    refiner_switch_at: Float | None = Field(
        None,
        description="Fraction of the steps the base model makes before the refiner (default 0.8).",
        **_range("refiner_switch"),
    )
    disable_extra_networks: bool = False
    comments: dict[str, Any] | None = None
    force_task_id: str | None = None
    sampler_index: str = Field("Euler", description="Old name of sampler_name, used when sampler_name is not given.")
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    # Fooocus's sampling controls (A1111 has none of them; named as the Fooocus API names them). Off by default,
    # so an A1111 client gets A1111's image; Easel's page starts from Fooocus's values.
    sharpness: Float = Field(0.0, description="Fooocus's sharpness, 0-30 (Fooocus uses 2); 0 = off.", **_range("sharpness"))
    adaptive_cfg: Float = Field(
        0.0,
        description="Fooocus's CFG mimicking from TSNR: above this guidance, early steps guide as at it (Fooocus: 7); 0 = off.",
        **_range("adaptive_cfg"),
    )
    adm_scaler_positive: Float = Field(
        1.0, description="SDXL ADM guidance: size-conditioning scale of the prompt (Fooocus: 1.5).", **_range("adm_positive")
    )
    adm_scaler_negative: Float = Field(1.0, description="… of the negative prompt (Fooocus: 0.8).", **_range("adm_negative"))
    adm_scaler_end: Float = Field(
        0.0, description="… until this fraction of the steps (Fooocus: 0.3); 0 = off.", **_range("adm_end")
    )
    freeu_enabled: bool = Field(False, description="FreeU (diffusers' implementation) with the four factors below.")
    freeu_b1: Float = Field(1.01, description="FreeU: backbone scale of the first up-block.", **_range("freeu_b1"))
    freeu_b2: Float = Field(1.02, description="FreeU: backbone scale of the second up-block.", **_range("freeu_b2"))
    freeu_s1: Float = Field(0.99, description="FreeU: skip scale of the first up-block.", **_range("freeu_s1"))
    freeu_s2: Float = Field(0.95, description="FreeU: skip scale of the second up-block.", **_range("freeu_s2"))
    refiner_swap_method: str = Field(
        "joint", description="How the refiner takes over: joint (one sampling run, as A1111 does), separate, or vae."
    )
    prompt_expansion: str | None = Field(
        None,
        description="A prompt-expansion model (models/prompt_expansion) adding words to the prompt; "
        '"Fooocus V2" among `styles` picks the first one installed.',
    )
    send_images: bool = Field(True, description="Return the images as base64 in `images`.")
    save_images: bool = Field(False, description="Also write the images to the output folder and the history.")
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None
    # Easel's own (A1111 clients leave them out): a performance mode, and CPU Turbo's approximations
    performance: str | None = Field(
        None, description="Easel: a performance mode (Speed, Quality, CPU Turbo...) setting steps, guidance, sampler, LoRA."
    )
    step_cache: Int = Field(0, description="Easel: step caching, only every Nth step runs the whole UNet (0: off).")
    token_merging: Float = Field(
        0.0, description="Easel: token merging ratio, 0 to 0.75 (A1111's override_settings.token_merging_ratio also works)."
    )
    fast_decode: bool = Field(False, description="Easel: decode the final image with TAESD when installed.")


class Txt2ImgRequest(ProcessingRequest):
    """A1111's StableDiffusionProcessingTxt2Img, with its hires fix (enable_hr and the hr_* fields)."""

    denoising_strength: Float | None = Field(
        0.75, ge=0, le=1, allow_inf_nan=False, description="Hires fix: strength of the second pass."
    )
    firstpass_image: str | None = None
    enable_hr: bool = Field(False, description="Hires fix: make the image at width x height, upscale it, denoise it again.")
    firstphase_width: Int = 0
    firstphase_height: Int = 0
    hr_scale: Float = Field(2.0, allow_inf_nan=False, description="Hires fix: upscale factor (when hr_resize_x/y are 0).")
    hr_upscaler: str | None = Field(
        None, description="Hires fix: a latent mode (latent-upscale-modes) or an upscaler (upscalers); default Latent."
    )
    hr_second_pass_steps: Int = Field(0, description="Hires fix: steps of the second pass; 0 = steps.")
    hr_resize_x: Int = Field(0, description="Hires fix: target width (0 with hr_resize_y set: in proportion).")
    hr_resize_y: Int = Field(0, description="Hires fix: target height.")
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = Field(None, description="Hires fix: the second pass's sampler; none = the same.")
    hr_scheduler: str | None = None
    hr_prompt: str = Field("", description="Hires fix: the second pass's prompt; '' = the same.")
    hr_negative_prompt: str = ""


class Img2ImgRequest(ProcessingRequest):
    """A1111's StableDiffusionProcessingImg2Img. With a `mask` it is an inpaint: the masked (white) part is re-made
    and the rest kept as it was, with A1111's mask blur, masked content, "only masked" and invert."""

    init_images: list[str] | None = Field(None, description="The image to start from, base64 (a data: URL prefix is fine).")
    resize_mode: Int = Field(0, ge=0, le=3, description="0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale.")
    denoising_strength: Float | None = Field(
        0.75, ge=0, le=1, allow_inf_nan=False, description="How much of the image is re-made, 0 to 1."
    )
    image_cfg_scale: Float | None = None
    mask: str | None = Field(
        None, description="Inpainting mask, base64: white (or opaque) is re-made; another size is resized to the image."
    )
    mask_blur_x: Int = Field(4, ge=0, description="Mask blur along x (Gaussian sigma, pixels).")
    mask_blur_y: Int = Field(4, ge=0, description="Mask blur along y.")
    mask_blur: Int | None = Field(None, ge=0, description="Mask blur along both; when given, it sets mask_blur_x and _y.")
    mask_round: bool = True
    inpainting_fill: Int = Field(
        0, ge=0, le=3, description="Masked content: 0 fill, 1 original, 2 latent noise, 3 latent nothing."
    )
    inpaint_full_res: bool | int = Field(
        True, description="Only masked: the masked region (with padding) is worked at width x height and pasted back."
    )
    inpaint_full_res_padding: Int = Field(0, ge=0, description="Only masked: pixels of context around the mask.")
    inpainting_mask_invert: Int = Field(0, ge=0, le=1, description="1: re-make what is not masked.")
    initial_noise_multiplier: Float | None = Field(
        None, allow_inf_nan=False, description="The start noise scaled (A1111's Noise multiplier for img2img); default 1."
    )
    latent_mask: str | None = None
    include_init_images: bool = Field(False, description="Send init_images and mask back in `parameters`.")


class TextToImageResponse(BaseModel):
    images: list[str] | None = Field(None, description="The images, base64-encoded files with their metadata.")
    parameters: dict[str, Any] = Field(description="The request as understood, defaults filled in.")
    info: str = Field(description="A JSON string: seeds, prompts, infotexts, sampler, model... as A1111 writes it.")


class ImageToImageResponse(TextToImageResponse):
    pass


class ExtrasBaseRequest(A1111Model):
    """A1111's extras (postprocessing) settings; Easel has no face restoration, so gfpgan/codeformer are ignored."""

    resize_mode: Int = Field(0, ge=0, le=1, description="0: upscale by upscaling_resize; 1: to upscaling_resize_w x _h.")
    show_extras_results: bool = True
    gfpgan_visibility: Float = Field(0, ge=0, le=1)
    codeformer_visibility: Float = Field(0, ge=0, le=1)
    codeformer_weight: Float = Field(0, ge=0, le=1)
    upscaling_resize: Float = Field(2, gt=0, allow_inf_nan=False, description="Upscale factor (resize_mode 0).")
    upscaling_resize_w: Int = Field(512, ge=1)
    upscaling_resize_h: Int = Field(512, ge=1)
    upscaling_crop: bool = Field(True, description="resize_mode 1: crop to the target's proportions rather than stretch.")
    upscaler_1: str = Field("None", description="An upscaler from /upscalers.")
    upscaler_2: str = Field("None", description="A second upscaler, blended in at extras_upscaler_2_visibility.")
    extras_upscaler_2_visibility: Float = Field(0, ge=0, le=1)
    upscale_first: bool = False


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: str = Field("", description="The image, base64.")


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: str | None = None


class FileData(BaseModel):
    data: str = Field(description="The image, base64.")
    name: str


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData]  # noqa: N815 - A1111's name


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]


class UpscalerItem(A1111Model):
    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None


class LatentUpscalerModeItem(A1111Model):
    name: str


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
    token_merging_ratio: float = Field(0.0, description="Token merging ratio used when a request does not say (0: off).")
    outdir_samples: str = Field("", description="Read-only: where images are saved.")


class OptionsUpdate(A1111Model):
    sd_model_checkpoint: str | None = None
    sd_vae: str | None = None
    samples_format: str | None = None
    CLIP_stop_at_last_layers: Int | None = Field(None, **_range("clip_skip"))
    token_merging_ratio: Float | None = Field(None, **_range("token_merging"))
