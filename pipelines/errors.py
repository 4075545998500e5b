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


class LoraError(EaselError):
    pass


class OutOfMemory(EaselError):
    pass


class JobInterrupted(Exception):
    """Raised inside the step callback to stop the running job (cancel)."""


class ImageSkipped(Exception):
    """Raised inside the step callback to drop the current image and go on with the next (skip)."""
