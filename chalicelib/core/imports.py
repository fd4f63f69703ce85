"""Heavy imports done on a thread of their own, so that import-time state cannot pin a request.

shap keeps the exceptions of the optional imports that failed while it was imported (to report
them later). Their tracebacks reach, frame by frame, up the stack that imported shap, so the
first request to import it would keep everything its frames hold (a loaded model, its explainers,
the artifact bytes) for the life of the process, outside any cache bound. Importing on a fresh
thread leaves only that thread's short stack behind.
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType


def import_clean(name: str) -> ModuleType:
    """``name``, imported on a thread of its own the first time (then from ``sys.modules``).

    Raises:
        ImportError: The module cannot be imported (re-raised from the importing thread).
    """
    found = sys.modules.get(name)
    if found is not None:
        return found
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["module"] = importlib.import_module(name)
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name=f"import-{name}", daemon=True)
    worker.start()
    worker.join()
    error = outcome.get("error")
    if isinstance(error, BaseException):
        raise error
    module = outcome["module"]
    assert isinstance(module, ModuleType)
    return module


_hiding = threading.Lock()


def import_clean_without(name: str, absent: tuple[str, ...]) -> ModuleType:
    """:func:`import_clean` of ``name`` as if the optional modules ``absent`` were not installed.

    For libraries that import an optional dependency at import time only to offer features the
    caller never uses (shap imports matplotlib for its plots): the first import skips it, which
    a cold start pays for. A module of ``absent`` already loaded is left alone; none stays
    hidden afterwards (a later ``import matplotlib`` loads it).

    Raises:
        ImportError: ``name`` cannot be imported.
    """
    found = sys.modules.get(name)
    if found is not None:
        return found
    with _hiding:
        hidden = [module for module in absent if module not in sys.modules]
        for module in hidden:
            sys.modules[module] = None  # type: ignore[assignment]  # import raises ImportError
        try:
            return import_clean(name)
        finally:
            for module in hidden:
                if sys.modules.get(module, "") is None:
                    del sys.modules[module]
