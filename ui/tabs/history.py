"""The History tab: every saved image, newest first, searchable and paged; restore any of them, or any
image dropped on the page (ours, A1111's, Fooocus's), into the form."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from pipelines import InvalidRequest, infotext, read_metadata
from ui.context import UIContext
from ui.errors import readable_errors
from ui.form.fields import SOURCE_LABELS, fields_from_metadata, fields_from_record
from ui.page.thumbnails import thumbnail

PER_PAGE = 24
_SUMMARY_KEYS = (
    ("steps", "Steps"),
    ("sampler", "Sampler"),
    ("scheduler", "Schedule type"),
    ("cfg_scale", "CFG scale"),
    ("seed", "Seed"),
    ("model", "Model"),
    ("performance", "Performance"),
    ("clip_skip", "Clip skip"),
)


@dataclass
class HistoryTab:
    drop: gr.File
    search: gr.Textbox
    gallery: gr.Gallery
    page_info: gr.Markdown
    previous: gr.Button
    next: gr.Button
    details: gr.Textbox
    restore: gr.Button
    to_vary: gr.Button  # send the selected image to Input Image
    to_upscale: gr.Button
    to_inpaint: gr.Button
    to_source: gr.Button  # show the image the selected one was made from
    page: gr.State  # 0-based page number
    entry_ids: gr.State  # history entry id of each gallery item
    pending: gr.State  # {"fields": ..., "source": ..., "path": ..., "input_source": ...}: what Restore and Vary use


@dataclass
class HistoryPage:
    items: list[tuple[str, str]]  # (thumbnail path, caption)
    entry_ids: list[int]
    page: int
    info: str


def load_page(ctx: UIContext, query: str, page: int, per_page: int = PER_PAGE) -> HistoryPage:
    """One page of the history matching `query` (words that must all appear), newest first."""
    history = ctx.services.history
    total = history.count(query or "")
    pages = max(1, -(-total // per_page))
    page = min(max(0, int(page or 0)), pages - 1)
    items, ids = [], []
    cache = ctx.services.config.resolved_cache_dir
    for entry in history.list(query or "", limit=per_page, offset=page * per_page):
        thumb = thumbnail(entry.path, cache)
        if thumb is None:  # the file was moved or deleted; the entry stays in the index
            continue
        prompt = entry.params.prompt_template or entry.params.prompt
        items.append((str(thumb), prompt[:80] + ("…" if len(prompt) > 80 else "")))
        ids.append(entry.id)
    if total == 0:
        info = "No images match." if query else "No images yet: generated images are listed here."
    else:
        info = f"Page {page + 1} of {pages} · {total} image{'s' if total != 1 else ''}"
    return HistoryPage(items, ids, page, info)


def describe_fields(fields: dict[str, Any]) -> str:
    """A readable summary of restorable fields (for images whose metadata has no infotext)."""
    lines = [str(fields.get("prompt", ""))]
    if fields.get("negative_prompt"):
        lines.append(f"Negative prompt: {fields['negative_prompt']}")
    pairs = [f"{label}: {fields[key]}" for key, label in _SUMMARY_KEYS if fields.get(key) not in (None, "")]
    if "width" in fields and "height" in fields:
        pairs.append(f"Size: {fields['width']}x{fields['height']}")
    if fields.get("styles"):
        pairs.append(f"Styles: {', '.join(fields['styles'])}")
    lines.append(", ".join(pairs))
    return "\n".join(line for line in lines if line)


def entry_details(ctx: UIContext, entry_id: int) -> tuple[str, dict | None]:
    entry = ctx.services.history.get(entry_id)
    if entry is None:
        return "This entry is no longer in the history.", None
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.created_at))
    text = f"{infotext(entry.params)}\n\nSaved {when}: {entry.path}"
    origin = entry.params.input_source
    if entry.params.input_mode:
        text += f"\n{entry.params.input_mode} of {origin or 'an uploaded image'} (input {entry.params.input_image or ''}"
        text += f", mask {entry.params.mask_image})" if entry.params.mask_image else ")"
    found = {"fields": fields_from_record(entry.params, entry.request), "source": "history", "path": str(entry.path)}
    return text, {**found, "input_source": origin}


def source_details(ctx: UIContext, path: str) -> tuple[str, dict | None]:
    """The History entry of the image another one was made from (by its file), for the click-through."""
    entry = ctx.services.history.find_path(path)
    if entry is None:
        return f"{path} is not in the history (moved or deleted?).", None
    return entry_details(ctx, entry.id)


def dropped_details(path: str | Path) -> tuple[str, dict | None]:
    """What a dropped image says about how it was made, and the fields to restore (None: nothing found)."""
    try:
        meta = read_metadata(path)
    except InvalidRequest as exc:
        return str(exc), None
    fields = fields_from_metadata(meta)
    source = SOURCE_LABELS.get(meta.source_app, meta.source_app)
    if meta.source_app == "unknown" and not ("seed" in fields or "steps" in fields):
        return f"No generation settings found in {Path(path).name}.", None
    text = meta.infotext or describe_fields(fields)
    return f"Made with {source} ({Path(path).name}):\n{text}", {"fields": fields, "source": source}


def build(ctx: UIContext) -> HistoryTab:
    drop = gr.File(
        label="Drop an image made by Easel, A1111 or Fooocus to read its settings",
        type="filepath",
        file_types=[".png", ".jpg", ".jpeg", ".webp"],
        elem_id="history-drop",
        height=120,
    )
    search = gr.Textbox(
        label="Search", placeholder="Words from the prompt, negative prompt, model or styles", elem_id="history-search", lines=1
    )
    gallery = gr.Gallery(
        label="History",
        columns=3,
        height="auto",
        object_fit="cover",
        elem_id="history-gallery",
        allow_preview=False,
        interactive=False,
    )
    with gr.Row(elem_id="history-pager", equal_height=True):
        previous = gr.Button("◀ Newer", size="sm", elem_id="history-prev", min_width=60)
        page_info = gr.Markdown("", elem_id="history-page-info")
        next_ = gr.Button("Older ▶", size="sm", elem_id="history-next", min_width=60)
    details = gr.Textbox(
        label="Settings of the selected image",
        lines=6,
        max_lines=16,
        interactive=False,
        elem_id="history-details",
        buttons=["copy"],
        placeholder="Pick an image above, or drop one on the page.",
    )
    with gr.Row():
        restore = gr.Button("Restore these settings", variant="primary", elem_id="history-restore", interactive=False)
        to_vary = gr.Button("Vary", elem_id="history-to-vary", interactive=False)
        to_upscale = gr.Button("Upscale", elem_id="history-to-upscale", interactive=False)
        to_inpaint = gr.Button("Inpaint", elem_id="history-to-inpaint", interactive=False)
        to_source = gr.Button("Made from…", elem_id="history-source", visible=False)
    page, entry_ids, pending = gr.State(0), gr.State([]), gr.State(None)

    @readable_errors
    def show(query: str, number: int):
        result = load_page(ctx, query, number)
        return result.items, result.entry_ids, result.page, result.info

    listing = [gallery, entry_ids, page, page_info]
    search.submit(lambda q: show(q, 0), search, listing, show_progress="hidden", api_visibility="private")
    search.change(
        lambda q: show(q, 0), search, listing, show_progress="hidden", trigger_mode="always_last", api_visibility="private"
    )
    previous.click(lambda q, n: show(q, n - 1), [search, page], listing, show_progress="hidden", api_visibility="private")
    next_.click(lambda q, n: show(q, n + 1), [search, page], listing, show_progress="hidden", api_visibility="private")

    def shown_entry(text: str, found: dict | None) -> tuple:
        usable = gr.update(interactive=found is not None)
        has_image = gr.update(interactive=bool(found and found.get("path")))
        origin = gr.update(visible=bool(found and found.get("input_source")))
        return text, found, usable, has_image, has_image, has_image, origin

    entry_outputs = [details, pending, restore, to_vary, to_upscale, to_inpaint, to_source]

    @readable_errors
    def on_select(ids: list[int], evt: gr.SelectData):
        index = evt.index if isinstance(evt.index, int) else -1
        if not 0 <= index < len(ids):
            return shown_entry(gr.skip(), None)
        return shown_entry(*entry_details(ctx, ids[index]))

    gallery.select(on_select, entry_ids, entry_outputs, show_progress="hidden", api_visibility="private")

    @readable_errors
    def on_source(found: dict | None):
        if not found or not found.get("input_source"):
            return shown_entry("This image was not made from another one.", None)
        return shown_entry(*source_details(ctx, found["input_source"]))

    to_source.click(on_source, pending, entry_outputs, show_progress="hidden", api_visibility="private")

    @readable_errors
    def on_drop(path: str | None):
        """Read the dropped file, then empty the drop zone so the next image can be dropped at once."""
        if not path:
            return *shown_entry(gr.skip(), None), None
        text, found = dropped_details(path)
        return *shown_entry(text, found), None

    drop.upload(on_drop, drop, [*entry_outputs, drop], show_progress="hidden", api_visibility="private")
    return HistoryTab(
        drop,
        search,
        gallery,
        page_info,
        previous,
        next_,
        details,
        restore,
        to_vary,
        to_upscale,
        to_inpaint,
        to_source,
        page,
        entry_ids,
        pending,
    )
