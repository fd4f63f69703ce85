"""Coverage paused: in one thread, or in one thread and every thread it starts meanwhile.

For a test whose own thread runs only test and third-party code while the product runs in
other threads (a local stack over loopback), and for the tests ``tests/conftest.py`` runs
untraced (:data:`tests.conftest.UNTRACED_TESTS`)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# What ``make test`` measures (its ``--cov`` options).
MEASURED_PACKAGES = ("chalicelib", "synapse_local", "synapse_client")


@contextmanager
def coverage_paused_in_this_thread() -> Iterator[None]:
    """Stops coverage's tracer in the calling thread for the block and starts it again after.

    The other threads keep theirs, so every product line a request runs in the server's
    threads is still measured. pytest-cov's ``no_cover`` stops every thread's tracer instead,
    and coverage restarts only the current thread's: a server thread already running stays
    unmeasured for the rest of the process. Outside coverage (``-p no:cov``, a debugger's
    Python trace function) this does nothing.
    """
    tracer = sys.gettrace()
    stop, start = getattr(tracer, "stop", None), getattr(tracer, "start", None)
    if stop is None or start is None:
        yield
        return
    stop()
    try:
        yield
    finally:
        start()


@contextmanager
def coverage_paused_for_new_threads_too() -> Iterator[None]:
    """:func:`coverage_paused_in_this_thread`, and threads started in the block run untraced
    while it lasts.

    Threads that were running before keep their tracer (a module's local stack stays
    measured); threads started after the block are traced again. A thread started in the
    block that outlives it (a keep-alive connection's handler thread in a local stack, a pool
    kept by a singleton) is traced again from its first function call after the block: it may
    serve later tests, whose lines must be measured. Until then its trace function is
    :func:`_deferred_installer`'s, which costs one Python call per function call in that
    thread and no line event.
    """
    installer = threading.gettrace()
    threading.settrace(_deferred_installer(installer) if installer is not None else None)
    try:
        with coverage_paused_in_this_thread():
            yield
    finally:
        threading.settrace(installer)


def _deferred_installer(installer: Callable[..., Any]) -> Callable[..., Any]:
    """A thread's trace function that installs ``installer`` (coverage's hook for new threads,
    which starts a tracer in the calling thread) at the first function call made while it is
    ``threading``'s hook again, and traces nothing before."""
    gettrace = threading.gettrace

    def deferred(frame: Any, event: Any, arg: Any) -> Any:
        # Still paused, or coverage paused (pytest-cov's no_cover): not this call. ``!=``, not
        # ``is``: coverage sets a new bound method as the hook when it resumes.
        if gettrace() != installer:
            return None
        return installer(frame, event, arg)

    return deferred


def _tracing() -> bool:
    tracer = sys.gettrace()
    return hasattr(tracer, "stop") and hasattr(tracer, "start")


def import_measured_modules() -> list[str]:
    """Imports ``app`` and every module of :data:`MEASURED_PACKAGES` (not ``__main__``), under
    coverage when it runs; returns their names.

    A module's body runs once per process: if an untraced test were the first to import one,
    its ``def`` and constant lines would go unmeasured in that worker, whichever tests later
    run its functions. Importing them all before the first untraced test keeps the report
    independent of which worker runs which module.
    """
    names = ["app"]
    importlib.import_module("app")
    for package in MEASURED_PACKAGES:
        root = importlib.import_module(package)
        names.append(package)
        for module in pkgutil.walk_packages(root.__path__, f"{package}."):
            if module.name.rsplit(".", 1)[-1] != "__main__":
                importlib.import_module(module.name)
                names.append(module.name)
    return names


_imported = False


@contextmanager
def untraced_test() -> Iterator[None]:
    """How ``tests/conftest.py`` runs a test marked ``untraced``: the first time in a process
    that coverage runs, :func:`import_measured_modules` (traced), then the test under
    :func:`coverage_paused_for_new_threads_too`."""
    global _imported
    if not _imported and _tracing():
        import_measured_modules()
        _imported = True
    with coverage_paused_for_new_threads_too():
        yield
