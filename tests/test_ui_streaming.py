"""Events -> what the page shows: progress text, queue position, preview, gallery, endings."""

from __future__ import annotations

import base64
import io
import re
import threading

from PIL import Image

from pipelines.jobs.events import (
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
from pipelines.jobs.queue import JobQueue
from pipelines.types import GenerationRequest, GenerationResult, ImageParams, ImageResult, JobState
from ui.page.streaming import View, apply, follow, format_eta, preview_html


def image_result(path: str, seed: int) -> ImageResult:
    params = ImageParams(
        prompt="p",
        negative_prompt="",
        steps=2,
        sampler="Euler",
        scheduler="Automatic",
        cfg_scale=7,
        seed=seed,
        width=64,
        height=64,
        model="m",
        model_hash="",
    )
    return ImageResult(path=path, params=params, infotext=f"p\nSeed: {seed}")


def text_of(view: View) -> str:
    return re.sub(r"<[^>]+>", "", view.status_html)


def test_events_fold_into_the_view():
    view = View()
    assert apply(view, JobQueued("j", 2, ahead=2)) == {"status"}
    assert view.state == "queued" and "position 2 (2 jobs ahead)" in text_of(view)
    apply(view, JobPosition("j", 1, ahead=1))
    assert "position 1 (1 job ahead)" in text_of(view)
    apply(view, JobPosition("j", 1, ahead=0))  # the job ahead ended; the worker is picking this one up
    assert view.state == "queued" and text_of(view) == "Starting…"
    apply(view, JobStarted("j"))
    apply(view, JobStatus("j", "Loading tiny-sd15…", 0.5))
    assert "Loading tiny-sd15" in text_of(view) and 'data-fraction="50.0"' in view.status_html
    preview = Image.new("RGB", (8, 8), (200, 10, 10))
    changed = apply(view, JobProgress("j", 3, 4, 1, 2, 65.0, preview))
    assert changed == {"status", "preview"} and view.state == "running"
    assert text_of(view) == "Step 3/4 · image 2/2 · ETA 1:05"
    assert 'data-fraction="87.5"' in view.status_html
    data = base64.b64decode(re.search(r"base64,([^\"]+)", view.preview_html).group(1))
    shown = Image.open(io.BytesIO(data))
    assert shown.size == (64, 64) and shown.getpixel((32, 32))[0] > 150  # scaled up, colour kept
    assert apply(view, ImageReady("j", 0, image_result("/out/a.png", 5))) == {"status", "gallery"}
    assert view.gallery == [("/out/a.png", "seed 5")] and view.images[0].infotext.endswith("Seed: 5")
    result = GenerationResult("j", [image_result("/out/a.png", 5)], skipped=1, seconds=3.25)
    assert apply(view, JobFinished("j", result)) == {"status", "preview"}
    assert view.done and view.preview_html == "" and text_of(view) == "Done: 1 image in 3.2 s (1 skipped)"


def test_failures_and_stops_read_plainly():
    view = View()
    apply(view, JobFailed("j", "No checkpoint named 'x' in models/checkpoints.", "ModelNotFound"))
    assert view.state == "failed" and view.error.startswith("No checkpoint")
    assert 'data-state="failed"' in view.status_html and "Traceback" not in view.status_html
    view = View()
    apply(view, JobCancelled("j", GenerationResult("j", [image_result("/a.png", 1), image_result("/b.png", 2)])))
    assert view.state == "stopped" and text_of(view) == "Stopped (2 images kept)"
    view = View()
    apply(view, JobFailed("j", "<b>bad</b> prompt", "InvalidRequest"))
    assert "&lt;b&gt;bad&lt;/b&gt;" in view.status_html  # messages are text, never markup


def test_eta_and_preview_helpers():
    assert format_eta(None) == "" and format_eta(0.4) == "ETA 0:00" and format_eta(3725) == "ETA 62:05"
    assert preview_html(None) == ""
    big = preview_html(Image.new("RGB", (512, 384)))  # an SDXL-sized latent preview is sent as it is
    assert Image.open(io.BytesIO(base64.b64decode(re.search(r"base64,([^\"]+)", big).group(1)))).size == (512, 384)


def test_follow_reads_a_job_through_the_queue():
    """A waiting job sees its position; the view ends with the job (fake runner: this is about streaming)."""
    gate = threading.Event()

    def runner(control):
        if control.request.prompt == "first":
            gate.wait(10)
        control.emit(JobProgress(control.job_id, 1, 1, 0, 1, 0.0))
        return GenerationResult(control.job_id)

    queue = JobQueue(runner)
    queue.start()
    try:
        first = queue.submit(GenerationRequest(prompt="first"))
        for _event in queue.events(first, timeout=10):
            if queue.status(first).state is JobState.RUNNING:
                break
        second = queue.submit(GenerationRequest(prompt="second"))
        states = []
        for view, _changed in follow(queue, second, idle_timeout=10):
            states.append((view.state, text_of(view)))
            gate.set()
        assert states[0] == ("queued", "Waiting in the queue: position 1 (1 job ahead)")
        assert ("running", "Starting…") in states  # progress may be coalesced away when the job ends at once
        assert states[-1] == ("done", "Done: 0 images in 0.0 s")
        assert queue.status(first).state.done
    finally:
        queue.stop()
