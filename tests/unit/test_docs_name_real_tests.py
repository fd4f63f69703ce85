"""The README and docs/GUARANTEES.md back their promises by naming tests; every name must exist.

A promise that names a test renamed or deleted since reads as checked while nothing checks it.
This walks every ``test_…`` name in both documents and fails on one that is neither a test
module under ``tests/`` nor a test function there; ``file.py::name`` must name a function of
that very file.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs/GUARANTEES.md")
# Names the documents quote from other projects (statsmodels' function), not our tests.
FOREIGN = {"test_proportions_2indep"}
NAME = re.compile(r"\btest_[a-z0-9_]*[a-z0-9]\b|\btest_[a-z0-9_]+_(?=\*)")
QUALIFIED = re.compile(r"\b(test_[a-z0-9_]+)\.py::(test_[a-z0-9_]+)\b")
DEFINITION = re.compile(r"^\s*(?:async\s+)?def\s+(test_[a-z0-9_]+)\s*\(", re.MULTILINE)


@cache
def _modules() -> dict[str, tuple[Path, ...]]:
    """Every test module under tests/, by stem (a stem may live in several suites)."""
    found: dict[str, tuple[Path, ...]] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        found[path.stem] = (*found.get(path.stem, ()), path)
    return found


@cache
def defined(stem: str) -> frozenset[str]:
    """The test functions the modules named ``stem`` define."""
    texts = (path.read_text(encoding="utf-8") for path in _modules().get(stem, ()))
    return frozenset(name for text in texts for name in DEFINITION.findall(text))


def every_test_function() -> frozenset[str]:
    return frozenset().union(*(defined(stem) for stem in _modules()))


def exists(name: str) -> bool:
    """A module stem, a module prefix written as ``test_faults_*``, or a test function."""
    if name in _modules() or name in every_test_function():
        return True
    return name.endswith("_") and any(stem.startswith(name) for stem in _modules())


def document(name: str) -> str:
    return (REPO / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_test_a_document_names_exists(name: str) -> None:
    named = set(NAME.findall(document(name))) - FOREIGN
    assert named, f"{name} names no test: the pattern no longer matches how it cites them"
    missing = sorted(n for n in named if not exists(n))
    assert not missing, f"{name} names tests that do not exist: {missing}"


@pytest.mark.parametrize("name", DOCUMENTS)
def test_a_test_named_with_its_file_is_defined_in_that_file(name: str) -> None:
    wrong = [
        f"{module}.py::{function}"
        for module, function in QUALIFIED.findall(document(name))
        if function not in defined(module)
    ]
    assert not wrong, f"{name} names tests in files that do not define them: {wrong}"


def test_the_check_fails_on_a_name_that_is_not_a_test() -> None:
    assert exists("test_docs_name_real_tests")
    assert exists("test_faults_")
    assert exists("test_every_test_a_document_names_exists")
    assert not exists("test_no_such_promise_is_checked")
    assert not exists("test_no_such_prefix_")
