"""A byte budget for loaded models: the models kept in memory and the loads under way share it.

A warm instance keeps recently used models (with their background rows and built explainers) so
that it does not read and rebuild them on every request. Counting entries does not bound memory
(one forest can be a thousand times another), so the cache is bounded in bytes: each entry is
charged what :func:`estimate_bytes` finds in its arrays, and a load reserves what the artifact
declares before it starts, evicting the least recently used models to make room. A model that
cannot fit in the whole budget is refused before it is loaded.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType
from typing import Any

from chalicelib.core.errors import Conflict
from chalicelib.explainability.errors import ModelTooLarge

# Objects visited at most when estimating a size (a 1,000-tree forest has tens of thousands).
MAX_OBJECTS = 2_000_000
_OPAQUE = (type, ModuleType, FunctionType, BuiltinFunctionType, MethodType, str, bytes, int, float)


def estimate_bytes(*roots: Any) -> int:
    """Bytes held by ``roots``: their numpy arrays and sparse matrices, plus Python objects.

    Arrays are counted once per buffer (views of one array share it). Objects are followed
    through containers, ``__dict__``, ``__slots__`` and, for extension types without a
    ``__dict__`` (scikit-learn's trees, neighbour trees), their ``__getstate__``.
    """
    import numpy as np

    # Visited objects stay referenced until the end: ids of freed temporaries (the states of
    # extension types) would be reused and wrongly look visited.
    seen: dict[int, Any] = {}
    buffers: dict[int, Any] = {}
    total = 0
    stack = list(roots)
    while stack and len(seen) < MAX_OBJECTS:
        obj = stack.pop()
        if id(obj) in seen or obj is None:
            continue
        seen[id(obj)] = obj
        if isinstance(obj, np.ndarray):
            total += _array_bytes(obj, buffers)
            if obj.dtype.hasobject:
                stack.extend(obj.ravel().tolist())
            continue
        total += _sizeof(obj)
        if not isinstance(obj, _OPAQUE):
            stack.extend(_children(obj))
    return total


def _array_bytes(array: Any, buffers: dict[int, Any]) -> int:
    base = array
    while getattr(base, "base", None) is not None and hasattr(base.base, "nbytes"):
        base = base.base
    if id(base) in buffers:
        return 0
    buffers[id(base)] = base
    return int(getattr(base, "nbytes", array.nbytes))


def _sizeof(obj: Any) -> int:
    try:
        return sys.getsizeof(obj)
    except TypeError:
        return 0


def _children(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, list | tuple | set | frozenset):
        return list(obj)
    found: list[Any] = []
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):
        found.extend(attrs.values())
    for slot in getattr(type(obj), "__slots__", ()) or ():
        found.append(getattr(obj, slot, None))
    if attrs is None and type(obj).__module__.startswith("sklearn."):
        found.append(_state(obj))
    return found


def _state(obj: Any) -> Any:
    try:
        return obj.__getstate__()
    except Exception:  # an extension type without state holds nothing we can see
        return None


@dataclass
class _Entry:
    value: Any
    charge: int


class ModelMemory:
    """The byte budget: cached values and reservations of loads under way.

    Args:
        capacity: Bytes the cached models and the loads in flight may take together.
        max_entries: Cached values kept at most (whatever their size).
        wait_seconds: How long a load waits for other loads to finish before giving up.
    """

    def __init__(self, capacity: int, max_entries: int = 8, wait_seconds: float = 10.0) -> None:
        self.capacity = capacity
        self.max_entries = max_entries
        self.wait_seconds = wait_seconds
        self.in_flight = 0
        self.evictions = 0
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._cond = threading.Condition()
        self._local = threading.local()

    @property
    def cached_bytes(self) -> int:
        """Bytes charged to the cached values."""
        with self._cond:
            return sum(entry.charge for entry in self._entries.values())

    def keys(self) -> list[Hashable]:
        """The cached keys, least recently used first."""
        with self._cond:
            return list(self._entries)

    def get(self, key: Hashable) -> Any:
        """The cached value (now the most recently used), or ``None``."""
        with self._cond:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry.value

    def put(self, key: Hashable, value: Any, charge: int) -> None:
        """Caches ``value`` charged ``charge`` bytes, evicting others to fit.

        A value larger than the whole budget is not kept (the caller still has it).
        """
        with self._cond:
            self._entries.pop(key, None)
            if charge > self.capacity:
                return
            self._entries[key] = _Entry(value, charge)
            self._fit(keep=key)
            self._cond.notify_all()

    def recharge(self, key: Hashable, charge: int) -> None:
        """Charges a cached value anew (it grew: explainers were built for it)."""
        with self._cond:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry.charge = charge
            if charge > self.capacity:
                del self._entries[key]
            self._fit(keep=key)
            self._cond.notify_all()

    @contextmanager
    def reserve(self, nbytes: int, what: str = "the model") -> Iterator[None]:
        """Holds ``nbytes`` of the budget while a load runs, evicting cached values first.

        Reservations nest (the artifact's bytes, then what loading it takes): a thread's inner
        reservation counts with its outer ones, so a load that can never fit fails at once.

        Raises:
            ModelTooLarge: ``nbytes`` exceeds the whole budget.
            Conflict: Other loads hold the budget longer than ``wait_seconds``.
        """
        held = getattr(self._local, "held", 0)  # this thread's enclosing reservations
        if held + nbytes > self.capacity:
            raise ModelTooLarge(
                f"{what} needs {held + nbytes} bytes of memory to load; this function's model "
                f"memory budget is {self.capacity} bytes (SYNAPSE_MODEL_MEMORY_BYTES)"
            )
        deadline = time.monotonic() + self.wait_seconds
        with self._cond:
            while not self._fits(nbytes):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Conflict("other models are loading and hold the memory budget; retry")
                self._cond.wait(remaining)
            self.in_flight += nbytes
        self._local.held = held + nbytes
        try:
            yield
        finally:
            self._local.held = held
            with self._cond:
                self.in_flight -= nbytes
                self._cond.notify_all()

    def _fits(self, nbytes: int) -> bool:
        """Whether ``nbytes`` fits now, after evicting what must go (call with the lock held)."""
        while self._used() + nbytes > self.capacity and self._entries:
            self._entries.popitem(last=False)
            self.evictions += 1
        return self._used() + nbytes <= self.capacity

    def _fit(self, keep: Hashable) -> None:
        while len(self._entries) > 1 and (
            self._used() > self.capacity or len(self._entries) > self.max_entries
        ):
            oldest = next(iter(self._entries))
            if oldest == keep:
                self._entries.move_to_end(keep)
                continue
            del self._entries[oldest]
            self.evictions += 1

    def _used(self) -> int:
        return self.in_flight + sum(entry.charge for entry in self._entries.values())
