"""Holding a job at a step of its choosing, so a test acts on a job that is surely running.

Without it, a test that waits for "a long job" to be running, then submits, polls or interrupts, only
works while the machine is slower than the job is long. A gate makes the order certain: the job stops
right after reporting the chosen step and waits there until the test releases it.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from pipelines.jobs.events import JobProgress
from pipelines.jobs.queue import JobControl, JobQueue


class StepGate:
    """`with StepGate(queue, lambda request: ...) as gate:` holds the first job the predicate picks at
    `step` of image `image` (after that step's progress is recorded); `gate.reached` is set then, and
    `gate.release()` (or leaving the block) lets it go on."""

    def __init__(self, queue: JobQueue, picks: Callable, step: int = 1, image: int = 0, timeout: float = 120):
        self.queue, self.picks, self.step, self.image, self.timeout = queue, picks, step, image, timeout
        self.reached = threading.Event()
        self._released = threading.Event()
        self._inner = None

    def __enter__(self) -> StepGate:
        self._inner = inner = self.queue._runner

        def runner(control: JobControl):
            if not self.reached.is_set() and self.picks(control.request):
                emit = control.emit

                def holding_emit(event):
                    emit(event)
                    if isinstance(event, JobProgress) and (event.image_index, event.step) == (self.image, self.step):
                        self.reached.set()
                        self._released.wait(self.timeout)

                control.emit = holding_emit
            return inner(control)

        self.queue._runner = runner
        return self

    def wait(self, timeout: float = 60) -> None:
        assert self.reached.wait(timeout), "the job never reached the gate"

    def release(self) -> None:
        self._released.set()

    def __exit__(self, *exc) -> None:
        self.release()
        self.queue._runner = self._inner


def wait_until(condition: Callable[[], object], timeout: float = 60) -> None:
    """Poll `condition` until it holds (a click's effect reaching the engine), failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)
