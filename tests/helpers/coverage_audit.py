"""Which lines only the untraced tests cover: ``make coverage-audit`` runs the suite with every
test traced and a coverage context per test, then this names each such line (exit status 1).

An empty answer does not by itself mean running :data:`tests.conftest.UNTRACED_TESTS` untraced
leaves the report exactly as tracing them would: a line run once per process (a cached loader's
body) is recorded only for the first test to reach it in its worker, and which that is depends
on how ``--dist loadfile`` handed out the modules; and a thread the audit sees traced may run
untraced in ``make test``. ``--compare TRACED MEASURED`` checks the claim itself on two runs'
data: it names each line a fully traced run covers and a ``make test`` run does not.
Usage: ``python -m tests.helpers.coverage_audit [.coverage]`` or
``python -m tests.helpers.coverage_audit --compare traced.coverage make-test.coverage``.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path


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


def main(path: str = ".coverage") -> int:
    """Prints the lines only the untraced tests cover; 1 if there are any, else 0."""
    from coverage import CoverageData

    from tests.conftest import UNTRACED_TESTS

    data = CoverageData(path)
    data.read()
    if not any(data.measured_contexts()):
        print(f"{path} has no test contexts: run `make coverage-audit`", file=sys.stderr)
        return 2
    by_line: dict[tuple[str, int], set[str]] = defaultdict(set)
    for file in data.measured_files():
        for number, contexts in data.contexts_by_lineno(file).items():
            by_line[(file, number)].update(contexts)
    lost = lines_only_these_cover(by_line, set(UNTRACED_TESTS))
    root = str(Path.cwd()) + "/"
    for file, number in lost:
        print(f"{file.removeprefix(root)}:{number} is covered only by untraced tests")
    print(f"{len(lost)} lines covered only by the {len(UNTRACED_TESTS)} untraced tests")
    return 1 if lost else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compare"]:
        raise SystemExit(compare(*sys.argv[2:4]))
    raise SystemExit(main(*sys.argv[1:]))
