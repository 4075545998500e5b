"""Typed values that cross the boundary between the UI/API and the pipeline manager.

Everything a caller can ask for is a field of `GenerationRequest`; everything it gets back is a
`GenerationResult` made of `ImageResult`s. They are plain dataclasses so that the UI, the HTTP API and
the metadata writer all read the same names, and so that `dataclasses.asdict` gives the JSON we store.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.jobs.events import JobFailed


class Architecture(str, enum.Enum):
    """Model families told apart by the tensors in a checkpoint."""

    SD1 = "sd1"
    SD2 = "sd2"
    SDXL = "sdxl"
    SDXL_REFINER = "sdxl_refiner"
    UNKNOWN = "unknown"

    @property
    def label(self) -> str:
        return _ARCH_LABELS[self]


_ARCH_LABELS = {
    Architecture.SD1: "SD 1.x",
    Architecture.SD2: "SD 2.x",
    Architecture.SDXL: "SDXL",
    Architecture.SDXL_REFINER: "SDXL refiner",
    Architecture.UNKNOWN: "unknown",
}


class ModelKind(str, enum.Enum):
    CHECKPOINT = "checkpoint"
    LORA = "lora"
    VAE = "vae"
    EMBEDDING = "embedding"
    UPSCALER = "upscaler"  # an image upscaling network (ESRGAN, Real-ESRGAN, SwinIR, ...), loaded by spandrel
    PROMPT_EXPANSION = "prompt_expansion"  # a Hugging Face causal-LM folder that continues prompts
    UNKNOWN = "unknown"


class ModelFormat(str, enum.Enum):
    SINGLE_FILE = "single_file"  # .safetensors / .ckpt in the original (A1111/CivitAI) key layout
    DIFFUSERS = "diffusers"  # a folder with model_index.json
    HUB = "hub"  # a Hugging Face hub id, downloaded on first use


@dataclass(frozen=True)
class ModelRecord:
    """A model found on disk (or named on the hub), identified but not loaded."""

    name: str  # what users pick and what metadata records: path relative to its folder, no suffix
    kind: ModelKind
    architecture: Architecture
    format: ModelFormat
    path: Path | None  # None for hub ids not yet downloaded
    hub_id: str | None = None
    size_bytes: int = 0
    config_dir: Path | None = None  # a diffusers config folder beside a single file (non-standard sizes)
    note: str = ""  # why a file is unusable, shown in the UI
    family: str = ""  # an upscaler's network family as spandrel names it (ESRGAN, RealESRGAN Compact, SwinIR, ...)
    inpainting: bool = False  # an inpainting checkpoint (a UNet that also takes the mask and the masked image)

    @property
    def usable(self) -> bool:
        return not self.note


@dataclass(frozen=True)
class LoraRef:
    name: str
    weight: float = 1.0
    enabled: bool = True


class SeedBehavior(str, enum.Enum):
    """How image i of a batch gets its seed."""

    INCREMENT = "increment"  # seed + i, as A1111 does
    RANDOM = "random"  # a fresh random seed per image
    FIXED = "fixed"  # the same seed for every image (useful with wildcards)


@dataclass(frozen=True)
class ImageInput:
    """The input-image part of a request: an image to start from and what to do with it.

    The image is a reference, the sha256 of a file stored by `InputStore` (requests stay JSON). `mode` names a
    row of tables/input_modes.yaml (Vary, Upscale, Inpaint, A1111's img2img); `denoise` and `scale` override the
    mode's. A mask (stored the same way, white = change) or outpaint sides make it an inpaint; the mask fields
    are A1111's (images/masks.py, images/regions.py say what each does), None meaning the mode's own.
    """

    image: str  # sha256 of the stored input image (output_dir/inputs/<sha256>.png)
    mode: str = "img2img"
    denoise: float | None = None  # None: the mode's (A1111's denoising_strength)
    scale: float | None = None  # None: the mode's upscale factor
    size: tuple[int, int] | None = None  # an upscale without a diffusion pass: the exact (width, height), over scale
    resize_mode: str = "just_resize"  # A1111's four modes (images/resize.py), for modes without a scale
    upscaler: str | None = None  # None: the first upscaler model installed, else Lanczos
    upscaler_2: str | None = None  # A1111 extras' second upscaler, blended in at upscaler_2_visibility
    upscaler_2_visibility: float = 0.0
    source: str | None = None  # the result it was made from (its file), for History's click-through
    mask: str | None = None  # sha256 of the stored mask ("L", 255 = change); None: no mask
    mask_blur_x: int = 4  # A1111's mask_blur_x / _y: Gaussian sigma in pixels along x and y (0: a hard edge)
    mask_blur_y: int = 4
    invert_mask: bool = False  # change what is not painted (A1111's inpainting_mask_invert)
    inpaint_fill: str | None = None  # masked content: fill, original, latent_noise, latent_nothing; None: the mode's
    only_masked: bool | None = None  # work on the masked region with `only_masked_padding` around it; None: the mode's
    only_masked_padding: int = 32
    outpaint: tuple[str, ...] = ()  # sides the canvas grows on: left, right, top, bottom
    outpaint_fraction: float = 0.3  # of the picture's width (left, right) or height (top, bottom), per side
    noise_multiplier: float = 1.0  # A1111's initial_noise_multiplier
    inpaint_prompt: str = ""  # Fooocus's additional inpaint prompt, put before the prompt
    inpaint_model: str | None = None  # the checkpoint an inpaint runs on (an inpainting one); None: the job's model

    def __post_init__(self) -> None:
        object.__setattr__(self, "outpaint", tuple(self.outpaint or ()))  # JSON brings a list back
        if self.size is not None:
            object.__setattr__(self, "size", tuple(self.size))

    @property
    def masked(self) -> bool:
        """An inpaint: a mask or outpaint sides."""
        return self.mask is not None or bool(self.outpaint)

    def replace(self, **changes: Any) -> ImageInput:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class HiresFix:
    """A1111's hires fix: the image is made at the request's size, upscaled, and denoised again at the new size."""

    scale: float = 2.0  # hr_scale, used when resize_x/resize_y are 0
    resize_x: int = 0  # hr_resize_x/y: the target size (one of them 0: kept in proportion)
    resize_y: int = 0
    upscaler: str = "Latent"  # a latent mode, a built-in pixel upscaler or an upscaler model
    steps: int = 0  # hr_second_pass_steps; 0: the first pass's steps
    denoise: float = 0.7  # denoising_strength of the second pass
    prompt: str = ""  # hr_prompt; "": the first pass's prompt
    negative_prompt: str = ""
    sampler: str = ""  # hr_sampler_name; "": the first pass's sampler and schedule
    scheduler: str = ""

    def replace(self, **changes: Any) -> HiresFix:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class GenerationRequest:
    """One job: what the user asked for, before styles, wildcards and seeds are resolved."""

    prompt: str = ""
    negative_prompt: str = ""
    styles: tuple[str, ...] = ()
    model: str | None = None  # checkpoint name, or a hub id; None = the configured default
    refiner: str | None = None
    refiner_switch: float = 0.8  # fraction of the steps done by the base model
    vae: str | None = None
    loras: tuple[LoraRef, ...] = ()
    performance: str | None = None  # a performance mode name; None keeps steps/cfg/sampler as given
    width: int = 512
    height: int = 512
    steps: int = 30
    cfg_scale: float = 7.0
    sampler: str = "DPM++ 2M"
    scheduler: str = "Karras"
    seed: int = -1  # -1: random
    seed_behavior: SeedBehavior = SeedBehavior.INCREMENT
    image_count: int = 1
    clip_skip: int = 1
    # Fooocus's sampling controls (pipelines/generation/quality.py). These defaults are neutral, so a request
    # without them (an A1111 API call, an older image's record) makes the plain diffusers image; the page and
    # the presets start from Fooocus's values (tables/quality.yaml).
    sharpness: float = 0.0  # 0-30: edge-preserving filter on the positive prediction
    adaptive_cfg: float = 0.0  # CFG mimicking from TSNR: the scale mimicked early on; 0 = off
    adm_positive: float = 1.0  # SDXL size conditioning scale of the positive prompt ...
    adm_negative: float = 1.0  # ... and of the negative one ...
    adm_end: float = 0.0  # ... until this fraction of the denoising
    freeu: bool = False
    freeu_b1: float = 1.01
    freeu_b2: float = 1.02
    freeu_s1: float = 0.99
    freeu_s2: float = 0.95
    refiner_swap: str = "separate"  # joint, separate or vae (Fooocus's refiner swap methods)
    prompt_expansion: str = ""  # a models/prompt_expansion model continuing the prompt ("Fooocus V2"); "" = off
    output_format: str = "png"
    skip_invalid_loras: bool = False  # go on without a LoRA that cannot be applied instead of failing
    save_images: bool = True
    input: ImageInput | None = None  # start from an image (Vary, Upscale, img2img); None: from noise
    hires: HiresFix | None = None  # txt2img's hires fix; None: off
    # CPU Turbo's approximations (pipelines/speed): named switches, recorded in the metadata
    step_cache: int = 0  # reuse the UNet's deep features on all but every Nth step (0 or 1: off)
    token_merging: float = 0.0  # merge this share of the highest-resolution tokens before self-attention (0: off)
    fast_decode: bool = False  # decode the final image with the tiny TAESD decoder when one is installed

    def replace(self, **changes: Any) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRequest:
        """Build from JSON-like data; unknown keys are ignored so old metadata keeps loading."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "loras" in kwargs:
            kwargs["loras"] = tuple(
                item
                if isinstance(item, LoraRef)
                else LoraRef(**{k: v for k, v in item.items() if k in ("name", "weight", "enabled")})
                for item in kwargs["loras"] or ()
            )
        if "styles" in kwargs:
            kwargs["styles"] = tuple(kwargs["styles"] or ())
        if "seed_behavior" in kwargs:
            kwargs["seed_behavior"] = SeedBehavior(kwargs["seed_behavior"])
        for name, part in (("input", ImageInput), ("hires", HiresFix)):
            if isinstance(kwargs.get(name), dict):
                known = {f.name for f in dataclasses.fields(part)}
                kwargs[name] = part(**{k: v for k, v in kwargs[name].items() if k in known})
        return cls(**kwargs)


@dataclass(frozen=True)
class AppliedLora:
    name: str
    weight: float
    hash: str  # A1111's short hash of the file (first 12 hex digits of sha256)


@dataclass(frozen=True)
class UsedEmbedding:
    name: str  # the word that called it in the prompt
    hash: str  # sha256 of the file; A1111's `TI hashes` shows the first 12 hex digits


@dataclass(frozen=True)
class ImageParams:
    """Everything needed to re-create one image exactly, and what its metadata carries."""

    prompt: str  # the final positive prompt (styles applied, wildcards expanded)
    negative_prompt: str
    steps: int
    sampler: str
    scheduler: str
    cfg_scale: float
    seed: int
    width: int
    height: int
    model: str
    model_hash: str
    architecture: str = ""
    prompt_template: str = ""  # what the user typed, when it differs from `prompt`
    negative_template: str = ""
    styles: tuple[str, ...] = ()
    loras: tuple[AppliedLora, ...] = ()
    vae: str | None = None  # a VAE override's file name, as A1111 writes it; None: the checkpoint's own
    vae_hash: str | None = None
    refiner: str | None = None
    refiner_switch: float | None = None
    clip_skip: int = 1
    performance: str | None = None
    batch_index: int = 0
    version: str = ""
    refiner_hash: str | None = None  # the refiner checkpoint's short hash (A1111: `Refiner: name [hash]`)
    embeddings: tuple[UsedEmbedding, ...] = ()  # textual inversions the prompts named
    denoising_strength: float | None = None  # img2img / Vary / Upscale / hires fix (A1111's `Denoising strength`)
    input_image: str | None = None  # sha256 of the input image the job started from
    input_source: str | None = None  # the result that input came from (a file in the outputs), when known
    input_mode: str | None = None  # the input mode's label (Vary (Subtle), Upscale (2x), Image to image, ...)
    hires_scale: float | None = None  # A1111's Hires upscale / Hires resize / Hires steps / Hires upscaler ...
    hires_resize: str | None = None  # "WxH" when the hires target was given as a size
    hires_steps: int | None = None
    hires_upscaler: str | None = None
    hires_prompt: str | None = None
    hires_negative_prompt: str | None = None
    hires_sampler: str | None = None
    hires_scheduler: str | None = None
    postprocess_scale: float | None = None  # the upscaler step of Upscale modes (A1111's extras labels)
    postprocess_upscaler: str | None = None
    # Fooocus's sampling controls as applied (neutral where they did nothing: ADM on SD 1.x, sharpness without CFG)
    sharpness: float = 0.0
    adaptive_cfg: float = 0.0
    adm_positive: float = 1.0
    adm_negative: float = 1.0
    adm_end: float = 0.0
    freeu: bool = False
    freeu_b1: float = 1.01
    freeu_b2: float = 1.02
    freeu_s1: float = 0.99
    freeu_s2: float = 0.95
    refiner_swap: str | None = None  # with a refiner: how it took over
    prompt_expansion: str = ""  # the expanded prompt, as Fooocus records it ("Fooocus V2 Expansion")
    expansion_model: str | None = None
    step_cache: int = 0  # step caching interval used (0: off)
    token_merging: float = 0.0  # token merging ratio used (0: off)
    fast_decode: bool = False  # True when the final image was decoded by TAESD, not the full VAE
    mask_image: str | None = None  # sha256 of the inpainting mask (white = changed) in the input store
    mask_blur_x: int | None = None  # A1111's Mask blur (x and y)
    mask_blur_y: int | None = None
    masked_content: str | None = None  # A1111's words: fill, original, latent noise, latent nothing
    inpaint_padding: int | None = None  # only masked: the padding (A1111's Masked area padding); None: whole picture
    mask_inverted: bool = False  # A1111's Mask mode: Inpaint not masked
    outpaint: str | None = None  # the sides grown, "Left, Top", and by how much: outpaint_fraction
    outpaint_fraction: float | None = None
    noise_multiplier: float | None = None  # A1111's Noise multiplier, when not 1

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageParams:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["loras"] = tuple(AppliedLora(**lo) if isinstance(lo, dict) else lo for lo in kwargs.get("loras") or ())
        kwargs["styles"] = tuple(kwargs.get("styles") or ())
        kwargs["embeddings"] = tuple(UsedEmbedding(**e) if isinstance(e, dict) else e for e in kwargs.get("embeddings") or ())
        return cls(**kwargs)


@dataclass(frozen=True)
class ImageResult:
    path: Path | None  # None when the request asked not to save
    params: ImageParams
    infotext: str
    image: Any = field(default=None, repr=False, compare=False)  # the PIL image, kept in memory for callers


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        return self in (JobState.FINISHED, JobState.FAILED, JobState.CANCELLED)


@dataclass
class GenerationResult:
    job_id: str
    images: list[ImageResult] = field(default_factory=list)
    skipped: int = 0  # images skipped by the user
    seconds: float = 0.0


@dataclass(frozen=True)
class JobInfo:
    """A snapshot of one job, as status() reports it."""

    job_id: str
    state: JobState
    position: int  # 0 = running, 1 = next, ...; -1 when done
    request: GenerationRequest
    submitted_at: float
    started_at: float | None = None
    finished_at: float | None = None
    ahead: int = 0  # jobs that run before this one, the running one included; 0 when running or done
    step: int = 0
    total_steps: int = 0
    image_index: int = 0
    image_count: int = 0
    error: str | None = None
    failure: "JobFailed | None" = None  # the job's JobFailed event (message, error type, field, the error itself) when it failed
    result: GenerationResult | None = None
    cancel_requested: bool = False  # stop asked for, not yet taken effect (A1111's "interrupted")
    skip_requested: bool = False  # skip of the current image asked for, not yet taken effect


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value
