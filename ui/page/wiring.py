"""Handlers that put values into the form (restore, presets, remembered settings) and keep widgets that
depend on each other in step (model -> sizes, modes, refiner, LoRA marks; mode <-> Advanced; styles ->
final prompt). Called once by gradio_app.build_ui inside the Blocks being built."""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipelines import APP_NAME, InvalidRequest, read_metadata
from ui.errors import readable_errors
from ui.form import modes
from ui.form.fields import fields_from_metadata, restore
from ui.page.binding import MODE_DEPENDENT, MODEL_DEPENDENT, TEXT_FIELDS, Page
from ui.page.render import aspect_state
from ui.tabs import models, styles

SETTINGS_KEY = "easel-settings"  # localStorage key of the remembered form
SETTINGS_VERSION = 2  # 2: engine modes, styles, refiner, VAE and LoRA slots
QUIET = dict(show_progress="hidden", api_visibility="private")


def connect(
    demo: gr.Blocks, page: Page, main, setting_tab, styles_tab, models_tab, advanced_tab, history_tab, extra_saves: list
) -> None:
    ctx = page.ctx
    inputs, outputs = page.inputs, page.outputs
    fields = page.fields

    # -- putting values into the form: restore, presets, remembered settings ---------------------------

    def apply_restore(found: dict | None, values: dict) -> dict:
        if not found:
            raise gr.Error("Nothing to restore: pick an image first.", print_exception=False)
        form = page.form_of(values)
        result = restore(found["fields"], ctx.tables, ctx.lookup, ctx.architecture(form.get("model")), found.get("source", ""))
        for note in result.notes:
            gr.Warning(note)
        gr.Info(f"Settings restored from {result.source or 'the image'}.")
        return page.updates(page.settled({**form, **result.values}))

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

    main.restore.click(
        on_restore_selected, inputs={main.shown, main.selected, *inputs}, outputs=outputs, preprocess=False, **QUIET
    )
    history_tab.restore.click(
        on_restore_pending, inputs={history_tab.pending, *inputs}, outputs=outputs, preprocess=False, **QUIET
    )

    @readable_errors
    def on_preset(values: dict) -> dict:
        form = page.form_of(values)
        result = ctx.preset_values(form["preset"], form.get("model"))
        for note in result.notes:
            gr.Warning(note)
        return page.updates(page.settled({**form, **result.values}))

    setting_tab.preset.input(on_preset, inputs=inputs, outputs=outputs, preprocess=False, **QUIET)

    saved = gr.BrowserState(None, storage_key=SETTINGS_KEY, secret=f"{APP_NAME}-settings")

    def remember(values: dict) -> dict:
        return {"version": SETTINGS_VERSION, "launch_preset": ctx.preset, "values": page.form_of(values)}

    triggers = [c.change for name, c in fields.items() if name not in TEXT_FIELDS]
    triggers += [fields[name].blur for name in TEXT_FIELDS] + list(extra_saves)
    # preprocess=False: the raw values are what is stored, and a save that races a change of choices (the
    # aspect list after a model change) must not be refused for holding the previous choice.
    gr.on(triggers, remember, inputs=inputs, outputs=saved, trigger_mode="always_last", preprocess=False, **QUIET)

    @readable_errors
    def on_load(values: dict) -> Any:
        """Put back the settings this browser last used (unless the app now starts with another preset);
        without any, the page's own form, whose model follows the engine's default (the API may switch it)."""
        stored = values[saved]
        form = page.form_of(values)
        usable = (
            isinstance(stored, dict)
            and stored.get("version") == SETTINGS_VERSION
            and stored.get("launch_preset") == ctx.preset
            and isinstance(stored.get("values"), dict)
        )
        if not usable:
            fresh = ctx.initial_form()
            if fresh.get("model") == form.get("model"):
                return gr.skip()
            return page.updates({**form, **fresh}, skip=TEXT_FIELDS)
        remembered = {k: v for k, v in stored["values"].items() if k in form}
        return page.updates(page.settled({**form, **remembered}, warn=False))

    demo.load(on_load, inputs={saved, *inputs}, outputs=outputs, preprocess=False, **QUIET)

    # -- widgets that depend on each other -------------------------------------------------------------

    @readable_errors
    def on_model(values: dict) -> dict:
        form = page.settled(page.form_of(values))
        return page.updates(form, only=MODEL_DEPENDENT)

    # preprocess=False here and for the schedule list: a dropdown may fire `input` twice, and the second call
    # still carries the previous choice, which the list already changed by the first no longer holds.
    models_tab.model.input(on_model, inputs=inputs, outputs=outputs, preprocess=False, trigger_mode="always_last", **QUIET)

    @readable_errors
    def on_mode(values: dict) -> dict:
        form = page.settled(page.form_of(values))  # a mode that cannot run: the fallback, and a warning
        return page.updates(form, only=MODE_DEPENDENT)

    setting_tab.performance.input(on_mode, inputs=inputs, outputs=outputs, preprocess=False, **QUIET)

    def custom_when_changed(name: str):
        """Editing a field the picked mode sets (its steps, its sampler...) switches the form to Custom."""

        def handler(value: Any, mode: str, model: str | None) -> Any:
            try:
                fixed = modes.mode_fields(ctx.tables.performance, mode)
            except InvalidRequest:
                return gr.skip(), gr.skip()
            if name not in fixed or fixed[name] == value:
                return gr.skip(), gr.skip()
            reasons = ctx.mode_reasons(model)
            return modes.CUSTOM, modes.notes_markdown(ctx.tables.performance, modes.CUSTOM, reasons)

        return handler

    for name in modes.MODE_FIELDS:
        fields[name].input(
            custom_when_changed(name),
            [fields[name], setting_tab.performance, models_tab.model],
            [setting_tab.performance, setting_tab.performance_notes],
            preprocess=False,
            **QUIET,
        )

    @readable_errors
    def on_refresh(values: dict) -> dict:
        ctx.services.registry.refresh()
        ctx.services.styles.reload()
        form = page.settled(page.form_of(values))
        notice = ctx.notice()
        return {
            **page.updates(form, skip=TEXT_FIELDS),
            models_tab.unusable: models.unusable_markdown(ctx),
            main.notice: gr.update(value=notice, visible=bool(notice)),
            styles_tab.data: styles.data_html(ctx),
            styles_tab.category: styles.category_html(ctx),
        }

    models_tab.refresh.click(
        on_refresh,
        inputs=inputs,
        outputs={*outputs, models_tab.unusable, main.notice, styles_tab.data, styles_tab.category},
        preprocess=False,
        **QUIET,
    )

    def on_custom_size(on: bool) -> tuple:
        return gr.update(visible=on), gr.update(visible=on), gr.update(**aspect_state(on))

    advanced_tab.custom_size.input(
        on_custom_size, advanced_tab.custom_size, [advanced_tab.width, advanced_tab.height, setting_tab.aspect_ratio], **QUIET
    )

    # -- styles -> the prompt that will be sent; LoRA trigger words -> the prompt ----------------------

    def on_summary(prompt: str, negative: str, picked: list[str]) -> tuple:
        shown = styles.summary(ctx, prompt, negative, styles.known(ctx, picked or []))
        return shown["final_prompt"]["value"], shown["final_negative"]["value"], shown["styles_selected"]["value"]

    summary_inputs = [fields["prompt"], fields["negative_prompt"], fields["styles"]]
    gr.on(
        [c.change for c in summary_inputs],
        on_summary,
        summary_inputs,
        [styles_tab.final_prompt, styles_tab.final_negative, styles_tab.selected],
        trigger_mode="always_last",
        preprocess=False,
        **QUIET,
    )

    @readable_errors
    def on_triggers(values: dict) -> Any:
        form = page.form_of(values)
        text, added = models.prompt_with_triggers(ctx, str(form.get("prompt") or ""), form)
        if not added:
            gr.Info("No trigger words to add: the picked LoRAs have none listed, or the prompt holds them already.")
            return gr.skip()
        gr.Info(f"Added to the prompt: {', '.join(added)}.")
        return text

    models_tab.add_triggers.click(on_triggers, inputs=inputs, outputs=fields["prompt"], preprocess=False, **QUIET)
