"""Following a job's events and turning them into what the page shows."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Iterator

from pipelines.events import (
    Event,
    ImageReady,
    JobCancelled,
    JobFailed,
    JobFinished,
    JobPosition,
    JobProgress,
    JobQueued,
    JobStarted,
    JobStatus,
)
from pipelines.job_queue import JobQueue


@dataclass
class View:
    """What the page shows for one job at a moment."""

    status_html: str = ""
    preview: Any = None
    gallery: list[tuple[str, str]] = field(default_factory=list)
    done: bool = False
    error: str | None = None


def progress_html(fraction: float, text: str, kind: str = "running") -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return (
        f'<div class="easel-progress easel-{kind}" data-fraction="{pct:.1f}">'
        f'<div class="easel-progress-bar" style="width:{pct:.1f}%"></div>'
        f'<span class="easel-progress-text">{html.escape(text)}</span></div>'
    )


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    return f"ETA {seconds // 60}:{seconds % 60:02d}"


def apply(view: View, event: Event) -> View:
    """Fold one event into the view (pure; the UI re-renders from the result)."""
    if isinstance(event, (JobQueued, JobPosition)):
        view.status_html = progress_html(0, f"Waiting in the queue: position {event.position}", "queued")
    elif isinstance(event, JobStarted):
        view.status_html = progress_html(0, "Starting…")
    elif isinstance(event, JobStatus):
        view.status_html = progress_html(event.fraction or 0, event.message)
    elif isinstance(event, JobProgress):
        parts = [f"Step {event.step}/{event.total_steps}"]
        if event.image_count > 1:
            parts.append(f"image {event.image_index + 1}/{event.image_count}")
        eta = format_eta(event.eta_seconds)
        if eta:
            parts.append(eta)
        view.status_html = progress_html(event.fraction, " · ".join(parts))
        if event.preview is not None:
            view.preview = event.preview
    elif isinstance(event, ImageReady):
        if event.image.path is not None:
            view.gallery.append((str(event.image.path), f"seed {event.image.params.seed}"))
    elif isinstance(event, JobFinished):
        n = len(event.result.images)
        text = f"Done: {n} image{'s' if n != 1 else ''} in {event.result.seconds:.1f} s"
        if event.result.skipped:
            text += f" ({event.result.skipped} skipped)"
        view.status_html = progress_html(1, text, "done")
        view.done = True
    elif isinstance(event, JobCancelled):
        view.status_html = progress_html(1, f"Stopped ({len(event.result.images)} image(s) kept)", "stopped")
        view.done = True
    elif isinstance(event, JobFailed):
        view.status_html = progress_html(1, event.error, "failed")
        view.error = event.error
        view.done = True
    return view


def follow(queue: JobQueue, job_id: str, idle_timeout: float = 3600) -> Iterator[View]:
    view = View()
    for event in queue.events(job_id, timeout=idle_timeout):
        yield apply(view, event)
