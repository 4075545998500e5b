"""The /sdapi/v1 routes: AUTOMATIC1111's HTTP API, served by Easel on the page's queue.

Each route translates (ui/api/translate.py, catalog.py, options.py) and delegates to the services: jobs go
to the one JobQueue the page uses, so `progress` and `interrupt` see page jobs and API jobs alike, and the
device is never shared. A generation request waits for its job off the event loop (a thread per waiting
request), so many clients can wait at once while `progress` stays quick.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import threading
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from pipelines import (
    EaselError,
    GenerationRequest,
    InvalidRequest,
    JobInfo,
    JobQueue,
    JobState,
    ModelNotFound,
    QueueFull,
    Services,
    read_metadata,
)
from ui.api.auth import Credentials, basic_auth
from ui.api.catalog import (
    embedding_items,
    lora_items,
    memory_stats,
    sampler_items,
    scheduler_items,
    sd_model_items,
    sd_vae_items,
    style_items,
)
from ui.api.extras import extras_request, finish, html_info, latent_mode_items, upscaler_items
from ui.api.options import ApiOptions
from ui.api.schemas import (
    EmbeddingsResponse,
    ExtrasBatchImagesRequest,
    ExtrasBatchImagesResponse,
    ExtrasSingleImageRequest,
    ExtrasSingleImageResponse,
    ImageToImageResponse,
    Img2ImgRequest,
    LatentUpscalerModeItem,
    LoraItem,
    MemoryResponse,
    Options,
    OptionsUpdate,
    PNGInfoRequest,
    PNGInfoResponse,
    ProgressResponse,
    PromptStyleItem,
    SamplerItem,
    SchedulerItem,
    SDModelItem,
    SDVaeItem,
    TextToImageResponse,
    Txt2ImgRequest,
    UpscalerItem,
)
from ui.api.translate import (
    a1111_field,
    b64,
    image_files,
    info_json,
    png_b64,
    progress_of,
    request_from_img2img,
    request_from_txt2img,
)

PREFIX = "/sdapi/v1"
_DATA_URL = re.compile(r"^data:[\w/+.-]+;base64,", re.IGNORECASE)


def field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's 422 items, each message starting with the field it is about ("steps: Input should be...")."""
    items = []
    for error in exc.errors():
        item = dict(error)
        item.pop("url", None)
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "")
            item["msg"] = f"The body is not valid JSON ({reason})."
        else:
            where = [str(part) for part in error.get("loc", ())[1:]]  # drop "body" / "query"
            item["msg"] = f"{'.'.join(where)}: {error.get('msg', '')}" if where else str(error.get("msg", ""))
        items.append(item)
    return jsonable_encoder(items, custom_encoder={Exception: str})


class NamedFieldRoute(APIRoute):
    """Answers a body that does not validate with 422 items whose message names the field (loc kept as is)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def handle(request: Request):
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return JSONResponse(status_code=422, content={"detail": field_errors(exc)})

        return handle


def http_error(exc: Exception) -> HTTPException:
    """Engine errors as HTTP answers: a bad field 422 (named as the client sent it), unknown model 404."""
    if isinstance(exc, InvalidRequest):
        name = a1111_field(exc.field)
        message = str(exc) if str(exc).startswith(name.rsplit(".", 1)[-1]) else f"{name}: {exc}"
        return HTTPException(422, detail=[{"loc": ["body", *name.split(".")], "msg": message, "type": "value_error"}])
    if isinstance(exc, ModelNotFound):
        return HTTPException(404, detail=str(exc))
    if isinstance(exc, QueueFull):
        return HTTPException(503, detail=str(exc))
    return HTTPException(500, detail=str(exc))


def failure(job: JobInfo) -> HTTPException:
    """The HTTP answer for a job that failed on the worker: by the error's type, as at submit."""
    error = job.failure.exception if job.failure is not None else None
    if error is None:
        return HTTPException(500, detail=job.error or "The job failed.")
    return http_error(error)


