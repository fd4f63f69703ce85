"""The targeting grammar (typed equality, membership, ranges, all/any, bounds) and the gate that
keeps requests out of an experiment (targeting, holdouts, layer slices) in the assigner and the
router."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.abtesting.assignment import (
    MAX_NODES,
    Assigner,
    InvalidCondition,
    NotRoutable,
    compile_condition,
    layer_bucket,
    unit_hash,
)
from chalicelib.abtesting.errors import ExperimentNotRunning
from chalicelib.abtesting.models import (
    Experiment,
    ExperimentStatus,
    HoldoutRef,
    LayerSlice,
    ModelVariant,
    TrafficAllocationStrategy,
)
from chalicelib.abtesting.routing import TrafficRouter, routing_config

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Text(str):
    """A string subclass (a caller's own type): compared as a string, through the slow path."""


class Whole(int):
    """An int subclass: a number, through the slow path."""


@pytest.mark.parametrize(
    ("condition", "attributes", "admitted"),
    [
        ({"attribute": "plan", "equals": "pro"}, {"plan": "pro"}, True),
        ({"attribute": "plan", "equals": "pro"}, {"plan": "free"}, False),
        ({"attribute": "plan", "equals": "pro"}, {}, False),
        ({"attribute": "beta", "equals": True}, {"beta": True}, True),
        ({"attribute": "beta", "equals": True}, {"beta": 1}, False),
        ({"attribute": "n", "equals": 1}, {"n": True}, False),
        ({"attribute": "n", "equals": 1}, {"n": 1.0}, True),
        ({"attribute": "n", "equals": 1}, {"n": "1"}, False),
        ({"attribute": "n", "equals": 1}, {"n": [1]}, False),
        ({"attribute": "c", "in": ["DE", "FR"]}, {"c": "FR"}, True),
        ({"attribute": "c", "in": ["DE", "FR"]}, {"c": "de"}, False),
        ({"attribute": "c", "in": [1, 2]}, {"c": True}, False),
        ({"attribute": "c", "in": [1, 2]}, {"c": 2.0}, True),
        ({"attribute": "c", "in": [1, 2]}, {"c": math.inf}, False),
        ({"attribute": "c", "in": [1, 2]}, {"c": None}, False),
        # Values no JSON attribute of POST /route can be (it answers 400) are simply not admitted
        # by local assignment, as by 'equals' (an 'in' test raised TypeError: unhashable).
        ({"attribute": "c", "in": [1, "DE"]}, {"c": [1]}, False),
        ({"attribute": "c", "in": [1, "DE"]}, {"c": {"DE": 1}}, False),
        ({"attribute": "c", "in": [1, "DE"]}, {"c": {"DE"}}, False),
        ({"attribute": "c", "equals": "DE"}, {"c": ["DE"]}, False),
        ({"attribute": "c", "in": ["DE", 1]}, {"c": Text("DE")}, True),
        ({"attribute": "c", "in": [True]}, {"c": True}, True),
        ({"attribute": "plan", "equals": "pro"}, {"plan": Text("pro")}, True),
        ({"attribute": "age", "gte": 18}, {"age": Whole(20)}, True),
        ({"attribute": "age", "gte": 18}, {"age": 18}, True),
        ({"attribute": "age", "gt": 18}, {"age": 18}, False),
        ({"attribute": "age", "lt": 65}, {"age": 65}, False),
        ({"attribute": "age", "lte": 65}, {"age": 65}, True),
        ({"attribute": "age", "gte": 18, "lt": 65}, {"age": 40.5}, True),
        ({"attribute": "age", "gte": 18, "lt": 65}, {"age": "40"}, False),
        ({"attribute": "age", "gte": 18}, {"age": True}, False),
        ({"attribute": "age", "gte": 18}, {"age": math.nan}, False),
        ({"attribute": "age", "gte": 18}, {"age": math.inf}, False),
        (
            {"all": [{"attribute": "a", "equals": 1}, {"attribute": "b", "equals": 2}]},
            {"a": 1, "b": 2},
            True,
        ),  # fmt: skip
        (
            {"all": [{"attribute": "a", "equals": 1}, {"attribute": "b", "equals": 2}]},
            {"a": 1},
            False,
        ),  # fmt: skip
        (
            {"any": [{"attribute": "a", "equals": 1}, {"attribute": "b", "equals": 2}]},
            {"b": 2},
            True,
        ),  # fmt: skip
        (
            {"any": [{"attribute": "a", "equals": 1}, {"attribute": "b", "equals": 2}]},
            {"b": 3},
            False,
        ),  # fmt: skip
    ],
)
def test_a_condition_admits_exactly_what_the_grammar_says(
    condition: dict[str, Any], attributes: dict[str, Any], admitted: bool
) -> None:
    assert compile_condition(condition)(attributes) is admitted


def _nested(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"attribute": "a", "equals": 1}
    for _ in range(levels):
        node = {"any": [node]}
    return node


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ([], "a condition is a JSON object"),
        (_nested(4), "nest at most 3 levels"),
        ({"all": [{"attribute": "a", "equals": i} for i in range(MAX_NODES)]}, "at most 64 parts"),
        ({"all": []}, "non-empty list"),
        ({"any": "x"}, "non-empty list"),
        ({"attribute": 5, "equals": 1}, "'attribute' naming"),
        ({"attribute": "a b", "equals": 1}, "'attribute' naming"),
        ({"attribute": "a"}, "exactly one of"),
        ({"attribute": "a", "equals": 1, "lt": 2}, "exactly one of"),
        ({"attribute": "a", "equals": None}, "a value is"),
        ({"attribute": "a", "equals": "x" * 257}, "a value is"),
        ({"attribute": "a", "equals": 2**53 + 1}, "a value is"),
        ({"attribute": "a", "equals": math.inf}, "a value is"),
        ({"attribute": "a", "in": "DE"}, "a list of 1 to 100"),
        ({"attribute": "a", "in": list(range(101))}, "a list of 1 to 100"),
        ({"attribute": "a", "in": [[1]]}, "a value is"),
        ({"attribute": "a", "gt": 1, "gte": 1}, "at most one lower"),
        ({"attribute": "a", "lt": 1, "lte": 1}, "at most one lower"),
        ({"attribute": "a", "gt": "1"}, "a bound is a number"),
        ({"attribute": "a", "gt": True}, "a bound is a number"),
    ],
)
def test_a_condition_outside_the_grammar_or_its_bounds_is_refused(
    condition: Any, message: str
) -> None:
    with pytest.raises(InvalidCondition, match=message):
        compile_condition(condition)


