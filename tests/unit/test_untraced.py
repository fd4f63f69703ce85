"""The ``untraced`` marker (``tests/conftest.py`` ``UNTRACED_TESTS``): coverage's tracer is off in
the test's thread and in the threads it starts, and back on for everything after it."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


class _Installer:
    """Stands in for coverage's hook for new threads: starts a tracer in the calling thread."""

    def __init__(self) -> None:
        self.tracer = _Tracer()
        # Thread objects, not idents: an ended thread's ident is reused by the next one.
        self.threads: list[threading.Thread] = []

    def __call__(self, frame: object, event: str, arg: object) -> _Tracer:
        sys.settrace(self.tracer)
        self.threads.append(threading.current_thread())
        return self.tracer


def _traced_in_a_new_thread(installer: _Installer) -> bool:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    return any(seen is thread for seen in installer.threads)


@contextmanager
def _installed(tracer: Any, hook: Any) -> Iterator[None]:
    """Makes ``tracer`` this thread's trace function and ``hook`` new threads' for the block,
    and puts back whatever ran before (coverage's own tracer in a traced run), even on failure."""
    previous_trace, previous_hook = sys.gettrace(), threading.gettrace()
    sys.settrace(tracer)
    threading.settrace(hook)
    try:
        yield
    finally:
        sys.settrace(previous_trace)
        threading.settrace(previous_hook)


def test_the_pause_stops_this_threads_tracer_and_new_threads_start_untraced() -> None:
    tracer, installer = _Tracer(), _Installer()
    with _installed(tracer, installer):
        assert _traced_in_a_new_thread(installer)
        with coverage_paused_for_new_threads_too():
            assert not tracer.running
            assert threading.gettrace() is not installer
            assert not _traced_in_a_new_thread(installer)
        assert tracer.running
        assert threading.gettrace() is installer
        assert _traced_in_a_new_thread(installer)


def test_a_thread_started_in_the_pause_is_traced_again_after_it() -> None:
    """A keep-alive connection's handler thread started by an untraced test serves the later
    tests of its module: their requests are measured (they were not: 4,846 lines of
    tests/client/test_client_methods.py's traced tests, in the four strict modules too)."""
    installer = _Installer()
    requests: list[threading.Event] = [threading.Event() for _ in range(2)]
    served: list[threading.Event] = [threading.Event() for _ in range(2)]

    def serve() -> None:
        for request, answer in zip(requests, served, strict=True):
            request.wait(10)
            (lambda: None)()  # a request's first call
            answer.set()

    with _installed(_Tracer(), installer):
        with coverage_paused_for_new_threads_too():
            thread = threading.Thread(target=serve, daemon=True)
            thread.start()
            requests[0].set()
            assert served[0].wait(10)
            assert all(seen is not thread for seen in installer.threads)  # untraced request
        requests[1].set()
        assert served[1].wait(10)
        assert any(seen is thread for seen in installer.threads)  # a later, traced request
        thread.join(10)


def test_the_pause_restores_the_tracer_when_the_test_fails() -> None:
    tracer, installer = _Tracer(), _Tracer()
    with _installed(tracer, installer):
        with pytest.raises(AssertionError), coverage_paused_for_new_threads_too():
            raise AssertionError("the test failed")
        assert tracer.running and threading.gettrace() is installer


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


def test_the_comparison_names_the_lines_a_traced_run_covers_and_make_test_does_not() -> None:
    from tests.helpers.coverage_audit import lines_not_measured

    traced = {"m.py": {1, 2, 3}, "n.py": {4}, "o.py": set()}
    measured = {"m.py": {1, 3, 9}, "p.py": {5}}
    assert lines_not_measured(traced, measured) == [("m.py", 2), ("n.py", 4)]
    assert lines_not_measured(measured, measured) == []


def test_the_comparison_reads_two_runs_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from coverage import CoverageData

    from tests.helpers.coverage_audit import compare

    for name, lines in (("traced", {"/x/m.py": [1, 2, 3]}), ("measured", {"/x/m.py": [1, 3]})):
        data = CoverageData(str(tmp_path / name))
        data.add_lines(lines)
        data.write()
    assert compare(str(tmp_path / "traced"), str(tmp_path / "measured")) == 1
    assert "/x/m.py:2 is covered when every test is traced only" in capsys.readouterr().out
    assert compare(str(tmp_path / "traced"), str(tmp_path / "traced")) == 0
