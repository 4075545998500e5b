"""Page layout and wiring. Generation logic lives in pipelines/; this file only maps widgets to calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from pipelines import APP_NAME
from pipelines.errors import EaselError
from pipelines.services import Services
from pipelines.types import GenerationRequest

from .form import request_from_form
from .streaming import View, follow, progress_html

CSS = (Path(__file__).parent / "style.css").read_text(encoding="utf-8")


def model_choices(services: Services) -> list[tuple[str, str]]:
    records = [r for r in services.registry.checkpoints() if r.usable]
    choices = [(f"{r.name}  ·  {r.architecture.label}", r.name) for r in records]
    if not choices and services.config.hub_model:
        hub = services.config.hub_model
        choices = [(f"{hub}  ·  download from the Hugging Face hub", hub)]
    return choices


def model_notice(services: Services) -> str:
    if any(r.usable for r in services.registry.checkpoints()):
        return ""
    return services.registry.missing_checkpoint_message()


def build_ui(services: Services) -> gr.Blocks:
    samplers = services.samplers
    defaults = GenerationRequest()
    with gr.Blocks(title=APP_NAME) as demo:
        notice = gr.Markdown(model_notice(services), elem_id="model-notice", visible=bool(model_notice(services)))
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt", lines=3, placeholder="Describe the image…", elem_id="prompt")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Stop", elem_id="stop")
                    skip = gr.Button("Skip", elem_id="skip")
                status = gr.HTML(progress_html(0, "Idle", "idle"), elem_id="status")
                preview = gr.Image(label="Preview", interactive=False, height=256, elem_id="preview")
                gallery = gr.Gallery(label="Images", columns=4, height="auto", elem_id="gallery")
            with gr.Column(scale=2):
                choices = model_choices(services)
                model = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="Model", elem_id="model")
                refresh = gr.Button("Refresh models", size="sm")
                negative_prompt = gr.Textbox(label="Negative prompt", lines=2)
                with gr.Row():
                    width = gr.Number(defaults.width, label="Width", precision=0, step=8)
                    height = gr.Number(defaults.height, label="Height", precision=0, step=8)
                steps = gr.Slider(1, 150, defaults.steps, step=1, label="Steps")
                cfg_scale = gr.Slider(0, 30, defaults.cfg_scale, step=0.5, label="Guidance (CFG)")
                with gr.Row():
                    sampler = gr.Dropdown(samplers.samplers, value=defaults.sampler, label="Sampler")
                    scheduler = gr.Dropdown(samplers.schedules, value=defaults.scheduler, label="Schedule type")
                with gr.Row():
                    seed = gr.Number(-1, label="Seed (-1 = random)", precision=0)
                    image_count = gr.Slider(1, 32, 1, step=1, label="Images")
                output_format = gr.Radio(["png", "jpeg", "webp"], value="png", label="Format")
        job_id = gr.State(None)

        fields: dict[str, Any] = {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "model": model,
            "width": width,
            "height": height,
            "steps": steps,
            "cfg_scale": cfg_scale,
            "sampler": sampler,
            "scheduler": scheduler,
            "seed": seed,
            "image_count": image_count,
            "output_format": output_format,
        }
        names = {component: name for name, component in fields.items()}

        def on_generate(values: dict, request: gr.Request):
            form = {names[c]: v for c, v in values.items() if c in names}
            try:
                req = services.manager.validate(request_from_form(form))
                jid = services.queue.submit(req, owner=getattr(request, "session_hash", None))
            except (EaselError, ValueError, TypeError) as exc:
                yield {status: progress_html(1, str(exc), "failed")}
                return
            yield {job_id: jid, status: progress_html(0, "Queued", "queued"), gallery: [], preview: None}
            view = View()
            for view in follow(services.queue, jid):
                yield {status: view.status_html, preview: view.preview, gallery: list(view.gallery)}
            yield {status: view.status_html, preview: None, gallery: list(view.gallery), job_id: None}

        generate.click(
            on_generate,
            inputs=set(fields.values()),
            outputs=[status, preview, gallery, job_id],
            concurrency_limit=None,  # the engine's queue, not Gradio's, makes the device exclusive
            api_name="generate",
        )
        prompt.submit(on_generate, inputs=set(fields.values()), outputs=[status, preview, gallery, job_id], concurrency_limit=None)

        def on_stop(jid):
            if jid:
                services.queue.cancel(jid)

        def on_skip(jid):
            if jid:
                services.queue.skip(jid)

        stop.click(on_stop, inputs=job_id, outputs=None, concurrency_limit=None, api_name="stop")
        skip.click(on_skip, inputs=job_id, outputs=None, concurrency_limit=None, api_name="skip")

        def on_refresh(current):
            services.registry.refresh()
            new = model_choices(services)
            values = [v for _, v in new]
            message = model_notice(services)
            return (
                gr.update(choices=new, value=current if current in values else (values[0] if values else None)),
                gr.update(value=message, visible=bool(message)),
            )

        refresh.click(on_refresh, inputs=model, outputs=[model, notice], api_name="refresh_models")
    return demo
