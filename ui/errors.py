"""Every failure in a page handler reaches the user as a readable message, never as a traceback."""

from __future__ import annotations

import functools
import html
import logging
from typing import Any, Callable

import gradio as gr

from pipelines import EaselError

log = logging.getLogger(__name__)


def user_message(exc: BaseException) -> str:
    """What to tell the user: our errors as written, anything else by type and text (details go to the log)."""
    if isinstance(exc, (EaselError, ValueError, KeyError)):
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return str(text)
    return f"Something went wrong: {type(exc).__name__}: {exc}"


def readable_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a handler so that any exception becomes a gr.Error toast with a plain message."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001 - the page must never show a traceback
            if not isinstance(exc, (EaselError, ValueError, KeyError)):
                log.exception("page handler %s failed", getattr(fn, "__name__", fn))
            raise gr.Error(html.escape(user_message(exc)), print_exception=False) from None

    return wrapper
