"""Covariate tables without AWS: what a version's records may hold, the per-process cache, and
the join when the version cannot be read."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.abtesting import covariates
from chalicelib.abtesting.covariates import (
    CovariateTables,
    InvalidCovariates,
    VersionRecords,
    covariate_table,
)
from chalicelib.abtesting.models import CovariateSource
from chalicelib.core.errors import NotFound, PayloadTooLarge

SOURCE = CovariateSource("ds-1", "dv-1", 1, "user", "x")


def _records(*rows: tuple[Any, Any], columns: tuple[str, ...] = ("user", "x")) -> VersionRecords:
    return VersionRecords(list(columns), [dict(zip(columns, r, strict=True)) for r in rows],
                          len(rows))  # fmt: skip


def test_json_lines_values_keep_their_types_and_integer_user_ids_are_text() -> None:
    found = covariate_table(_records((7, 1), ("u2", 2.5), ("u3", "-3e2")), SOURCE)

    assert found == {"7": 1.0, "u2": 2.5, "u3": -300.0}


@pytest.mark.parametrize(
    ("row", "code"),
    [
        ((True, 1.0), "invalid_covariate"),  # a boolean is not a user id
        ((None, 1.0), "invalid_covariate"),
        (("u1", True), "invalid_covariate"),  # nor a number
        (("u1", None), "invalid_covariate"),
        (("u1", "nan"), "invalid_covariate"),
        (("u1", 1e6 + 1), "invalid_covariate"),
        (("u1", [1]), "invalid_covariate"),
    ],
)
def test_values_that_are_not_user_ids_or_finite_numbers_are_refused(
    row: tuple[Any, Any], code: str
) -> None:
    with pytest.raises(InvalidCovariates) as raised:
        covariate_table(_records(("u0", 0.0), row), SOURCE)

    assert raised.value.code == code and "row 2" in str(raised.value)


def test_a_scan_with_more_rows_than_the_bound_is_413(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(covariates, "MAX_ROWS", 2)

    with pytest.raises(PayloadTooLarge):
        covariate_table(_records(("a", 1), ("b", 2), ("c", 3)), SOURCE)


def test_tables_are_read_once_per_source_and_the_cache_stays_bounded() -> None:
    reads: list[str] = []

    def read(source: CovariateSource) -> VersionRecords:
        reads.append(source.version_id)
        return _records(("u", 1.0))

    tables = CovariateTables(read)
    sources = [CovariateSource("ds", f"dv-{i}", i, "user", "x") for i in range(6)]
    for source in [sources[0], sources[0], *sources, sources[5]]:
        assert tables.table(source) == {"u": 1.0}

    assert reads == [f"dv-{i}" for i in range(6)]


def test_outcomes_count_without_covariates_while_the_version_cannot_be_read() -> None:
    from chalicelib.abtesting.engine import ABTestingEngine
    from chalicelib.abtesting.models import Outcome

    def gone(source: CovariateSource) -> VersionRecords:
        raise NotFound(f"version {source.version_id} does not exist")

    engine = ABTestingEngine(covariate_records=gone, event_bus=object())  # type: ignore[arg-type]
    joined = engine._join_covariates(SOURCE, [Outcome("v", "r", True, 1.0, user_id="u")])

    assert joined[0].covariate is None


def test_a_held_table_is_checked_again_after_the_recheck_period_and_dropped_once_gone() -> None:
    from chalicelib.abtesting.covariates import RECHECK_SECONDS, CovariatesGone

    now = [0.0]
    live = [True]
    checks: list[str] = []

    def alive(source: CovariateSource) -> bool:
        checks.append(source.version_id)
        return live[0]

    tables = CovariateTables(lambda s: _records(("u", 1.0)), alive, lambda: now[0])
    assert tables.table(SOURCE) == {"u": 1.0}
    now[0] += RECHECK_SECONDS / 2
    assert tables.table(SOURCE) == {"u": 1.0} and checks == []  # within the period: no check
    now[0] += RECHECK_SECONDS
    assert tables.table(SOURCE) == {"u": 1.0} and len(checks) == 1  # checked, still there
    live[0] = False
    now[0] += RECHECK_SECONDS
    with pytest.raises(CovariatesGone):
        tables.table(SOURCE)
