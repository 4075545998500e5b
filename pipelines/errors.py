"""Errors a user can act on. Their message is shown as-is in the page and in API answers."""

from __future__ import annotations


class EaselError(Exception):
    """Base class: the message is written for the user, not for a developer."""


class InvalidRequest(EaselError):
    """A request field is out of range or names something that does not exist."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ModelNotFound(EaselError):
    pass


class ModelLoadError(EaselError):
    pass


class HubDownloadError(EaselError):
    pass


class UnsafeCheckpoint(ModelLoadError):
    pass


class LoraError(InvalidRequest):
    """A LoRA of the request cannot be used (missing, unreadable, made for another model): the request's fault,
    so API clients get a 4xx naming the file, as for any other bad field."""

    def __init__(self, message: str, field: str | None = "loras"):
        super().__init__(message, field)


class OutOfMemory(EaselError):
    pass


class JobInterrupted(Exception):
    """Raised inside the step callback to stop the running job (cancel)."""


class ImageSkipped(Exception):
    """Raised inside the step callback to drop the current image and go on with the next (skip)."""
