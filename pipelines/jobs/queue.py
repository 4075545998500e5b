"""The generation queue: FIFO jobs, one worker thread that owns the device, events per job.

This is the one interface the UI and the HTTP API use: submit, cancel, skip, status, events. `submit` is
the only way in: it checks the request (the `prepare` step the services hand in) before queueing, so a
bad request raises there, naming the field, and the worker runs only checked requests.
Storage (the job table and event logs) and processing (the worker) are separate so that a failed job
only ends itself: the worker catches everything a job raises and goes on with the next.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

from pipelines.errors import EaselError, ImageSkipped, InvalidRequest, JobInterrupted, OutOfMemory
from pipelines.jobs.events import (
    TERMINAL,
    Event,
    JobCancelled,
    JobFailed,
    JobFinished,
    JobPosition,
    JobProgress,
    JobQueued,
    JobStarted,
)
from pipelines.types import GenerationRequest, GenerationResult, JobInfo, JobState

log = logging.getLogger(__name__)

KEEP_FINISHED = 200  # finished jobs remembered for status() and late followers
KEEP_IMAGES = 20  # of those, how many keep their images in memory
PREVIEW_POLL_KEEPS = 30.0  # seconds a progress poll for the preview image keeps previews coming
IDLE_POLL = 2.0  # seconds between looks for idle work (a compile finishing in the background)


class QueueFull(EaselError):
    pass


Prepare = Callable[[GenerationRequest], GenerationRequest]


class JobControl:
    """Handed to the runner: report events, and learn at each step whether to stop or skip."""

    def __init__(self, queue: JobQueue, job: _Job):
        self._queue = queue
        self._job = job
        self.job_id = job.job_id
        self.request = job.request
        self.result = GenerationResult(job_id=job.job_id)  # the runner fills it as images finish

    def emit(self, event: Event) -> None:
        self._queue._record(self._job, event)

    def check(self) -> None:
        """Raise JobInterrupted after cancel(), ImageSkipped (once) after skip()."""
        if self._job.cancel_requested:
            raise JobInterrupted(self.job_id)
        if self._job.skip_requested:
            self._job.skip_requested = False
            raise ImageSkipped(self.job_id)

    @property
    def cancelled(self) -> bool:
        return self._job.cancel_requested

    @property
    def wants_previews(self) -> bool:
        """Whether anyone looks at this job's previews: a follower of its events (the page), or a progress
        poll asking for the image lately (the API). An API job nobody watches makes none: with TAESD a preview
        costs a tenth of a CPU step."""
        job = self._job
        return job.followers > 0 or time.monotonic() - job.preview_polled < PREVIEW_POLL_KEEPS


class Runner(Protocol):
    def __call__(self, control: JobControl) -> GenerationResult: ...


@dataclass
class _Job:
    job_id: str
    request: GenerationRequest
    owner: str | None
    submitted_at: float
    state: JobState = JobState.QUEUED
    events: list[Event] = field(default_factory=list)
    progress: JobProgress | None = None
    progress_version: int = 0
    progress_after: int = 0  # how many events came before the latest progress: where it belongs in the stream
    preview: Any = None  # the latest preview image, kept while later progress events carry none
    followers: int = 0  # events() iterators reading this job now
    preview_polled: float = -float("inf")  # when latest_preview() last asked for this job's image (monotonic)
    cancel_requested: bool = False
    skip_requested: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    failure: JobFailed | None = None
    result: GenerationResult | None = None


class JobQueue:
    def __init__(
        self,
        runner: Runner | Callable[[JobControl], GenerationResult],
        max_queue: int = 100,
        prepare: Prepare | None = None,
        idle: Callable[[], bool] | None = None,
    ):
        self._runner = runner
        self._prepare = prepare
        self._idle = idle  # work for the device while no job waits (loading compiled graphs); True: it did some
        self._max_queue = max_queue
        self._cond = threading.Condition()
        self._jobs: dict[str, _Job] = {}
        self._waiting: collections.deque[_Job] = collections.deque()
        self._finished: collections.deque[str] = collections.deque()
        self._running: _Job | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._counter = itertools.count(1)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="generation-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 10) -> None:
        """Cancel everything and end the worker (used at shutdown and by tests)."""
        with self._cond:
            self._stopping = True
            for job in list(self._waiting):
                self._end(job, JobState.CANCELLED, JobCancelled(job.job_id, GenerationResult(job.job_id)))
            self._waiting.clear()
            if self._running:
                self._running.cancel_requested = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- the interface ------------------------------------------------------------------------------

    def submit(self, request: GenerationRequest, owner: str | None = None) -> str:
        """Check and queue a job; returns its id. The job's first event is JobQueued with its position.

        Raises what the check raises (InvalidRequest naming the field, ModelNotFound), or QueueFull; the
        job then runs the checked request (names normalized, mode resolved), never checked again.
        """
        if not isinstance(request, GenerationRequest):
            raise InvalidRequest("submit() takes a GenerationRequest")
        if self._prepare is not None:
            request = self._prepare(request)  # outside the lock: it may read style and wildcard files
        with self._cond:
            if self._stopping:
                raise EaselError("The app is shutting down; no new jobs are taken.")
            if len(self._waiting) >= self._max_queue:
                raise QueueFull(f"The queue is full ({self._max_queue} jobs waiting); try again when some have finished.")
            job_id = f"{next(self._counter):04d}-{uuid.uuid4().hex[:8]}"
            job = _Job(job_id=job_id, request=request, owner=owner, submitted_at=time.time())
            self._jobs[job_id] = job
            self._waiting.append(job)
            self._append(job, JobQueued(job_id, self._position_locked(job), self._ahead_locked(job)))
            self._cond.notify_all()
        return job_id

    def cancel(self, job_id: str) -> bool:
        """Stop a job: a waiting one leaves the queue, the running one stops at its next step."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.state.done:
                return False
            if job.state is JobState.QUEUED:
                self._waiting.remove(job)
                self._end(job, JobState.CANCELLED, JobCancelled(job_id, GenerationResult(job_id)))
                self._announce_positions()
            else:
                job.cancel_requested = True
            self._cond.notify_all()
            return True

    def interrupt(self) -> str | None:
        """Stop whatever runs now (A1111's interrupt); returns its id."""
        with self._cond:
            job = self._running
        if job is not None and self.cancel(job.job_id):
            return job.job_id
        return None

    def skip(self, job_id: str | None = None) -> bool:
        """Drop the image being made by the running job and go on with its next one."""
        with self._cond:
            job = self._running
            if job is None or (job_id is not None and job.job_id != job_id):
                return False
            job.skip_requested = True
            return True

    def status(self, job_id: str) -> JobInfo:
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None:
                raise KeyError(job_id)
            return self._info(job)

    def jobs(self) -> list[JobInfo]:
        """Running first, then waiting in order."""
        with self._cond:
            active = ([self._running] if self._running else []) + list(self._waiting)
            return [self._info(j) for j in active]

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {"running": int(self._running is not None), "waiting": len(self._waiting), "known": len(self._jobs)}

    def events(self, job_id: str, timeout: float | None = None) -> Iterator[Event]:
        """Every event of the job from the first, then live ones, ending after its terminal event.

        Progress events are coalesced: a slow follower gets the latest, not a backlog, in its place among
        the other events (which all arrive, in order). With a timeout,
        the iterator ends quietly when nothing happens for that long.
        """
        index, seen_progress = 0, 0
        with self._cond:
            job = self._jobs.get(job_id)
            if job is not None:
                job.followers += 1
        try:
            yield from self._events(job_id, timeout, index, seen_progress)
        finally:
            with self._cond:
                if job is not None:
                    job.followers -= 1

    def _events(self, job_id: str, timeout: float | None, index: int, seen_progress: int) -> Iterator[Event]:
        while True:
            with self._cond:
                job = self._jobs.get(job_id)
                if job is None:
                    raise KeyError(job_id)
                deadline = None if timeout is None else time.monotonic() + timeout
                while index >= len(job.events) and job.progress_version == seen_progress:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return
                    self._cond.wait(remaining)
                batch: list[Event] = list(job.events[index:])
                if job.progress_version != seen_progress and not any(isinstance(e, TERMINAL) for e in batch):
                    # in its place among the events, so a follower never sees the job step back (progress,
                    # then the older "started"); the events after it are newer than it
                    batch.insert(max(0, job.progress_after - index), job.progress)
                index = len(job.events)
                seen_progress = job.progress_version
            for event in batch:
                yield event
                if isinstance(event, TERMINAL):
                    return

    def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._jobs[job_id].state.done:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(job_id)
                self._cond.wait(remaining)
            return self._info(self._jobs[job_id])

    def latest_progress(self) -> JobProgress | None:
        with self._cond:
            return self._running.progress if self._running else None

    def latest_preview(self) -> Any:
        """The running job's most recent preview image (a step's progress may carry none), or None; asking
        keeps previews coming for a while (JobControl.wants_previews)."""
        with self._cond:
            if self._running is None:
                return None
            self._running.preview_polled = time.monotonic()
            return self._running.preview

    def running(self) -> JobInfo | None:
        with self._cond:
            return self._info(self._running) if self._running else None

    # -- the worker ---------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                free = not self._waiting and not self._stopping
            if free and self._idle is not None and self._idle_step():
                continue  # idle work done (jobs that came meanwhile run next); look for more
            with self._cond:
                if not self._waiting and not self._stopping:
                    self._cond.wait(IDLE_POLL if self._idle is not None else None)
                    continue
                if self._stopping:
                    return
                job = self._waiting.popleft()
                job.state = JobState.RUNNING
                job.started_at = time.time()
                self._running = job
                self._append(job, JobStarted(job.job_id))
                self._announce_positions()
                self._cond.notify_all()
            self._run_one(job)

    def _idle_step(self) -> bool:
        try:
            return bool(self._idle())
        except Exception:  # noqa: BLE001 - idle work is an optimization; its failure must not end the worker
            log.warning("idle work failed", exc_info=True)
            return False

    def _run_one(self, job: _Job) -> None:
        control = JobControl(self, job)
        try:
            result = self._runner(control)
        except JobInterrupted:
            with self._cond:
                self._end(job, JobState.CANCELLED, JobCancelled(job.job_id, control.result), control.result)
        except BaseException as exc:  # noqa: BLE001 - a job's failure must never end the worker
            message, field_name = describe_error(exc)
            if not isinstance(exc, EaselError):
                log.error("job %s failed:\n%s", job.job_id, traceback.format_exc())
            failure = JobFailed(job.job_id, message, type(exc).__name__, field_name, kept_error(exc))
            with self._cond:
                job.error = message
                job.failure = failure
                self._end(job, JobState.FAILED, failure, control.result)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            with self._cond:
                if job.cancel_requested:
                    self._end(job, JobState.CANCELLED, JobCancelled(job.job_id, result), result)
                else:
                    self._end(job, JobState.FINISHED, JobFinished(job.job_id, result), result)
        finally:
            with self._cond:
                self._running = None
                self._cond.notify_all()

    # -- bookkeeping (call with the lock held) ----------------------------------------------------

    def _record(self, job: _Job, event: Event) -> None:
        with self._cond:
            if isinstance(event, JobProgress):
                job.progress = event
                job.progress_version += 1
                job.progress_after = len(job.events)
                if event.preview is not None:
                    job.preview = event.preview
            else:
                self._append(job, event)
            self._cond.notify_all()

    def _append(self, job: _Job, event: Event) -> None:
        job.events.append(event)

    def _end(self, job: _Job, state: JobState, event: Event, result: GenerationResult | None = None) -> None:
        job.state = state
        job.finished_at = time.time()
        job.preview = None
        job.result = result if result is not None else getattr(event, "result", None)
        self._append(job, event)
        self._finished.append(job.job_id)
        self._forget_old()
        self._cond.notify_all()

    def _forget_old(self) -> None:
        while len(self._finished) > KEEP_FINISHED:
            self._jobs.pop(self._finished.popleft(), None)
        for job_id in list(self._finished)[:-KEEP_IMAGES]:
            job = self._jobs.get(job_id)
            if job is not None and job.result is not None:
                for image in job.result.images:
                    object.__setattr__(image, "image", None)

    def _announce_positions(self) -> None:
        for job in self._waiting:
            self._append(job, JobPosition(job.job_id, self._position_locked(job), self._ahead_locked(job)))

    def _position_locked(self, job: _Job) -> int:
        if job.state is JobState.RUNNING:
            return 0
        if job.state.done:
            return -1
        return list(self._waiting).index(job) + 1

    def _ahead_locked(self, job: _Job) -> int:
        """Jobs that will run before this one: those in front of it in the line, and the running one."""
        position = self._position_locked(job)
        if position <= 0:
            return 0
        return position - 1 + (1 if self._running is not None else 0)

    def _info(self, job: _Job) -> JobInfo:
        progress = job.progress
        return JobInfo(
            job_id=job.job_id,
            state=job.state,
            position=self._position_locked(job),
            request=job.request,
            submitted_at=job.submitted_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            ahead=self._ahead_locked(job),
            step=progress.step if progress else 0,
            total_steps=progress.total_steps if progress else 0,
            image_index=progress.image_index if progress else 0,
            image_count=progress.image_count if progress else job.request.image_count,
            error=job.error,
            failure=job.failure,
            result=job.result,
            cancel_requested=job.cancel_requested,
            skip_requested=job.skip_requested,
        )


def kept_error(exc: BaseException) -> EaselError | None:
    """The user-facing error itself, for callers that map its type (the API's status codes); its traceback
    is dropped, since it would keep the failed job's tensors alive as long as the job is remembered."""
    if not isinstance(exc, EaselError):
        return None
    exc.__traceback__ = exc.__context__ = exc.__cause__ = None
    return exc


def describe_error(exc: BaseException) -> tuple[str, str | None]:
    """A message a user can act on, and the request field at fault when known."""
    if isinstance(exc, EaselError):
        return str(exc), getattr(exc, "field", None)
    text = str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return (
            str(
                OutOfMemory(
                    "Out of memory while generating. Try a smaller size or fewer images, close other programs, "
                    "or start with a smaller --cache-budget-gb so fewer models stay loaded."
                )
            ),
            None,
        )
    return f"Generation failed: {type(exc).__name__}: {text}".strip(), None
