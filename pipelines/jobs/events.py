"""What a job tells its followers, in order: queued, started, progress..., images..., then one ending.

Events are immutable values; the job queue keeps each job's events in a log so a follower that
subscribes late (a browser tab that reconnects, an API poll) still sees all of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pipelines.types import GenerationResult, ImageResult


@dataclass(frozen=True)
class Event:
    job_id: str


@dataclass(frozen=True)
class JobQueued(Event):
    position: int  # 1 = next to run
    ahead: int = 0  # jobs that run before this one, the running one included


@dataclass(frozen=True)
class JobPosition(Event):
    position: int
    ahead: int = 0


@dataclass(frozen=True)
class JobStarted(Event):
    pass


@dataclass(frozen=True)
class JobStatus(Event):
    """A phase without steps: loading a model, downloading, hashing."""

    message: str
    fraction: float | None = None


@dataclass(frozen=True)
class JobProgress(Event):
    step: int  # steps done in the current image, 1-based
    total_steps: int
    image_index: int  # 0-based index of the image being made
    image_count: int
    eta_seconds: float | None
    preview: Any = field(default=None, repr=False, compare=False)  # PIL image or None

    @property
    def fraction(self) -> float:
        if not self.total_steps or not self.image_count:
            return 0.0
        return (self.image_index + self.step / self.total_steps) / self.image_count


@dataclass(frozen=True)
class ImageReady(Event):
    index: int
    image: ImageResult


@dataclass(frozen=True)
class JobFinished(Event):
    result: GenerationResult


@dataclass(frozen=True)
class JobFailed(Event):
    error: str
    error_type: str  # the exception class name, for API clients
    field: str | None = None  # the request field at fault, when known
    exception: Exception | None = dataclasses.field(default=None, repr=False, compare=False)  # the EaselError raised, if one was


@dataclass(frozen=True)
class JobCancelled(Event):
    result: GenerationResult  # images finished before the stop are kept


TERMINAL = (JobFinished, JobFailed, JobCancelled)
