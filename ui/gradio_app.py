"""Page layout and the Generate/Stop/Skip wiring. Generation logic lives in pipelines/; form translation in
form.py; the handlers that put forms on the page in wiring.py. Widgets are always addressed by field name."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from pipelines import APP_NAME, EaselError
from ui.api import gradio_endpoint as gradio_api
from ui.context import UIContext
from ui.errors import readable_errors, user_message
from ui.form.fields import request_from_form
from ui.form.inpaint_parts import INPAINT_TAB
from ui.page import send_to_input, speed, wiring
from ui.page.binding import Page
from ui.page.streaming import follow, progress_html, queue_text
from ui.tabs import advanced, generate, history, inpaint, models, setting, styles

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
CSS = (HERE / "style.css").read_text(encoding="utf-8")
HEAD = f"<script>\n{(HERE / 'page.js').read_text(encoding='utf-8')}\n</script>"
QUIET = dict(show_progress="hidden", api_visibility="private")
# the fields that change how long a job takes
ESTIMATE_FIELDS = (
    *("model", "performance", "steps", "cfg_scale", "image_count"),
    *("aspect_ratio", "custom_size", "width", "height", "step_cache", "token_merging"),
)
COMPILE_POLL = 3.0  # seconds between looks at the background compile


def build_ui(ctx: UIContext) -> gr.Blocks:
    initial = ctx.initial_form()
    with gr.Blocks(title=APP_NAME) as demo:
        gradio_api.register(ctx)  # the named `/generate` endpoint for gradio_client
        with gr.Row(elem_id="layout"):
            with gr.Column(scale=3, min_width=340, elem_id="main"):
                main = generate.build(ctx, initial)
            with gr.Column(scale=2, min_width=340, elem_id="settings"):
                with gr.Tabs(elem_id="settings-tabs"):
                    with gr.Tab("Setting", id="setting", elem_id="tab-setting"):
                        setting_tab = setting.build(ctx, initial)
                    with gr.Tab("Styles", id="styles", elem_id="tab-styles"):
                        styles_tab = styles.build(ctx, initial)
                    with gr.Tab("Models", id="models", elem_id="tab-models"):
                        models_tab = models.build(ctx, initial)
                    with gr.Tab("Advanced", id="advanced", elem_id="tab-advanced"):
                        advanced_tab = advanced.build(ctx, initial)
                    with gr.Tab("History", id="history", elem_id="tab-history") as history_tab_item:
                        history_tab = history.build(ctx)
        tabs = (main, setting_tab, styles_tab, models_tab, advanced_tab)
        fields: dict[str, Any] = {name: c for tab in tabs for name, c in tab.fields().items()}
        shown: dict[str, Any] = {
            **fields,
            **setting_tab.shown(),
            **styles_tab.shown(),
            **models_tab.shown(),
            **main.shown_widgets(),
        }
        page = Page(ctx, fields, shown)

        # -- generate, stop, skip ---------------------------------------------------------------------

        def on_generate(values: dict, request: gr.Request) -> Iterator[dict]:
            form = page.form_of(values)
            try:
                image, source, mask = input_picture(ctx, form, values, main.inputs)
                req = request_from_form(form, ctx.tables, input_image=image, input_source=source, input_mask=mask)
                jid = ctx.services.queue.submit(req, owner=getattr(request, "session_hash", None))
            except Exception as exc:  # noqa: BLE001 - shown in the page, never as a traceback
                if not isinstance(exc, (EaselError, ValueError)):
                    log.exception("submitting a job failed")
                yield {main.status: progress_html(1, user_message(exc), "failed")}
                return
            info = ctx.services.queue.status(jid)
            first = progress_html(0, queue_text(info.position, info.ahead), "queued" if info.position > 0 else "running")
            yield {
                main.job_id: jid,
                main.status: first,
                main.gallery: [],
                main.preview: "",
                main.shown: [],
                main.selected: None,
                main.parameters: "",
                main.restore: gr.update(interactive=False),
                main.to_vary: gr.update(interactive=False),
                main.to_upscale: gr.update(interactive=False),
                main.to_inpaint: gr.update(interactive=False),
            }
            view = None
            for view, changed in follow(ctx.services.queue, jid):
                update: dict = {main.status: view.status_html}
                if "preview" in changed:
                    update[main.preview] = view.preview_html
                if "gallery" in changed:
                    update[main.gallery] = view.gallery
                    update[main.shown] = [vars(image) for image in view.images]
                yield update
            final: dict = {main.job_id: None}
            if view is not None and not view.done:
                final[main.status] = progress_html(1, "Lost track of the job; see History for its images.", "failed")
            if view is not None and view.images and form.get("random_seed"):
                final[setting_tab.seed] = view.images[0].seed  # unticking Random re-makes the first image
            yield final

        job_outputs = [
            main.status,
            main.preview,
            main.gallery,
            main.shown,
            main.selected,
            main.parameters,
            main.restore,
            main.to_vary,
            main.to_upscale,
            main.to_inpaint,
            main.job_id,
            setting_tab.seed,
        ]
        history_listing = [history_tab.gallery, history_tab.entry_ids, history_tab.page, history_tab.page_info]
        # preprocess=False: the values are checked by form.py and the engine, with readable messages, rather than
        # refused by Gradio when a list's choices changed a moment before. The engine's queue, not Gradio's,
        # makes the device exclusive (concurrency_limit=None).
        generation = main.generate.click(
            on_generate,
            inputs={
                *page.inputs,
                main.inputs.image,
                main.inputs.source,
                main.inputs.inpaint.editor,
                main.inputs.inpaint.mask_upload,
            },
            outputs=job_outputs,
            concurrency_limit=None,
            preprocess=False,
            **QUIET,
        )
        generation.then(lambda q, n: _history_page(ctx, q, n), [history_tab.search, history_tab.page], history_listing, **QUIET)

        def on_stop(jid: str | None) -> None:
            if jid:
                ctx.services.queue.cancel(jid)

        def on_skip(jid: str | None) -> None:
            if jid:
                ctx.services.queue.skip(jid)

        main.stop.click(on_stop, main.job_id, None, concurrency_limit=None, **QUIET)
        main.skip.click(on_skip, main.job_id, None, concurrency_limit=None, **QUIET)

        wiring.connect(
            demo, page, main, setting_tab, styles_tab, models_tab, advanced_tab, history_tab, extra_saves=[main.generate.click]
        )
        send_to_input.connect(main, history_tab)
        # the estimate for the form (steps, size, images, mode, model), and the compile's progress while it runs
        estimate_on = [fields[name] for name in ESTIMATE_FIELDS if name in fields]

        def on_estimate(values: dict) -> str:
            return speed.estimate_html(ctx, page.form_of(values))

        gr.on(
            [c.change for c in estimate_on] + [demo.load],
            on_estimate,
            inputs=page.inputs,
            outputs=main.speed,
            trigger_mode="always_last",
            preprocess=False,
            **QUIET,
        )
        generation.then(on_estimate, inputs=page.inputs, outputs=main.speed, preprocess=False, **QUIET)
        gr.Timer(COMPILE_POLL).tick(lambda: speed.compile_html(ctx), None, main.optimizing, **QUIET)
        history_tab_item.select(
            lambda q, n: _history_page(ctx, q, n), [history_tab.search, history_tab.page], history_listing, **QUIET
        )
    return demo


def input_picture(ctx: UIContext, form: dict, values: dict, panel: Any) -> tuple[str | None, str | None, str | None]:
    """The Input Image panel's picture (and, on the Inpaint tab, its mask) stored in the engine's input store:
    (the picture's sha256, the result it came from, the mask's sha256)."""
    if not form.get("input_enabled"):
        return None, None, None
    source = values[panel.source]
    if form.get("input_tab") == INPAINT_TAB:
        image, mask = inpaint.stored(ctx, values[panel.inpaint.editor], values[panel.inpaint.mask_upload])
        if source and ctx.services.inputs.digest_of(source) != image:  # another picture was dropped in since
            source = None
        return image, source, mask
    image = values[panel.image]
    if not image:
        return None, None, None
    path = image.get("path") if isinstance(image, dict) else str(image)
    return ctx.services.inputs.put_file(path, field="input_image").sha256, source, None


@readable_errors
def _history_page(ctx: UIContext, query: str, page: int) -> tuple:
    result = history.load_page(ctx, query, page)
    return result.items, result.entry_ids, result.page, result.info
