"""What the queue tells about the running job (for the API's progress): the job, its flags, its latest preview."""

from __future__ import annotations

import threading

from PIL import Image

from pipelines.jobs.events import JobProgress
from pipelines.jobs.queue import JobControl, JobQueue
from pipelines.types import GenerationRequest, GenerationResult, JobState


class SteppedRunner:
    """Emits one progress event per release of `gate`: a preview on odd steps, none on even ones."""

    def __init__(self, steps: int):
        self.steps = steps
        self.gate = threading.Semaphore(0)
        self.emitted = threading.Semaphore(0)
        self.previews: list[Image.Image] = []

    def __call__(self, control: JobControl) -> GenerationResult:
        for step in range(1, self.steps + 1):
            assert self.gate.acquire(timeout=10)
            preview = Image.new("RGB", (8, 8), (step, 0, 0)) if step % 2 else None
            if preview is not None:
                self.previews.append(preview)
            control.emit(
                JobProgress(control.job_id, step, self.steps, 0, 1, eta_seconds=float(self.steps - step), preview=preview)
            )
            self.emitted.release()
            control.check()
        return control.result


def test_running_job_flags_and_latest_preview():
    runner = SteppedRunner(steps=4)
    queue = JobQueue(runner)
    try:
        assert queue.running() is None and queue.latest_preview() is None
        queue.start()
        job_id = queue.submit(GenerationRequest(prompt="p", steps=4))
        runner.gate.release()
        assert runner.emitted.acquire(timeout=10)  # step 1, with a preview
        info = queue.running()
        assert info is not None and info.job_id == job_id and info.state is JobState.RUNNING and info.step == 1
        assert queue.latest_preview() is runner.previews[0]
        runner.gate.release()
        assert runner.emitted.acquire(timeout=10)  # step 2 carries none: the last one is kept
        assert queue.latest_progress().preview is None
        assert queue.latest_preview() is runner.previews[0]
        runner.gate.release()
        assert runner.emitted.acquire(timeout=10)  # step 3: a newer preview replaces it
        assert queue.latest_preview() is runner.previews[1]

        assert queue.skip(job_id)
        assert queue.running().skip_requested and not queue.running().cancel_requested
        assert queue.cancel(job_id)
        assert queue.running().cancel_requested
        runner.gate.release()
        assert queue.wait(job_id, timeout=10).state is JobState.CANCELLED
        assert queue.running() is None and queue.latest_preview() is None
        assert queue.status(job_id).cancel_requested
    finally:
        queue.stop()
