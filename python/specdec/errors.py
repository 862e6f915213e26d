"""Errors raised by the specdec package."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ._lib import lib

if TYPE_CHECKING:
    from .types import Result


class SpecdecError(RuntimeError):
    """A call into the C library failed.

    ``status`` is the sd_status_t name (``"SD_ERR_INVALID_ARG"``, ...) and ``message`` the
    library's detail naming the value that was wrong. ``result`` holds what a generation
    made before it failed (or None)."""

    def __init__(self, status: str, message: str, result: Optional["Result"] = None) -> None:
        super().__init__(f"{status}: {message}" if message else status)
        self.status = status
        self.message = message
        self.result = result


class DrafterError(SpecdecError):
    """Python code a generation called — a drafter, ``on_token`` or ``on_step`` — raised;
    the exception is the ``__cause__`` (the generation stopped there)."""


def check(status: int, what: str = "") -> None:
    """Raise SpecdecError for a failed status, with sd_last_error() (read on this thread)."""
    if status != 0:
        raise error(status, what)


def error(status: int, what: str = "", result: Optional["Result"] = None) -> SpecdecError:
    name = lib.sd_status_string(status).decode()
    detail = (lib.sd_last_error() or b"").decode("utf-8", "replace")
    message = f"{what}: {detail}" if what and detail else (what or detail)
    return SpecdecError(name, message, result)
