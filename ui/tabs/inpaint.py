"""The Input Image panel's "Inpaint or Outpaint" tab (Fooocus's): the picture in an editor where the mask is painted
with a brush (its size and the eraser in the editor's toolbar, zoom and pan with its buttons), cleared with the
button below or inverted (A1111's "inpaint not masked"), or uploaded as a picture; the method (Fooocus's list, the engine's Inpaint
modes), an additional prompt and the outpaint sides; A1111's settings in "More inpaint settings"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ui.form.inpaint_parts import FILLS, INPAINT_DEFAULTS, SAME_MODEL, SIDES, method_values, methods

QUIET = dict(show_progress="hidden", api_visibility="private")
BRUSH = ("#ff3c3c", 0.8)  # a see-through red: opaque enough to count as masked (alpha above 128), the picture still visible


@dataclass
class InpaintTab:
    editor: gr.ImageMask  # background: the picture; layers: the painted mask (their alpha)
    mask_upload: gr.Image  # a mask picture (white = change), added to what is painted
    method: gr.Radio
    prompt: gr.Textbox
    outpaint: gr.CheckboxGroup
    outpaint_fraction: gr.Slider
    denoise: gr.Slider
    fill: gr.Radio
    only_masked: gr.Checkbox
    padding: gr.Slider
    blur: gr.Slider
    invert: gr.Checkbox
    model: gr.Dropdown
    clear: gr.Button

    def fields(self) -> dict[str, Any]:
        return {
            "inpaint_method": self.method,
            "inpaint_prompt": self.prompt,
            "outpaint": self.outpaint,
            "outpaint_fraction": self.outpaint_fraction,
            "inpaint_denoise": self.denoise,
            "inpaint_fill": self.fill,
            "only_masked": self.only_masked,
            "only_masked_padding": self.padding,
            "mask_blur": self.blur,
            "invert_mask": self.invert,
            "inpaint_model": self.model,
        }


def model_choices(ctx) -> list[str]:
    """ "Same as the model", then the inpainting checkpoints installed."""
    return [SAME_MODEL, *(r.name for r in ctx.services.registry.checkpoints() if r.usable and r.inpainting)]


def widgets(ctx, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The inpaint model list as it is now (models may have been added), and the tab the form says."""
    choices = model_choices(ctx)
    model = values.get("inpaint_model")
    return {
        "inpaint_model": {"choices": choices, "value": model if model in choices else SAME_MODEL},
        "input_tabs": {"selected": values.get("input_tab") or INPAINT_DEFAULTS["input_tab"]},
    }


def painted(layers: list[Image.Image]) -> Image.Image | None:
    """The layers' paint as one "L" mask (opaque where any layer is), None when nothing is painted."""
    mask = None
    for layer in layers:
        alpha = layer.convert("RGBA").getchannel("A")
        mask = alpha if mask is None else Image.fromarray(np.maximum(np.asarray(mask), np.asarray(alpha)), "L")
    return mask if mask is not None and mask.getbbox() else None


def cleared(value: dict | None) -> Any:
    if not value or value.get("background") is None:
        return gr.skip()
    return with_picture(value["background"])


def with_picture(picture: Image.Image | str) -> dict[str, Any]:
    """An editor value: the picture, with the editor's own empty "Mask" layer to paint on."""
    return {"background": picture, "layers": [], "composite": picture}


def _path(value: Any) -> str | None:
    """A file the page was given (a FileData dict as Gradio hands it over unprocessed, or a path)."""
    if not value:
        return None
    return value.get("path") if isinstance(value, dict) else str(value)


def stored(ctx, value: dict | None, upload: Any) -> tuple[str | None, str | None]:
    """The editor's picture and the mask (painted layers and the uploaded mask together) put in the engine's input
    store: (picture sha256 or None, mask sha256 or None when nothing is masked)."""
    inputs = ctx.services.inputs
    background = _path((value or {}).get("background"))
    if background is None:
        return None, None
    picture = inputs.put_file(background, field="input_image")
    layers = []
    for layer in (value or {}).get("layers") or []:
        if _path(layer):
            with Image.open(_path(layer)) as opened:
                layers.append(opened.convert("RGBA"))
    mask = painted(layers)
    if _path(upload):
        uploaded = inputs.get_mask(inputs.put_file(_path(upload), field="inpaint_mask", mask=True).sha256)
        mask = uploaded if mask is None else painted([_as_layer(mask.resize(uploaded.size)), _as_layer(uploaded)])
    if mask is None:
        return picture.sha256, None
    if mask.size != (picture.width, picture.height):
        mask = mask.resize((picture.width, picture.height))
    return picture.sha256, inputs.put_mask_image(mask.point(lambda v: 255 if v > 128 else 0)).sha256


