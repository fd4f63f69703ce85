"""Which lines only the untraced tests cover: ``make coverage-audit`` runs the suite with every
test traced and a coverage context per test, then this names each such line (exit status 1).

An empty answer means running :data:`tests.conftest.UNTRACED_TESTS` untraced leaves the coverage
report exactly as tracing them would. Usage: ``python -m tests.helpers.coverage_audit [.coverage]``.
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
    raise SystemExit(main(*sys.argv[1:]))