def test_the_deepest_and_largest_allowed_conditions_compile() -> None:
    assert compile_condition(_nested(3))({"a": 1})
    parts = [{"attribute": "a", "equals": i} for i in range(MAX_NODES - 1)]
    assert compile_condition({"any": parts})({"a": MAX_NODES - 2})


VARIANTS = [
    {"variant_id": "t", "model_version": 2, "weight": "0.5"},
    {"variant_id": "c", "model_version": 1, "weight": "0.5"},
]


def _gated(**extra: Any) -> Assigner:
    return Assigner({"salt": "s", "variants": VARIANTS, **extra})


def test_layer_buckets_are_the_documented_function_of_the_hash() -> None:
    for key in ("u-1", "u-2", "u-3"):
        assert layer_bucket("L", key, 10_000) == unit_hash("L", key) * 10_000 // 2**64
    layer = {"salt": "L", "buckets": 10_000, "start": 0, "end": 5000}
    inside = next(k for k in map(str, range(100)) if layer_bucket("L", k, 10_000) < 5000)
    outside = next(k for k in map(str, range(100)) if layer_bucket("L", k, 10_000) >= 5000)
    assigner = _gated(layer=layer)
    assert assigner.decide("r", inside)[2] == "experiment"
    assert assigner.decide("r", outside) == (None, 1, "outside_layer")
    assert assigner.route("r", outside) == ("c", 1)
    assert assigner.route(outside, None) == ("c", 1)  # the request id is the key


def test_a_holdout_keeps_its_share_out_under_the_variant_holdout() -> None:
    holdout = {"holdout_id": "h", "salt": "h", "share": "0.5"}
    assigner = _gated(holdouts=[holdout])
    keys = [f"u-{i}" for i in range(2000)]
    held = [k for k in keys if unit_hash("h", k) < 2**63]
    assert {assigner.decide("r", k) for k in held} == {("holdout", 1, "holdout")}
    assert all(assigner.decide("r", k)[2] == "experiment" for k in set(keys) - set(held))
    assert 900 < len(held) < 1100


