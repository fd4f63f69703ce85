"""Responses are built one way: ``XOut.from_domain(obj)`` reads the declared fields from the
domain object (checked here on plain objects; the HTTP tests check every route's JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

from chalicelib.abtesting.models import Holdout
from chalicelib.abtesting.schemas import DomainOut, HoldoutOut, PhaseOut, plain


@dataclass
class _Inner:
    weight: Decimal
    tags: tuple[str, ...]


def test_plain_turns_decimals_enums_dataclasses_and_tuples_into_json_values() -> None:
    from chalicelib.abtesting.models import PhaseReason

    found = plain({"a": _Inner(Decimal("0.25"), ("x", "y")), "r": PhaseReason.RAMP})
    assert found == {"a": {"weight": "0.25", "tags": ["x", "y"]}, "r": "ramp"}


def test_a_response_reads_declared_fields_and_leaves_the_rest_out() -> None:
    class _Out(DomainOut):
        weight: str
        doubled: int

    out = _Out.from_domain(_Inner(Decimal("0.5"), ("z",)), doubled=4)
    assert out.body() == {"weight": "0.5", "doubled": 4}


def test_a_holdout_shows_its_share_as_text_and_its_salt() -> None:
    created = datetime(2026, 1, 2, tzinfo=timezone.utc)
    holdout = Holdout("h1", "global", Decimal("0.05"), ("layer-a",), "alice", created)
    body = HoldoutOut.from_domain(holdout).body()
    assert body == {
        "holdout_id": "h1", "name": "global", "share": "0.05", "salt": holdout.ref().salt,
        "layer_ids": ["layer-a"], "owner": "alice", "created_at": created,
    }  # fmt: skip


def test_a_phase_keeps_its_datetime_for_the_project_json_encoder() -> None:
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    body = PhaseOut.from_domain(
        None, phase=2, started_at=started, reason="ramp", weights={"c": Decimal("0.5")}
    ).body()
    assert body["started_at"] is started and body["weights"] == {"c": "0.5"}
