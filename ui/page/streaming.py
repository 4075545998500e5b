"""Following one job's events and turning them into what the page shows: progress bar, live preview, gallery.

`apply` folds one event into a `View` and says which parts changed, so the page sends only those (a
gallery re-sent at every step would be re-copied each time). Pure apart from `follow`, which reads the
queue's event stream.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Any, Iterator

from pipelines import (
    Event,
    ImageReady,
    JobCancelled,
    JobFailed,
    JobFinished,
    JobPosition,
    JobProgress,
    JobQueue,
    JobQueued,
    JobStarted,
    JobStatus,
)

PREVIEW_MIN_SIDE = 64  # tiny latent previews (test models) are scaled up so browsers show blocks, not a smear


@dataclass
class ShownImage:
    """One finished image of the job: where it is and how it was made."""

    path: str
    seed: int
    infotext: str


@dataclass
class View:
    """What the page shows for one job at a moment."""

    status_html: str = ""
    preview_html: str = ""
    images: list[ShownImage] = field(default_factory=list)
    state: str = "idle"  # idle, queued, running, done, stopped, failed
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in ("done", "stopped", "failed")

    @property
    def gallery(self) -> list[tuple[str, str]]:
        return [(image.path, f"seed {image.seed}") for image in self.images]


def progress_html(fraction: float, text: str, state: str = "running") -> str:
    """The progress bar: a filled bar under one line of text; data-* attributes let tests read it."""
    pct = max(0.0, min(1.0, fraction)) * 100
    return (
        f'<div class="easel-progress easel-{state}" data-state="{state}" data-fraction="{pct:.1f}" role="progressbar" '
        f'aria-valuenow="{pct:.0f}" aria-valuemin="0" aria-valuemax="100">'
        f'<div class="easel-progress-bar" style="width:{pct:.1f}%"></div>'
        f'<span class="easel-progress-text">{html.escape(text)}</span></div>'
    )


def idle_html() -> str:
    return progress_html(0, "Ready", "idle")


def preview_html(image: Any) -> str:
    """A live preview as an inline JPEG (cheap to send every step, nothing written to disk)."""
    if image is None:
        return ""
    side = min(image.size)
    if side < PREVIEW_MIN_SIDE:
        factor = -(-PREVIEW_MIN_SIDE // max(1, side))
        image = image.resize((image.width * factor, image.height * factor), resample=0)  # nearest: keep it honest
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=80)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="easel-preview" alt="Live preview" src="data:image/jpeg;base64,{data}">'


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0, int(round(seconds)))
    return f"ETA {seconds // 60}:{seconds % 60:02d}"


def progress_text(event: JobProgress) -> str:
    parts = [f"Step {event.step}/{event.total_steps}"]
    if event.image_count > 1:
        parts.append(f"image {event.image_index + 1}/{event.image_count}")
    eta = format_eta(event.eta_seconds)
    if eta:
        parts.append(eta)
    return " · ".join(parts)


def queue_text(position: int, ahead: int) -> str:
    """The waiting line; a job with nothing ahead of it is about to start (the worker is picking it up)."""
    if ahead <= 0:
        return "Starting…"
    jobs = "1 job ahead" if ahead == 1 else f"{ahead} jobs ahead"
    return f"Waiting in the queue: position {position} ({jobs})"


def apply(view: View, event: Event) -> set[str]:
    """Fold one event into the view; returns the parts that changed ("status", "preview", "gallery")."""
    changed = {"status"}
    if isinstance(event, (JobQueued, JobPosition)):
        view.state = "queued"
        view.status_html = progress_html(0, queue_text(event.position, event.ahead), "queued")
    elif isinstance(event, JobStarted):
        view.state = "running"
        view.status_html = progress_html(0, "Starting…")
    elif isinstance(event, JobStatus):
        view.status_html = progress_html(event.fraction or 0, event.message)
    elif isinstance(event, JobProgress):
        view.state = "running"
        view.status_html = progress_html(event.fraction, progress_text(event))
        if event.preview is not None:
            view.preview_html = preview_html(event.preview)
            changed.add("preview")
    elif isinstance(event, ImageReady):
        image = event.image
        if image.path is not None:
            view.images.append(ShownImage(str(image.path), image.params.seed, image.infotext))
            changed.add("gallery")
    elif isinstance(event, JobFinished):
        n = len(event.result.images)
        text = f"Done: {n} image{'s' if n != 1 else ''} in {event.result.seconds:.1f} s"
        if event.result.skipped:
            text += f" ({event.result.skipped} skipped)"
        view.state = "done"
        view.status_html = progress_html(1, text, "done")
    elif isinstance(event, JobCancelled):
        kept = len(event.result.images)
        view.state = "stopped"
        view.status_html = progress_html(1, f"Stopped ({kept} image{'s' if kept != 1 else ''} kept)", "stopped")
    elif isinstance(event, JobFailed):
        view.state = "failed"
        view.error = event.error
        view.status_html = progress_html(1, event.error, "failed")
    else:
        changed.clear()
    if view.done and view.preview_html:
        view.preview_html = ""
        changed.add("preview")
    return changed


def follow(queue: JobQueue, job_id: str, idle_timeout: float = 3600) -> Iterator[tuple[View, set[str]]]:
    """The job's view after each event, with the parts that changed; ends with the job."""
    view = View()
    for event in queue.events(job_id, timeout=idle_timeout):
        yield view, apply(view, event)