async def wait_for_job(queue: JobQueue, job_id: str, request: GenerationRequest, want_files: bool) -> tuple[JobInfo, list[bytes]]:
    """Wait for the job in a thread of its own and read its image files there, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():  # the client went away and the request was cancelled
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def wait() -> None:
        try:
            job = queue.wait(job_id)
            files = image_files(job.result, request) if want_files and job.result is not None else []
            outcome: tuple[Any, BaseException | None] = ((job, files), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the request, which answers 500
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the server is shutting down and its loop is closed
            pass

    threading.Thread(target=wait, name=f"api-wait-{job_id}", daemon=True).start()
    return await future


def decode_image(text: str, field: str = "image") -> bytes:
    """A base64 image, with or without a data: URL prefix; InvalidRequest naming `field` otherwise."""
    text = _DATA_URL.sub("", str(text or "").strip())
    if text.startswith(("http://", "https://")):
        raise InvalidRequest(f"{field} must be base64 data; URLs are not fetched.", field=field)
    try:
        return base64.b64decode(re.sub(r"\s+", "", text), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{field} is not valid base64 ({exc}).", field=field) from exc


def build_api_router(services: Services, credentials: Credentials = ()) -> APIRouter:
    """The API on these services; with credentials, every route asks for HTTP Basic."""
    dependencies = [Depends(basic_auth(credentials))] if credentials else []
    router = APIRouter(prefix=PREFIX, tags=["A1111-compatible API"], dependencies=dependencies, route_class=NamedFieldRoute)
    options = ApiOptions(services)
    queue = services.queue

    @router.post("/txt2img", response_model=TextToImageResponse)
    async def txt2img(payload: Txt2ImgRequest) -> TextToImageResponse:
        """Generate images from text. Queued behind page and API jobs alike; answers when the job ends.
        An interrupted job answers with the images finished before the stop."""
        try:
            request = request_from_txt2img(payload, services, options)
            job_id = queue.submit(request, owner="api")
        except EaselError as exc:
            raise http_error(exc) from exc
        job, files = await wait_for_job(queue, job_id, request, payload.send_images)
        if job.state is JobState.FAILED:
            raise failure(job)
        return TextToImageResponse(
            images=[b64(data) for data in files] if payload.send_images else [],
            parameters=payload.model_dump(),
            info=info_json(payload, request, job),
        )

    @router.post("/img2img", response_model=ImageToImageResponse)
    async def img2img(payload: Img2ImgRequest) -> ImageToImageResponse:
        """Make images from an image (init_images, base64) and the prompt; denoising_strength says how much is
        re-made. With a mask (white = re-make), an inpaint: mask_blur, inpainting_fill, inpaint_full_res (+ padding),
        inpainting_mask_invert as A1111. Same queue, progress, interrupt and skip as txt2img."""
        try:
            if not payload.init_images:
                raise InvalidRequest("init_images: at least one image is needed.", field="init_images")
            image = decode_image(payload.init_images[0], "init_images")
            mask = decode_image(payload.mask, "mask") if payload.mask else None
            request = request_from_img2img(payload, services, options, image, mask)
            job_id = queue.submit(request, owner="api")
        except EaselError as exc:
            raise http_error(exc) from exc
        job, files = await wait_for_job(queue, job_id, request, payload.send_images)
        if job.state is JobState.FAILED:
            raise failure(job)
        parameters = payload.model_dump()
        if not payload.include_init_images:
            parameters.update(init_images=None, mask=None)
        return ImageToImageResponse(
            images=[b64(data) for data in files] if payload.send_images else [],
            parameters=parameters,
            info=info_json(payload, request, job),
        )

    async def upscale(payload: Any, data: str, field: str) -> tuple[str, str]:
        try:
            request, after = extras_request(services, payload, decode_image(data, field), field)
            job_id = queue.submit(request, owner="api")
        except EaselError as exc:
            raise http_error(exc) from exc
        job, _ = await wait_for_job(queue, job_id, request, False)
        if job.state is not JobState.FINISHED or job.result is None or not job.result.images:
            raise failure(job) if job.state is JobState.FAILED else HTTPException(500, detail="The upscale was interrupted.")
        return png_b64(finish(job.result.images[0].image, after)), html_info(request, after)

    @router.post("/extra-single-image", response_model=ExtrasSingleImageResponse)
    async def extra_single_image(payload: ExtrasSingleImageRequest) -> ExtrasSingleImageResponse:
        """Upscale one image with upscaler_1 (and upscaler_2 blended in), by upscaling_resize or to a size."""
        image, info = await upscale(payload, payload.image, "image")
        return ExtrasSingleImageResponse(image=image, html_info=info)

    @router.post("/extra-batch-images", response_model=ExtrasBatchImagesResponse)
    async def extra_batch_images(payload: ExtrasBatchImagesRequest) -> ExtrasBatchImagesResponse:
        """Upscale each image of imageList, in order, as extra-single-image does."""
        images, info = [], ""
        for index, item in enumerate(payload.imageList):
            image, info = await upscale(payload, item.data, f"imageList.{index}.data")
            images.append(image)
        return ExtrasBatchImagesResponse(images=images, html_info=info)

    @router.get("/upscalers", response_model=list[UpscalerItem])
    def upscalers() -> list[UpscalerItem]:
        """Upscalers by the names hr_upscaler and upscaler_1/2 take: None, Lanczos, Nearest and the models found."""
        return upscaler_items(services)

    @router.get("/latent-upscale-modes", response_model=list[LatentUpscalerModeItem])
    def latent_upscale_modes() -> list[LatentUpscalerModeItem]:
        """The latent modes hr_upscaler also takes (hires fix only)."""
        return latent_mode_items(services)

    @router.get("/progress", response_model=ProgressResponse)
    def progress(skip_current_image: bool = Query(False, description="Leave out the preview image.")) -> ProgressResponse:
        """Progress of the running job (from the page or the API), its latest preview, and how many jobs wait."""
        return progress_of(queue, with_image=not skip_current_image)

    @router.post("/interrupt")
    def interrupt() -> dict:
        """Stop the running job, whichever client started it; its finished images are kept."""
        queue.interrupt()
        return {}

    @router.post("/skip")
    def skip() -> None:
        """Drop the image being made by the running job and go on with its next one."""
        queue.skip()

    @router.get("/options", response_model=Options)
    def get_options() -> Options:
        """The settings Easel has, under A1111's names."""
        return options.current()

    @router.post("/options")
    def set_options(changes: OptionsUpdate = Body(...)) -> None:
        """Change settings. sd_model_checkpoint switches the default model at once; it is loaded when the
        next job needs it. Unknown options are ignored."""
        try:
            options.update(changes)
        except EaselError as exc:
            raise http_error(exc) from exc

    @router.get("/sd-models", response_model=list[SDModelItem])
    def sd_models() -> list[SDModelItem]:
        """Installed checkpoints."""
        return sd_model_items(services)

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints() -> None:
        """Rescan the models folder."""
        services.registry.refresh()

    @router.get("/loras", response_model=list[LoraItem])
    def loras() -> list[LoraItem]:
        """Installed LoRAs, with the training metadata their files carry."""
        return lora_items(services)

    @router.post("/refresh-loras")
    def refresh_loras() -> None:
        """Rescan the models folder."""
        services.registry.refresh()

    @router.get("/sd-vae", response_model=list[SDVaeItem])
    def sd_vae() -> list[SDVaeItem]:
        """Installed VAEs; a model_name here is what sd_vae (options or override_settings) takes."""
        return sd_vae_items(services)

    @router.post("/refresh-vae")
    def refresh_vae() -> None:
        """Rescan the models folder."""
        services.registry.refresh()

    @router.get("/embeddings", response_model=EmbeddingsResponse)
    def embeddings() -> EmbeddingsResponse:
        """Textual-inversion embeddings: `loaded` fit the default checkpoint, `skipped` do not."""
        return embedding_items(services)

    @router.get("/samplers", response_model=list[SamplerItem])
    def samplers() -> list[SamplerItem]:
        """Samplers; options.schedulers lists the schedule types each one supports."""
        return sampler_items(services.samplers)

    @router.get("/schedulers", response_model=list[SchedulerItem])
    def schedulers() -> list[SchedulerItem]:
        """Schedule types (A1111 1.9+'s `scheduler` field)."""
        return scheduler_items(services.samplers)

    @router.get("/prompt-styles", response_model=list[PromptStyleItem])
    def prompt_styles() -> list[PromptStyleItem]:
        """Saved styles, usable by name in a request's `styles`."""
        return style_items(services)

    @router.post("/png-info", response_model=PNGInfoResponse)
    def png_info(body: PNGInfoRequest) -> PNGInfoResponse:
        """The generation parameters an image carries (written by Easel, A1111, Forge or Fooocus)."""
        try:
            meta = read_metadata(decode_image(body.image))
        except InvalidRequest as exc:
            raise http_error(InvalidRequest(str(exc), field="image")) from exc
        info = meta.infotext or meta.raw.get("parameters") or ""
        items = {key: value for key, value in meta.raw.items() if key != "parameters"}
        return PNGInfoResponse(info=info, items=items, parameters=meta.params)

    @router.get("/memory", response_model=MemoryResponse)
    def memory() -> MemoryResponse:
        """RAM and CUDA memory use."""
        ram, cuda = memory_stats()
        return MemoryResponse(ram=ram, cuda=cuda)

    return router
