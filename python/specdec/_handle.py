"""What every owner of a C handle shares: close() by `with` and when collected."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T", bound="Owner")


class Owner:
    """Owns ``self._handle``; subclasses free it in ``close()`` and zero it."""

    _handle: Any

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: T) -> T:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_handle", None):
            self.close()
