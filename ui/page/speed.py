"""The line under Generate: about how long the form's job takes here, and the one-time compile while it runs.

The estimate comes from this machine's own measured step times (the engine records them per architecture,
size and guidance); before the first image of a kind it says nothing rather than guess. The compile line
shows while the UNet is compiled in the background ("Optimizing for this CPU (one time)…").
"""

from __future__ import annotations

import html
from typing import Any

from ui.context import UIContext
from ui.form.fields import request_from_form

LONG_JOB = 20.0  # seconds: from here the estimate is shown as a warning


def clock(seconds: float) -> str:
    seconds = max(1, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


def estimate_html(ctx: UIContext, form: dict[str, Any]) -> str:
    try:
        request = request_from_form(form, ctx.tables)
        seconds = ctx.services.manager.estimate(request)
    except Exception:  # noqa: BLE001 - a half-filled form has no estimate; the job itself reports what is wrong
        return ""
    if seconds is None:
        return ""
    css = "easel-estimate easel-long" if seconds >= LONG_JOB else "easel-estimate"
    images = f"{request.image_count} images" if request.image_count > 1 else "1 image"
    text = f"About {clock(seconds)} for {images} on this machine (from the images made here)."
    return f'<div class="{css}" data-seconds="{seconds:.1f}">{html.escape(text)}</div>'


def compile_html(ctx: UIContext) -> str:
    status = ctx.services.compile_status()
    if status is None or not (status.busy or status.phase == "failed"):
        return ""
    pct = "" if status.fraction is None else f' data-fraction="{status.fraction * 100:.0f}"'
    return f'<div class="easel-optimizing" data-phase="{status.phase}"{pct}>{html.escape(status.message)}</div>'