def test_the_gate_applies_in_every_state_but_a_draft_refuses_to_route() -> None:
    targeting = {"attribute": "plan", "equals": "pro"}
    fixed = {"variant_id": "t", "model_version": 2}
    concluded = _gated(targeting=targeting, fixed=fixed)
    assert concluded.decide("r", "u", True, {"plan": "pro"}) == ("t", 2, "experiment")
    assert concluded.decide("r", "u", True, {"plan": "free"}) == (None, 1, "ineligible")
    assert concluded.route("r", "u", True, {"plan": "pro"}) == ("t", 2)
    assert concluded.user_picker()("u") == ("c", 1)  # no attributes: ineligible
    draft = _gated(targeting=targeting, blocked="not started")
    with pytest.raises(NotRoutable, match="not started"):
        draft.decide("r", "u", True, {"plan": "pro"})
    with pytest.raises(NotRoutable, match="not started"):
        draft.user_picker()("u")
    bandit = _gated(targeting=targeting, sticky_store=True)
    assert bandit.user_picker() is None and bandit.gated
    assert not _gated().gated
    assert _gated().decide("r", "u")[2] == "experiment"


def _experiment(**extra: Any) -> Experiment:
    variants = (
        ModelVariant("control", "m", 1, Decimal("0.5"), True),
        ModelVariant("treatment", "m", 2, Decimal("0.5")),
    )
    return Experiment(
        "exp-1", "e", "", variants, ExperimentStatus.RUNNING,
        TrafficAllocationStrategy.PERCENTAGE, NOW, None, 100, 0.95, "conversion_rate", (),
        NOW, NOW, salt="exp-1", **extra,
    )  # fmt: skip


class Store:
    """Records bandit first assignments (stands in for the assignment table)."""

    def __init__(self) -> None:
        self.stored: dict[tuple[str, str], str] = {}

    def get_or_assign(self, experiment_id: str, user_id: str, variant_id: str, when: object) -> str:
        return self.stored.setdefault((experiment_id, user_id), variant_id)


def test_the_routing_config_carries_the_layer_holdouts_and_targeting() -> None:
    targeting = {"attribute": "plan", "equals": "pro"}
    experiment = _experiment(
        layer=LayerSlice("layer-1", 10, 20),
        targeting=targeting,
        holdouts=(HoldoutRef("hold-1", "hold-1", Decimal("0.05")),),
    )
    config = routing_config(experiment)
    assert config["layer"] == {"layer_id": "layer-1", "salt": "layer-1", "buckets": 10_000,
                               "start": 10, "end": 20}  # fmt: skip
    assert config["holdouts"] == [{"holdout_id": "hold-1", "salt": "hold-1", "share": "0.05"}]
    assert config["targeting"] == targeting
    plain = routing_config(_experiment())
    assert (plain["layer"], plain["holdouts"], plain["targeting"]) == (None, [], None)


def test_the_router_decides_with_attributes_and_stores_only_admitted_bandit_users() -> None:
    targeting = {"attribute": "plan", "equals": "pro"}
    bandit = replace(
        _experiment(targeting=targeting), allocation_strategy=TrafficAllocationStrategy.MAB
    )
    store = Store()
    router = TrafficRouter(lambda _: bandit, store, ttl_seconds=60)
    kept_out = router.decide("exp-1", "r", "u-1", True, {"plan": "free"})
    assert kept_out == (None, 1, 0, "ineligible") and store.stored == {}
    assert router.route("exp-1", "r", "u-1") == ("control", 1)
    admitted = router.decide("exp-1", "r", "u-1", True, {"plan": "pro"})
    assert admitted[3] == "experiment" and store.stored == {("exp-1", "u-1"): admitted[0]}
    assert router.assign("exp-1", "r", "u-9") == ("control", 1, 0)  # no attributes: default
    not_sticky = router.decide("exp-1", "r-2", "u-2", False, {"plan": "pro"})
    assert not_sticky[3] == "experiment" and ("exp-1", "u-2") not in store.stored


def test_the_router_refuses_a_gated_draft() -> None:
    draft = replace(_experiment(targeting={"attribute": "a", "equals": 1}),
                    status=ExperimentStatus.DRAFT)  # fmt: skip
    router = TrafficRouter(lambda _: draft, None, ttl_seconds=60)
    with pytest.raises(ExperimentNotRunning):
        router.decide("exp-1", "r", "u", True, {"a": 1})


def test_the_router_decides_an_experiment_without_gates_as_it_routes_it() -> None:
    router = TrafficRouter(lambda _: _experiment(), None, ttl_seconds=60)
    variant_id, version, phase, exposure = router.decide("exp-1", "r", "u-1")
    assert (variant_id, version) == router.route("exp-1", "r", "u-1")
    assert (phase, exposure) == (0, "experiment")
