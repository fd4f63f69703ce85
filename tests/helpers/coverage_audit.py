"""Which lines only the untraced tests cover: ``make coverage-audit`` runs the suite with every
test traced and a coverage context per test, then this names each such line (exit status 1).

An empty answer does not by itself mean running :data:`tests.conftest.UNTRACED_TESTS` untraced
leaves the report exactly as tracing them would: a line run once per process (a cached loader's
body) is recorded only for the first test to reach it in its worker, and which that is depends
on how ``--dist loadfile`` handed out the modules; and a thread the audit sees traced may run
untraced in ``make test``. ``--compare TRACED MEASURED`` checks the claim itself on two runs'
data: it names each line a fully traced run covers and a ``make test`` run does not.
``--propose DATA DURATIONS MIN_SECONDS`` names the tests worth adding to the untraced list: from
the longest down (a ``--durations=0`` log of a ``make test`` run gives each test's seconds), every
test of at least ``MIN_SECONDS`` whose every line some traced test (or an import) still covers.
Usage: ``python -m tests.helpers.coverage_audit [.coverage]``,
``python -m tests.helpers.coverage_audit --compare traced.coverage make-test.coverage`` or
``python -m tests.helpers.coverage_audit --propose traced.coverage durations.log 0.5``.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

# One line of pytest's ``--durations`` report: seconds, phase, test id.
_DURATION = re.compile(r"^\s*([\d.]+)s (?:setup|call|teardown)\s+(\S+)")


def _test_of(context: str) -> str:
    """``tests/x.py::test_y[param]|run`` -> ``tests/x.py::test_y``; "" (no test) stays ""."""
    return context.rsplit("|", 1)[0].split("[", 1)[0]


def lines_only_these_cover(
    contexts_by_line: dict[tuple[str, int], set[str]], tests: set[str]
) -> list[tuple[str, int]]:
    """The lines every one of whose covering contexts is one of ``tests`` (lines run outside
    any test, at import or collection, count as covered by the rest of the suite)."""
    return sorted(
        line
        for line, contexts in contexts_by_line.items()
        if contexts and {_test_of(context) for context in contexts} <= tests
    )


def untraceable(
    contexts_by_line: dict[tuple[str, int], set[str]],
    untraced: set[str],
    seconds: dict[str, float],
    min_seconds: float,
) -> list[str]:
    """The tests that can run untraced besides ``untraced``, longest first.

    A test of ``seconds`` at least ``min_seconds`` is taken, longest first, when every line it
    covers is still covered by a test that stays traced or was run outside any test; taking it
    uses that cover up, so no line ends up covered by untraced tests only.
    """
    covering: dict[tuple[str, int], set[str]] = {}
    lines_of: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for line, contexts in contexts_by_line.items():
        tests = {_test_of(context) for context in contexts}
        if not tests or "" in tests:
            continue  # never run, or run at import: no test's tracing matters for it
        covering[line] = tests - untraced
        for test in tests:
            lines_of[test].append(line)
    taken: list[str] = []
    candidates = sorted(seconds, key=lambda test: (-seconds[test], test))
    for test in candidates:
        if test in untraced or seconds[test] < min_seconds:
            continue
        if all(len(covering[line]) > 1 for line in lines_of[test]):
            taken.append(test)
            for line in lines_of[test]:
                covering[line].discard(test)
    return taken


def seconds_per_test(durations_log: str) -> dict[str, float]:
    """Each test's setup, call and teardown seconds summed over its parameters, from a
    ``--durations=0`` log."""
    seconds: dict[str, float] = defaultdict(float)
    for line in Path(durations_log).read_text(encoding="utf-8", errors="replace").splitlines():
        if match := _DURATION.match(line):
            seconds[match[2].split("[", 1)[0]] += float(match[1])
    return dict(seconds)


def lines_not_measured(
    traced: dict[str, set[int]], measured: dict[str, set[int]]
) -> list[tuple[str, int]]:
    """The lines a fully traced run covers (``traced``: file -> line numbers) that another run
    (``measured``, ``make test``'s) does not."""
    return sorted(
        (file, number)
        for file, numbers in traced.items()
        for number in numbers - measured.get(file, set())
    )


def _lines(path: str) -> dict[str, set[int]]:
    from coverage import CoverageData

    data = CoverageData(path)
    data.read()
    return {file: set(data.lines(file) or ()) for file in data.measured_files()}


def compare(traced: str, measured: str) -> int:
    """Prints the lines the run whose data is ``traced`` covers and ``measured``'s does not;
    1 if there are any, else 0."""
    lost = lines_not_measured(_lines(traced), _lines(measured))
    root = str(Path.cwd()) + "/"
    for file, number in lost:
        print(f"{file.removeprefix(root)}:{number} is covered when every test is traced only")
    print(f"{len(lost)} lines covered in {traced} and not in {measured}")
    return 1 if lost else 0


def _contexts_by_line(path: str) -> dict[tuple[str, int], set[str]] | None:
    """Each measured line's test contexts in the data at ``path``; None when it has none."""
    from coverage import CoverageData

    data = CoverageData(path)
    data.read()
    if not any(data.measured_contexts()):
        print(f"{path} has no test contexts: run `make coverage-audit`", file=sys.stderr)
        return None
    by_line: dict[tuple[str, int], set[str]] = defaultdict(set)
    for file in data.measured_files():
        for number, contexts in data.contexts_by_lineno(file).items():
            by_line[(file, number)].update(contexts)
    return by_line


def propose(path: str, durations_log: str, min_seconds: str) -> int:
    """Prints the tests :func:`untraceable` takes, one per line with their seconds."""
    from tests.conftest import UNTRACED_TESTS

    by_line = _contexts_by_line(path)
    if by_line is None:
        return 2
    seconds = seconds_per_test(durations_log)
    for test in untraceable(by_line, set(UNTRACED_TESTS), seconds, float(min_seconds)):
        print(f"{test}  # {seconds[test]:.1f} s")
    return 0


def main(path: str = ".coverage") -> int:
    """Prints the lines only the untraced tests cover; 1 if there are any, else 0."""
    from tests.conftest import UNTRACED_TESTS

    by_line = _contexts_by_line(path)
    if by_line is None:
        return 2
    lost = lines_only_these_cover(by_line, set(UNTRACED_TESTS))
    root = str(Path.cwd()) + "/"
    for file, number in lost:
        print(f"{file.removeprefix(root)}:{number} is covered only by untraced tests")
    print(f"{len(lost)} lines covered only by the {len(UNTRACED_TESTS)} untraced tests")
    return 1 if lost else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compare"]:
        raise SystemExit(compare(*sys.argv[2:4]))
    if sys.argv[1:2] == ["--propose"]:
        raise SystemExit(propose(*sys.argv[2:5]))
    raise SystemExit(main(*sys.argv[1:]))
