"""The Styles tab: every style of the library (styles/), searchable by name and category, picked in order.

"Fooocus V2" above the list turns prompt expansion on (ui/tabs/quality.py). The picked styles are listed
first, in the order they apply (the order they were clicked: each wraps the result of the previous one);
a list under it shows each picked style's preview (its thumbnail, else
its template), and two read-only boxes show the prompt and negative prompt the engine will be sent
(`services.styles.apply`; wildcards and <lora:…> tags stay as typed, they are resolved per image).

The list is sent picked-first whenever the server sets it (restore, preset, remembered settings); a click
moves the style up in the browser (page.js), without re-sending the list, so a quick second click never
lands on a label the server is relabelling. The search box and the category list filter there too, as
the library's own `search` does (every word in the name or category); hovering a style shows its
preview. All of it reads the data in `#style-data`.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any, Iterable

import gradio as gr

from pipelines import PLACEHOLDER, InvalidRequest, Style
from ui.context import UIContext
from ui.page.thumbnails import thumbnail
from ui.tabs import quality

ALL = "All categories"
PREVIEW_SIDE = 192
QUIET = dict(show_progress="hidden", api_visibility="private")


@dataclass
class StylesTab:
    search: gr.Textbox
    category: gr.HTML  # a plain <select>: filtering happens in the browser
    styles: gr.CheckboxGroup
    clear: gr.Button
    selected: gr.HTML  # the picked styles in order, with previews
    final_prompt: gr.Textbox
    final_negative: gr.Textbox
    data: gr.HTML  # every style's preview, for the hover card
    expansion: gr.Radio  # Fooocus V2: a prompt-expansion model, or off

    def fields(self) -> dict[str, Any]:
        return {"styles": self.styles, "prompt_expansion": self.expansion}

    def shown(self) -> dict[str, Any]:
        """Widgets the whole-form render also sets (render.py names them so)."""
        return {"styles_selected": self.selected, "final_prompt": self.final_prompt, "final_negative": self.final_negative}


# -- pure views ------------------------------------------------------------------------------------------


def known(ctx: UIContext, names: Iterable[Any]) -> list[str]:
    """The names the library has, spelled as it spells them, in the given order, each once."""
    out: list[str] = []
    for name in names:
        try:
            style = ctx.services.styles.get(str(name))
        except InvalidRequest:
            continue
        if style.name not in out:
            out.append(style.name)
    return out


def choices(ctx: UIContext, selected: list[str]) -> list[tuple[str, str]]:
    """The list to show: the picked styles first (in the order they apply), then the others in library order."""
    rest = [s.name for s in ctx.services.styles.all() if s.name not in selected]
    return [(name, name) for name in [*selected, *rest]]


def preview_url(ctx: UIContext, style: Style) -> str | None:
    """A small copy of the style's preview image, served from the cache folder; None when it has none."""
    if style.preview is None:
        return None
    small = thumbnail(style.preview, ctx.services.config.resolved_cache_dir, side=PREVIEW_SIDE)
    return f"/gradio_api/file={small}" if small is not None else None


def template_html(text: str) -> str:
    """A template with its {prompt} slot marked."""
    return html.escape(text).replace(PLACEHOLDER, '<b class="easel-slot">{prompt}</b>')


def selected_html(ctx: UIContext, names: list[str]) -> str:
    names = known(ctx, names)
    if not names:
        return '<p class="easel-hint">No style picked: the prompt is sent as typed.</p>'
    items = []
    for number, name in enumerate(names, 1):
        style = ctx.services.styles.get(name)
        url = preview_url(ctx, style)
        preview = (
            f'<img class="easel-style-thumb" src="{html.escape(url)}" alt="">'
            if url
            else f'<code class="easel-style-template">{template_html(style.prompt)}</code>'
        )
        negative = f"<br><small>Negative: {html.escape(style.negative_prompt)}</small>" if style.negative_prompt else ""
        items.append(
            f'<li data-style="{html.escape(name)}"><span class="easel-style-order">{number}</span>'
            f"<div><b>{html.escape(name)}</b> <small>{html.escape(style.category)}</small><br>"
            f"{preview}{negative}</div></li>"
        )
    return f'<ol class="easel-style-list">{"".join(items)}</ol>'


def summary(ctx: UIContext, prompt: str, negative: str, styles: list[str]) -> dict[str, dict[str, Any]]:
    """The final prompt and negative prompt the engine is sent, and the picked styles' previews."""
    try:
        final, final_negative = ctx.services.styles.apply(styles, prompt or "", negative or "")
    except InvalidRequest as exc:
        final, final_negative = str(exc), ""
    return {
        "final_prompt": {"value": final},
        "final_negative": {"value": final_negative},
        "styles_selected": {"value": selected_html(ctx, styles)},
    }


def data_html(ctx: UIContext) -> str:
    """Every style's category, templates and preview URL, as data for page.js's hover card."""
    data = {
        s.name: {"category": s.category, "prompt": s.prompt, "negative": s.negative_prompt, "preview": preview_url(ctx, s)}
        for s in ctx.services.styles.all()
    }
    return f'<div id="easel-style-data" hidden data-styles="{html.escape(json.dumps(data))}"></div>'


def category_html(ctx: UIContext) -> str:
    options = "".join(f'<option value="{html.escape(c)}">{html.escape(c)}</option>' for c in ctx.services.styles.categories())
    return (
        f'<label class="easel-category"><span>Category</span><select id="easel-style-category">'
        f'<option value="">{ALL}</option>{options}</select></label>'
    )


# -- the tab ---------------------------------------------------------------------------------------------


def build(ctx: UIContext, initial: dict[str, Any]) -> StylesTab:
    picked = known(ctx, initial.get("styles") or [])
    with gr.Row(equal_height=True, elem_id="style-filters"):
        search = gr.Textbox(
            label="Search styles",
            placeholder="Words of a name or category, e.g. photo film",
            elem_id="style-search",
            scale=3,
            lines=1,
        )
        category = gr.HTML(category_html(ctx), elem_id="style-category", padding=False)
    expansion = quality.build_expansion(ctx, initial)  # Fooocus V2, first as in Fooocus's style list
    styles = gr.CheckboxGroup(
        choices(ctx, picked),
        value=picked,
        elem_id="styles",
        elem_classes=["easel-styles"],
        label="Styles (picked ones first, in the order they apply)",
        info="Each style wraps the result of the one before; click again to remove.",
    )
    clear = gr.Button("Clear styles", size="sm", elem_id="styles-clear")
    selected = gr.HTML(selected_html(ctx, picked), elem_id="styles-selected")
    shown = summary(ctx, initial.get("prompt", ""), initial.get("negative_prompt", ""), picked)
    final_prompt = gr.Textbox(
        shown["final_prompt"]["value"],
        label="Prompt that will be sent",
        lines=2,
        max_lines=8,
        interactive=False,
        elem_id="final-prompt",
    )
    final_negative = gr.Textbox(
        shown["final_negative"]["value"],
        label="Negative prompt that will be sent",
        lines=1,
        max_lines=6,
        interactive=False,
        elem_id="final-negative",
    )
    data = gr.HTML(data_html(ctx), elem_id="style-data", padding=False)

    clear.click(lambda: gr.update(choices=choices(ctx, []), value=[]), None, styles, **QUIET)
    return StylesTab(search, category, styles, clear, selected, final_prompt, final_negative, data, expansion)