def _as_layer(mask: Image.Image) -> Image.Image:
    layer = Image.new("RGBA", mask.size, (255, 255, 255, 0))
    layer.putalpha(mask.convert("L"))
    return layer


def build(ctx, initial: dict[str, Any]) -> InpaintTab:
    value = {**INPAINT_DEFAULTS, **initial}
    with gr.Row():
        editor = gr.ImageMask(
            label="Picture: paint over what to change",
            type="pil",
            sources=["upload", "clipboard"],
            image_mode="RGBA",
            brush=gr.Brush(colors=[BRUSH], color_mode="fixed"),  # size: a 50th of the picture, adjustable
            layers=gr.LayerOptions(allow_additional_layers=False, layers=["Mask"]),
            transforms=(),
            format="png",
            elem_id="inpaint-editor",
            height=420,
        )
    with gr.Row(equal_height=True):
        clear = gr.Button("Clear mask", size="sm", elem_id="inpaint-clear", scale=1)
        invert = gr.Checkbox(
            value["invert_mask"], label="Invert mask (change what is not painted)", elem_id="invert-mask", scale=2
        )
    method = gr.Radio(methods(), value=value["inpaint_method"], label="Method", elem_id="inpaint-method")
    prompt = gr.Textbox(
        value["inpaint_prompt"],
        label="Inpaint additional prompt",
        lines=1,
        elem_id="inpaint-prompt",
        placeholder="What goes in the painted area (put before the prompt)",
    )
    with gr.Row():
        outpaint = gr.CheckboxGroup(
            [(side.title(), side) for side in SIDES], value=value["outpaint"], label="Outpaint direction", elem_id="outpaint"
        )
        outpaint_fraction = gr.Slider(
            0.05,
            1.0,
            value["outpaint_fraction"],
            step=0.05,
            label="Outpaint by (of the picture's size)",
            elem_id="outpaint-fraction",
        )
    with gr.Accordion("More inpaint settings", open=False, elem_id="inpaint-settings"):
        denoise = gr.Slider(0.01, 1.0, value["inpaint_denoise"], step=0.01, label="Denoising strength", elem_id="inpaint-denoise")
        fill = gr.Radio(FILLS, value=value["inpaint_fill"], label="Masked content", elem_id="inpaint-fill")
        with gr.Row():
            only_masked = gr.Checkbox(
                value["only_masked"],
                label="Only masked (respective field)",
                elem_id="only-masked",
                info="Work on the painted area and its surroundings at the model's own size, then paste it back.",
            )
            padding = gr.Slider(
                0, 256, value["only_masked_padding"], step=4, label="Padding, pixels", elem_id="only-masked-padding"
            )
        blur = gr.Slider(0, 64, value["mask_blur"], step=1, label="Mask blur", elem_id="mask-blur")
        model = gr.Dropdown(
            model_choices(ctx),
            value=value["inpaint_model"] if value["inpaint_model"] in model_choices(ctx) else SAME_MODEL,
            label="Inpaint model",
            elem_id="inpaint-model",
            info="An inpainting checkpoint (sd-v1-5-inpainting, SDXL inpainting) to inpaint with; any model can.",
        )
        mask_upload = gr.Image(
            label="Mask picture (white = change), added to the painted mask",
            type="filepath",
            sources=["upload", "clipboard"],
            image_mode=None,
            height=160,
            elem_id="inpaint-mask-upload",
        )
    method.input(lambda key: tuple(method_values(key).values()), method, [denoise, fill, only_masked], **QUIET)
    clear.click(cleared, editor, editor, **QUIET)
    return InpaintTab(
        editor,
        mask_upload,
        method,
        prompt,
        outpaint,
        outpaint_fraction,
        denoise,
        fill,
        only_masked,
        padding,
        blur,
        invert,
        model,
        clear,
    )
