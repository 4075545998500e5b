"""Queue mechanics with a scripted runner: order, positions, cancel, skip, failures, late followers.

The same behaviours are checked through the real pipeline in test_manager.py; here a runner that
steps on command makes the timing exact.
"""

from __future__ import annotations

import threading

import pytest

from pipelines.errors import ImageSkipped, InvalidRequest
from pipelines.jobs.events import (
    ImageReady,
    JobCancelled,
    JobFailed,
    JobFinished,
    JobPosition,
    JobProgress,
    JobQueued,
    JobStarted,
)
from pipelines.jobs.queue import JobControl, JobQueue, QueueFull
from pipelines.types import GenerationRequest, GenerationResult, ImageParams, ImageResult, JobState


class ScriptedRunner:
    """Makes `image_count` images of `steps` steps; each step waits for the test to release it."""

    def __init__(self, gated: bool = False):
        self.gated = gated
        self.gate = threading.Semaphore(0)
        self.started = threading.Event()
        self.order: list[str] = []

    def __call__(self, control: JobControl) -> GenerationResult:
        self.order.append(control.request.prompt)
        self.started.set()
        if control.request.prompt == "boom":
            raise RuntimeError("the model exploded")
        if control.request.prompt == "bad":
            raise InvalidRequest("width must be a multiple of 8", field="width")
        for index in range(control.request.image_count):
            try:
                for step in range(control.request.steps):
                    if self.gated:
                        assert self.gate.acquire(timeout=10), "test never released the step"
                    control.emit(
                        JobProgress(control.job_id, step + 1, control.request.steps, index, control.request.image_count, None)
                    )
                    control.check()
            except ImageSkipped:
                control.result.skipped += 1
                continue
            params = ImageParams("p", "", 1, "Euler", "Automatic", 1, index, 8, 8, "m", "h")
            item = ImageResult(None, params, "")
            control.result.images.append(item)
            control.emit(ImageReady(control.job_id, index, item))
        return control.result


def req(prompt: str, steps: int = 2, images: int = 1) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, steps=steps, image_count=images)


@pytest.fixture
def make_queue():
    queues = []

    def make(runner, **kw):
        q = JobQueue(runner, **kw)
        queues.append(q)
        return q

    yield make
    for q in queues:
        q.stop()


def test_jobs_run_in_submission_order_with_positions(make_queue):
    runner = ScriptedRunner(gated=True)
    q = make_queue(runner)
    ids = [q.submit(req(f"job{i}")) for i in range(3)]
    assert [q.status(i).position for i in ids] == [1, 2, 3]
    assert [q.status(i).ahead for i in ids] == [0, 1, 2]  # nothing runs yet
    q.start()
    assert runner.started.wait(5)
    events = q.events(ids[2], timeout=5)
    queued = next(events)
    assert isinstance(queued, JobQueued) and (queued.position, queued.ahead) == (3, 2)
    # once job0 runs, job2 moves up; the running job counts as ahead of it
    moved = next(events)
    assert isinstance(moved, JobPosition) and (moved.position, moved.ahead) == (2, 2)
    assert q.status(ids[1]).ahead == 1 and q.status(ids[0]).ahead == 0
    assert q.status(ids[0]).state is JobState.RUNNING and q.status(ids[0]).position == 0
    for _ in range(6):
        runner.gate.release()
    for job_id in ids:
        assert q.wait(job_id, timeout=10).state is JobState.FINISHED
    assert runner.order == ["job0", "job1", "job2"]


def test_a_failing_job_does_not_stop_the_next(make_queue):
    q = make_queue(ScriptedRunner())
    q.start()
    bad = q.submit(req("boom"))
    invalid = q.submit(req("bad"))
    good = q.submit(req("fine"))
    assert q.wait(good, timeout=10).state is JobState.FINISHED
    failed = q.wait(bad, timeout=1)
    assert failed.state is JobState.FAILED and "RuntimeError: the model exploded" in failed.error
    last = list(q.events(invalid, timeout=1))[-1]
    assert isinstance(last, JobFailed) and last.field == "width" and last.error_type == "InvalidRequest"
    assert len(q.status(good).result.images) == 1


