"""Where a foreign exception enters, it becomes ours: `StorageUnavailable`, with the original as its cause.

Each store (MongoDB) and each Redis structure is decorated once with the
driver's root exception; every public method, generators included, then raises
only our tree. Callers (the API's one error handler, the Celery
tasks' retry policy, the submission path's withdrawal) name our error, never a
driver's.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from worker.errors import StorageUnavailable

T = TypeVar("T")


def translating(foreign: type[BaseException], what: str) -> Callable[[type[T]], type[T]]:
    """A class decorator: `foreign` raised by a public method (or while a generator method is iterated) becomes
    StorageUnavailable naming `what`."""

    def decorate(cls: type[T]) -> type[T]:
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.isfunction(member):
                setattr(cls, name, _translated(member, foreign, what))
        return cls

    return decorate


def unavailable(what: str, exc: BaseException) -> StorageUnavailable:
    return StorageUnavailable(
        f"The service's storage ({what}) cannot be reached right now: the request was not accepted; retry ({exc})",
        "request",
    )


def _translated(function: Callable[..., Any], foreign: type[BaseException], what: str) -> Callable[..., Any]:
    if inspect.isgeneratorfunction(function):

        @functools.wraps(function)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from function(*args, **kwargs)
            except foreign as exc:
                raise unavailable(what, exc) from exc

        return generator

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except foreign as exc:
            raise unavailable(what, exc) from exc

    return call
