"""The ``untraced`` marker (``tests/conftest.py`` ``UNTRACED_TESTS``): coverage's tracer is off in
the test's thread and in the threads it starts, and back on for everything after it."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from tests.helpers.tracing import coverage_paused_for_new_threads_too


class _Tracer:
    """Stands in for coverage's CTracer: a trace function with ``stop`` and ``start``."""

    def __init__(self) -> None:
        self.running = True

    def __call__(self, frame: object, event: str, arg: object) -> _Tracer:
        return self

    def stop(self) -> None:
        self.running = False

    def start(self) -> None:
        self.running = True


def _hook_in_a_new_thread() -> object:
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(sys.gettrace()))
    thread.start()
    thread.join()
    return seen[0]


def test_the_pause_stops_this_threads_tracer_and_new_threads_start_untraced() -> None:
    tracer, installer = _Tracer(), _Tracer()
    previous_trace, previous_hook = sys.gettrace(), threading.gettrace()
    sys.settrace(tracer)
    threading.settrace(installer)
    try:
        assert _hook_in_a_new_thread() is installer
        with coverage_paused_for_new_threads_too():
            assert not tracer.running
            assert threading.gettrace() is None
            assert _hook_in_a_new_thread() is None
        assert tracer.running
        assert threading.gettrace() is installer
        assert _hook_in_a_new_thread() is installer
    finally:
        sys.settrace(previous_trace)
        threading.settrace(previous_hook)


def test_the_pause_restores_the_tracer_when_the_test_fails() -> None:
    tracer, installer = _Tracer(), _Tracer()
    previous_trace, previous_hook = sys.gettrace(), threading.gettrace()
    sys.settrace(tracer)
    threading.settrace(installer)
    try:
        with pytest.raises(AssertionError), coverage_paused_for_new_threads_too():
            raise AssertionError("the test failed")
        assert tracer.running and threading.gettrace() is installer
    finally:
        sys.settrace(previous_trace)
        threading.settrace(previous_hook)


def test_the_listed_tests_are_marked_untraced(request: pytest.FixtureRequest) -> None:
    from tests.conftest import UNTRACED_TESTS

    assert request.node.get_closest_marker("untraced") is None  # this one is traced
    marked = {
        item.nodeid.split("[", 1)[0]
        for item in request.session.items
        if item.get_closest_marker("untraced") is not None
    }
    assert marked <= set(UNTRACED_TESTS)
    collected = {item.nodeid.split("[", 1)[0] for item in request.session.items}
    if os.environ.get("SYNAPSE_TRACE_ALL") == "1":  # make coverage-audit traces every test
        assert marked == set()
    elif set(UNTRACED_TESTS) <= collected:  # the whole suite was collected
        assert marked == set(UNTRACED_TESTS)


def test_every_measured_module_is_imported_before_an_untraced_test() -> None:
    from pathlib import Path

    from tests.helpers.tracing import MEASURED_PACKAGES, import_measured_modules

    root = Path(__file__).resolve().parents[2]
    on_disk = {
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for package in MEASURED_PACKAGES
        for path in (root / package).rglob("*.py")
        if path.name != "__main__.py"
    }
    imported = import_measured_modules()
    assert set(imported) == on_disk | {"app"}
    assert all(name in sys.modules for name in imported)
