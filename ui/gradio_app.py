"""Page layout and wiring. Generation logic lives in pipelines/; form translation in form.py; this file only
places the tabs and connects widgets to the services, always by field name."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from pipelines import APP_NAME
from pipelines.errors import EaselError
from pipelines.metadata import read_metadata

from . import gradio_api
from .context import UIContext
from .errors import readable_errors, user_message
from .form import fields_from_metadata, request_from_form, restore
from .performance import CUSTOM
from .render import aspect_choices, aspect_state, render_form
from .streaming import follow, progress_html, queue_text
from .tabs import advanced, generate, history, models, setting

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
CSS = (HERE / "style.css").read_text(encoding="utf-8")
HEAD = f"<script>\n{(HERE / 'page.js').read_text(encoding='utf-8')}\n</script>"
SETTINGS_KEY = "easel-settings"  # localStorage key of the remembered form
SETTINGS_VERSION = 1
TEXT_FIELDS = ("prompt", "negative_prompt")  # remembered when they lose focus, not at every keystroke
QUIET = dict(show_progress="hidden", api_visibility="private")


def build_ui(ctx: UIContext) -> gr.Blocks:
    initial = ctx.initial_form()
    with gr.Blocks(title=APP_NAME) as demo:
        gradio_api.register(ctx)  # the named `/generate` endpoint for gradio_client
        saved = gr.BrowserState(None, storage_key=SETTINGS_KEY, secret=f"{APP_NAME}-settings")
        with gr.Row(elem_id="layout"):
            with gr.Column(scale=3, min_width=340, elem_id="main"):
                main = generate.build(ctx, initial)
            with gr.Column(scale=2, min_width=340, elem_id="settings"):
                with gr.Tabs(elem_id="settings-tabs"):
                    with gr.Tab("Setting", id="setting", elem_id="tab-setting"):
                        setting_tab = setting.build(ctx, initial)
                    with gr.Tab("Models", id="models", elem_id="tab-models"):
                        models_tab = models.build(ctx, initial)
                    with gr.Tab("Advanced", id="advanced", elem_id="tab-advanced"):
                        advanced_tab = advanced.build(ctx, initial)
                    with gr.Tab("History", id="history", elem_id="tab-history") as history_tab_item:
                        history_tab = history.build(ctx)
        fields: dict[str, Any] = {**main.fields(), **setting_tab.fields(), **models_tab.fields(), **advanced_tab.fields()}
        shown: dict[str, Any] = {**fields, "model_info": models_tab.model_info}
        names = {component: name for name, component in fields.items()}
        inputs = set(fields.values())

        def form_of(values: dict) -> dict[str, Any]:
            """The widgets' values by field name (Gradio hands them over keyed by component)."""
            return {names[c]: v for c, v in values.items() if c in names}

        def updates(values: dict[str, Any]) -> dict:
            """Put a whole form on the page, with choices and visibility that fit it."""
            return {shown[name]: gr.update(**kw) for name, kw in render_form(values, ctx).items() if name in shown}

        # -- generate, stop, skip ---------------------------------------------------------------------

        def on_generate(values: dict, request: gr.Request) -> Iterator[dict]:
            form = form_of(values)
            try:
                req = ctx.services.manager.validate(request_from_form(form, ctx.tables))
                jid = ctx.services.queue.submit(req, owner=getattr(request, "session_hash", None))
            except Exception as exc:  # noqa: BLE001 - shown in the page, never as a traceback
                if not isinstance(exc, (EaselError, ValueError)):
                    log.exception("submitting a job failed")
                yield {main.status: progress_html(1, user_message(exc), "failed")}
                return
            position = ctx.services.queue.status(jid).position
            first = progress_html(0, queue_text(position), "queued") if position > 0 else progress_html(0, "Starting…")
            yield {main.job_id: jid, main.status: first, main.gallery: [],
                   main.preview: "", main.shown: [], main.selected: None, main.parameters: "",
                   main.restore: gr.update(interactive=False)}
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

        job_outputs = [main.status, main.preview, main.gallery, main.shown, main.selected, main.parameters,
                       main.restore, main.job_id, setting_tab.seed]
        history_listing = [history_tab.gallery, history_tab.entry_ids, history_tab.page, history_tab.page_info]
        generation = main.generate.click(on_generate, inputs=inputs, outputs=job_outputs, concurrency_limit=None,
                                         **QUIET)  # the engine's queue, not Gradio's, makes the device exclusive
        generation.then(lambda q, n: _history_page(ctx, q, n), [history_tab.search, history_tab.page], history_listing,
                        **QUIET)

        def on_stop(jid: str | None) -> None:
            if jid:
                ctx.services.queue.cancel(jid)

        def on_skip(jid: str | None) -> None:
            if jid:
                ctx.services.queue.skip(jid)

        main.stop.click(on_stop, main.job_id, None, concurrency_limit=None, **QUIET)
        main.skip.click(on_skip, main.job_id, None, concurrency_limit=None, **QUIET)

        # -- putting values into the form: restore, presets, remembered settings ---------------------

        def apply_restore(found: dict | None, values: dict) -> dict:
            if not found:
                raise gr.Error("Nothing to restore: pick an image first.", print_exception=False)
            form = form_of(values)
            result = restore(found["fields"], ctx.tables, ctx.lookup, ctx.architecture(form.get("model")),
                             found.get("source", ""))
            for note in result.notes:
                gr.Warning(note)
            gr.Info(f"Settings restored from {result.source or 'the image'}.")
            return updates({**form, **result.values})

        @readable_errors
        def on_restore_selected(values: dict) -> dict:
            images, index = values[main.shown], values[main.selected]
            if index is None or not 0 <= index < len(images):
                raise gr.Error("Pick an image in the gallery first.", print_exception=False)
            meta = read_metadata(images[index]["path"])
            return apply_restore({"fields": fields_from_metadata(meta), "source": "the selected image"}, values)

        @readable_errors
        def on_restore_pending(values: dict) -> dict:
            return apply_restore(values[history_tab.pending], values)

        restorable = set(shown.values())
        main.restore.click(on_restore_selected, inputs={main.shown, main.selected, *inputs}, outputs=restorable,
                           **QUIET)
        history_tab.restore.click(on_restore_pending, inputs={history_tab.pending, *inputs}, outputs=restorable,
                                  **QUIET)

        @readable_errors
        def on_preset(values: dict) -> dict:
            form = form_of(values)
            result = ctx.preset_values(form["preset"], form.get("model"))
            for note in result.notes:
                gr.Warning(note)
            return updates({**form, **result.values})

        setting_tab.preset.input(on_preset, inputs=inputs, outputs=restorable, **QUIET)

        def remember(values: dict) -> dict:
            return {"version": SETTINGS_VERSION, "launch_preset": ctx.preset, "values": form_of(values)}

        triggers = [c.change for name, c in fields.items() if name not in TEXT_FIELDS]
        triggers += [fields[name].blur for name in TEXT_FIELDS] + [main.generate.click]
        # preprocess=False: the raw values are what is stored, and a save that races a change of choices (the
        # aspect list after a model change) must not be refused for holding the previous choice.
        gr.on(triggers, remember, inputs=inputs, outputs=saved, trigger_mode="always_last", preprocess=False, **QUIET)

        @readable_errors
        def on_load(values: dict) -> Any:
            """Put back the settings this browser last used, unless the app now starts with another preset."""
            stored = values[saved]
            if not isinstance(stored, dict) or stored.get("version") != SETTINGS_VERSION:
                return gr.skip()
            if stored.get("launch_preset") != ctx.preset or not isinstance(stored.get("values"), dict):
                return gr.skip()
            form = form_of(values)
            remembered = {k: v for k, v in stored["values"].items() if k in form}
            return updates({**form, **remembered})

        demo.load(on_load, inputs={saved, *inputs}, outputs=restorable, **QUIET)

        # -- widgets that depend on each other ---------------------------------------------------------

        # preprocess=False here and for the schedule list: a dropdown may fire `input` twice, and the second call
        # still carries the previous choice, which the list already changed by the first no longer holds.
        models_tab.model.input(lambda m, a: gr.update(**aspect_choices(ctx, m, a)),
                               [models_tab.model, setting_tab.aspect_ratio], setting_tab.aspect_ratio,
                               preprocess=False, **QUIET)

        @readable_errors
        def on_refresh(values: dict) -> dict:
            ctx.services.registry.refresh()
            form = form_of(values)
            notice = ctx.notice()
            return {**updates(form), models_tab.unusable: models.unusable_markdown(ctx),
                    main.notice: gr.update(value=notice, visible=bool(notice))}

        models_tab.refresh.click(on_refresh, inputs=inputs, outputs={*restorable, models_tab.unusable, main.notice},
                                 **QUIET)

        def on_custom_size(on: bool) -> tuple:
            return gr.update(visible=on), gr.update(visible=on), gr.update(**aspect_state(on))

        advanced_tab.custom_size.input(on_custom_size, advanced_tab.custom_size,
                                       [advanced_tab.width, advanced_tab.height, setting_tab.aspect_ratio], **QUIET)

        def on_performance(mode: str) -> dict:
            mode_fields = ctx.tables.performance.fields(mode)
            return {fields[k]: gr.update(value=v) for k, v in mode_fields.items() if k in fields}

        mode_outputs = {fields[k] for k in ("steps", "cfg_scale", "sampler", "scheduler", "clip_skip")}
        setting_tab.performance.input(on_performance, setting_tab.performance, mode_outputs, **QUIET)

        def on_steps(steps: int, mode: str):
            mode_steps = ctx.tables.performance.fields(mode).get("steps") if mode != CUSTOM else None
            return gr.skip() if mode_steps in (None, steps) else CUSTOM

        advanced_tab.steps.input(on_steps, [advanced_tab.steps, setting_tab.performance], setting_tab.performance,
                                 **QUIET)

        history_tab_item.select(lambda q, n: _history_page(ctx, q, n), [history_tab.search, history_tab.page],
                                history_listing, **QUIET)
    return demo


@readable_errors
def _history_page(ctx: UIContext, query: str, page: int) -> tuple:
    result = history.load_page(ctx, query, page)
    return result.items, result.entry_ids, result.page, result.info
