"""Lazily created, resettable singletons.

Route handlers get their collaborators from getters decorated with :func:`lazy`, so a Lambda cold
start creates clients only when a request needs them and tests can swap or reset them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_REGISTRY: list[Lazy[Any]] = []


class Lazy(Generic[T]):
    """A thread-safe lazily built value with ``override`` and ``reset`` for tests."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._built = False
        self._lock = threading.Lock()
        self.__doc__ = factory.__doc__
        self.__name__ = getattr(factory, "__name__", "lazy")

    def __call__(self) -> T:
        if self._built:
            return self._value  # type: ignore[return-value]
        with self._lock:
            if not self._built:
                self._value = self._factory()
                self._built = True
        return self._value

    def override(self, value: T) -> None:
        """Makes the getter return ``value`` until the next reset."""
        with self._lock:
            self._value = value
            self._built = True

    def reset(self) -> None:
        """Forgets the built value; the next call builds a new one."""
        with self._lock:
            self._value = None
            self._built = False


def lazy(factory: Callable[[], T]) -> Lazy[T]:
    """Decorates a zero-argument factory into a registered :class:`Lazy` getter."""
    getter = Lazy(factory)
    _REGISTRY.append(getter)
    return getter


def reset_all() -> None:
    """Resets every registered lazy getter (used between tests and on local-stack restart)."""
    for getter in _REGISTRY:
        getter.reset()