def test_cancel_a_waiting_job_removes_it(make_queue):
    runner = ScriptedRunner(gated=True)
    q = make_queue(runner)
    q.start()
    first = q.submit(req("first"))
    second = q.submit(req("second"))
    third = q.submit(req("third"))
    assert runner.started.wait(5)
    assert q.cancel(second)
    assert q.status(second).state is JobState.CANCELLED
    assert q.status(third).position == 1
    for _ in range(4):
        runner.gate.release()
    assert q.wait(third, timeout=10).state is JobState.FINISHED
    assert runner.order == ["first", "third"]
    assert not q.cancel(first)  # already finished


def test_cancel_the_running_job_keeps_finished_images(make_queue):
    runner = ScriptedRunner(gated=True)
    q = make_queue(runner)
    q.start()
    job = q.submit(req("long", steps=3, images=3))
    nxt = q.submit(req("next", steps=1))
    for _ in range(4):  # first image (3 steps) and one step of the second
        runner.gate.release()
    events = q.events(job, timeout=10)
    for event in events:
        if isinstance(event, ImageReady):
            break
    assert q.cancel(job)
    runner.gate.release()  # let the running step reach its check
    runner.gate.release()
    info = q.wait(job, timeout=10)
    assert info.state is JobState.CANCELLED
    assert len(info.result.images) == 1
    assert isinstance(list(q.events(job, timeout=1))[-1], JobCancelled)
    for _ in range(3):
        runner.gate.release()
    assert q.wait(nxt, timeout=10).state is JobState.FINISHED


def test_skip_drops_only_the_current_image(make_queue):
    runner = ScriptedRunner(gated=True)
    q = make_queue(runner)
    q.start()
    job = q.submit(req("batch", steps=2, images=3))
    runner.gate.release()  # image 0, step 1
    assert runner.started.wait(5)
    for event in q.events(job, timeout=10):
        if isinstance(event, JobProgress):
            break
    assert q.skip(job)
    for _ in range(5):
        runner.gate.release()
    info = q.wait(job, timeout=10)
    assert info.state is JobState.FINISHED
    assert info.result.skipped == 1 and len(info.result.images) == 2
    assert not q.skip(job)  # nothing running now


def test_late_follower_sees_every_event_from_the_start(make_queue):
    q = make_queue(ScriptedRunner())
    q.start()
    job = q.submit(req("x", steps=2, images=2))
    q.wait(job, timeout=10)
    kinds = [type(e) for e in q.events(job, timeout=1)]
    assert kinds[0] is JobQueued and kinds[1] is JobStarted
    assert kinds.count(ImageReady) == 2
    assert kinds[-1] is JobFinished


def test_queue_limit_and_interrupt(make_queue):
    runner = ScriptedRunner(gated=True)
    q = make_queue(runner, max_queue=2)
    q.start()
    running = q.submit(req("a"))
    assert runner.started.wait(5)
    waiting = [q.submit(req("b")), q.submit(req("c"))]
    with pytest.raises(QueueFull):
        q.submit(req("d"))
    assert q.interrupt() == running
    runner.gate.release()
    assert q.wait(running, timeout=10).state is JobState.CANCELLED
    for _ in range(4):
        runner.gate.release()
    assert all(q.wait(j, timeout=10).state is JobState.FINISHED for j in waiting)
    assert q.counts() == {"running": 0, "waiting": 0, "known": 3}


def test_submit_refuses_non_requests(make_queue):
    q = make_queue(ScriptedRunner())
    with pytest.raises(InvalidRequest):
        q.submit({"prompt": "x"})  # type: ignore[arg-type]


def test_a_slow_follower_gets_the_latest_progress_in_order(make_queue):
    """Progress is coalesced for a follower that falls behind, but never handed out before the events that
    came earlier (a bar going back from "step 2" to "started") nor after later ones."""
    runner = ScriptedRunner(gated=True)
    q = make_queue(runner)
    job = q.submit(req("x", steps=3))
    events = q.events(job, timeout=5)
    assert isinstance(next(events), JobQueued)
    q.start()  # the follower sleeps while the job starts and makes two steps
    runner.gate.release()
    runner.gate.release()
    for _ in range(100):
        if q.status(job).step == 2:
            break
        threading.Event().wait(0.02)
    missed = [next(events), next(events)]
    assert isinstance(missed[0], JobStarted)
    assert isinstance(missed[1], JobProgress) and missed[1].step == 2  # step 1 coalesced away
    runner.gate.release()
    rest = list(events)
    assert [type(e) for e in rest] == [JobProgress, ImageReady, JobFinished] or [type(e) for e in rest] == [
        ImageReady,
        JobFinished,
    ]  # the last step may be taken with the image
