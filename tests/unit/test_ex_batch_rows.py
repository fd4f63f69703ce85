"""A batch's explanations built at once: ranking, ids, the paused collector and their JSON
dicts (no AWS)."""

from __future__ import annotations

import gc
import json
import threading
import uuid
from collections import OrderedDict
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from chalicelib.explainability.base import (
    TOP_FEATURES,
    RankedRows,
    batch_ids,
    collection_paused,
)
from chalicelib.explainability.models import (
    BatchRequest,
    DependenceRequest,
    ExplanationQuery,
    ExplanationRequest,
    ExplanationType,
    FeatureContribution,
    GlobalRequest,
    PredictionExplanation,
)


class _Row(list):
    """A list subclass (results may hold one)."""


def _oracle(names: list[str], row: list[float], values: list[float]) -> dict:
    """One row as the per-row builder orders it: Python's stable sort by -|c|, positives in that
    order, negatives by a stable sort on c."""
    ranked = sorted(zip(names, row, values, strict=True), key=lambda item: -abs(item[2]))
    negative = sorted((item for item in ranked if item[2] < 0), key=lambda item: item[2])
    return {
        "order": [(name, value, c) for name, value, c in ranked],
        "positive": [name for name, _, c in ranked if c > 0][:TOP_FEATURES],
        "negative": [name for name, _, _ in negative][:TOP_FEATURES],
    }


def _tied_rows(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Contributions of small integers with both signs (ties everywhere; the first row has x and
    -x, several zeros, 0.0 and -0.0), inputs and 12 feature names."""
    rng = np.random.default_rng(seed)
    values = rng.integers(-3, 4, size=(rows, 12)).astype(float)
    values[0] = [0.0, -0.0, 2.0, -2.0, 2.0, -0.0, 1.0, -1.0, -2.0, 0.0, 3.0, -3.0]
    return values, rng.normal(size=values.shape), [f"f{j}" for j in range(12)]


def test_ranking_a_batch_at_once_equals_pythons_stable_sort_on_ties() -> None:
    """Small integers with both signs make ties everywhere (x and -x, several zeros, 0.0 and
    -0.0): one argsort over the matrix orders each row as Python's stable sort does, and the top
    negative features equal a stable sort on the signed value."""
    values, X, names = _tied_rows(11, 300)
    ranked = RankedRows.of(values, X, names)
    contributions = ranked.contributions()
    positive, negative = ranked.top_positive(), ranked.top_negative()
    ties = 0
    for i in range(len(values)):
        expected = _oracle(names, X[i].tolist(), values[i].tolist())
        found = [(c.feature_name, c.feature_value, c.contribution) for c in contributions[i]]
        assert found == expected["order"]
        assert positive[i] == expected["positive"]
        assert negative[i] == expected["negative"]
        ties += len(set(np.abs(values[i]).tolist())) < 12
    assert ties == len(values)  # every row had ties: the comparison is not vacuous


def test_a_single_row_ranked_alone_equals_pythons_stable_sort_and_the_batch_ranking() -> None:
    """A single request ranks its row without numpy's argsort: the same order on ties (x and
    -x, 0.0 and -0.0), the same top features and plain Python numbers, as in a batch."""
    values, X, names = _tied_rows(12, 60)
    batch = RankedRows.of(values, X, names)
    for i in range(len(values)):
        alone = RankedRows.of(values[i : i + 1], X[i : i + 1], names)
        expected = _oracle(names, X[i].tolist(), values[i].tolist())
        (found,) = alone.contributions()
        assert [(c.feature_name, c.feature_value, c.contribution) for c in found] == expected[
            "order"
        ]
        assert all(type(c.contribution) is float for c in found)
        assert all(type(c.feature_value) is float for c in found)
        assert alone.top_positive() == [expected["positive"]] == [batch.top_positive()[i]]
        assert alone.top_negative() == [expected["negative"]] == [batch.top_negative()[i]]
        assert alone.contributions() == [batch.contributions()[i]]
    text = np.empty((1, 3), dtype=object)
    text[:] = [["red", 1.5, 2]]
    (found,) = RankedRows.of(
        np.array([[0.1, -0.3, 0.3]]), text, ["colour", "size", "count"]
    ).contributions()
    assert [(c.feature_name, c.feature_value) for c in found] == [
        ("size", 1.5),
        ("count", 2),
        ("colour", "red"),
    ]


def test_ranking_keeps_text_inputs_of_an_object_matrix() -> None:
    X = np.empty((2, 3), dtype=object)
    X[:] = [["red", 1.5, 2], ["blue", -1.0, 0]]
    values = np.array([[0.1, -0.3, 0.3], [0.0, 0.0, -0.0]])
    first, second = RankedRows.of(values, X, ["colour", "size", "count"]).contributions()
    assert [(c.feature_name, c.feature_value) for c in first] == [
        ("size", 1.5),
        ("count", 2),
        ("colour", "red"),
    ]
    assert [c.feature_name for c in second] == [
        "colour",
        "size",
        "count",
    ]


def test_batch_ids_are_distinct_version_4_uuids_in_a_batch_and_across_batches() -> None:
    first, second = batch_ids(10_000), batch_ids(10_000)
    assert len(set(first) | set(second)) == 20_000
    for found in first[:3] + first[-3:] + second[:3]:
        parsed = uuid.UUID(hex=found)
        assert parsed.hex == found and len(found) == 32
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    for _ in range(2_000):  # a single request's id: every random bit drawn, the fixed ones set
        parsed = uuid.UUID(hex=batch_ids(1)[0])
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    with pytest.raises(ValueError):
        batch_ids((1 << 32) + 1)


def test_the_paused_collector_resumes_only_as_it_was_and_after_the_last_pause() -> None:
    was = gc.isenabled()
    try:
        gc.enable()
        with collection_paused():
            assert not gc.isenabled()
            with collection_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()  # the outer pause still runs
        assert gc.isenabled()
        gc.disable()
        with collection_paused():
            pass
        assert not gc.isenabled()  # a collector that was off stays off
        gc.enable()
        entered, leave = threading.Event(), threading.Event()

        def other() -> None:
            with collection_paused():
                entered.set()
                leave.wait(10)

        thread = threading.Thread(target=other)
        thread.start()
        entered.wait(10)
        with collection_paused():
            pass
        assert not gc.isenabled()  # the other thread's pause outlasts this one
        leave.set()
        thread.join(10)
        assert gc.isenabled()
        with pytest.raises(RuntimeError), collection_paused():
            raise RuntimeError("an error while building")
        assert gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


def _explanation(**fields: object) -> PredictionExplanation:
    values: dict = {
        "explanation_id": "e1",
        "prediction_id": "p1",
        "model_id": "m",
        "model_version": 3,
        "explanation_type": "shap",
        "input_kind": "tabular",
        "algorithm": "tree",
        "output_space": "log_odds",
        "explained_class": "yes",
        "base_prediction": -0.25,
        "actual_prediction": 1.5,
        "feature_contributions": [
            FeatureContribution("age", 41.0, 0.75),
            FeatureContribution("colour", "red", -0.5, "colour=red"),
            FeatureContribution("segment_2", 2, 0.0),
        ],
        "top_positive_features": ["age"],
        "top_negative_features": ["colour"],
        "created_at": datetime(2026, 12, 2, 3, 4, 5, 678, tzinfo=UTC),
    }
    return PredictionExplanation(**{**values, **fields})


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {
            "additivity_error": 1e-9,
            "interactions": {
                "feature_names": ["a", "b"],
                "matrix": [[0.5, -0.25], [-0.25, 1.0]],
                "top_pairs": [{"feature_a": "a", "feature_b": "b", "value": -0.5}],
            },
            "parameters": {
                "seed": 0,
                "class_name": None,
                "sizes": (1, 2),
                "nested": {"k": [1]},
                "since": datetime(2026, 1, 1, tzinfo=UTC),  # neither JSON nor a container
            },
            "computation_time_ms": 12.5,
            "cached": True,
        },
        {"local_fidelity": 0.9, "local_prediction": 0.4, "segments": [[0, 1], [2, 2]]},
    ],
)
def test_an_explanations_dict_is_what_asdict_gives_with_nothing_shared(fields: dict) -> None:
    """The dict is built field by field (asdict's generic deep copy cost about 0.6 s on a
    1,000-row batch): the same keys in the same order and the same values as asdict, and
    containers of its own, so changing the dict changes nothing in the explanation."""
    explanation = _explanation(**fields)
    expected = asdict(explanation)
    expected["created_at"] = explanation.created_at.isoformat()
    found = explanation.to_dict()
    assert list(found) == list(expected)
    assert found == expected
    assert json.dumps(found, default=str) == json.dumps(expected, default=str)
    found["feature_contributions"][0]["contribution"] = 99.0
    found["top_positive_features"].append("x")
    found["parameters"]["seed"] = 99
    if found["interactions"] is not None:
        found["interactions"]["matrix"][0][0] = 99.0
        assert explanation.interactions["matrix"][0][0] == 0.5
        found["parameters"]["nested"]["k"].append(2)
        assert explanation.parameters["nested"] == {"k": [1]}
    assert explanation.feature_contributions[0].contribution == 0.75
    assert explanation.top_positive_features == ["age"]
    assert explanation.parameters.get("seed") in (None, 0)
    assert PredictionExplanation.from_dict(explanation.to_dict()) == explanation


@pytest.mark.parametrize(
    "request_",
    [
        ExplanationRequest(
            model_id="m",
            model_version=2,
            explanation_type=ExplanationType.LIME,
            input_data={"image": [[0.5, 1.0], [0.25, 0.0]], "tags": ("a", 1)},
            prediction_id="p",
            hide_color=0.5,
        ),
        BatchRequest(model_id="m", inputs=[{"x": 1}, {"x": [2.5, None]}], prediction_ids=["a"]),
        GlobalRequest(model_id="m", inputs=None, dataset_version_id="d", prediction_bins=[0.5]),
        DependenceRequest(model_id="m", feature="x", inputs=[{"x": 1.0, "y": "b"}]),
    ],
)
def test_a_requests_dict_is_what_asdict_gives_with_nothing_shared(
    request_: ExplanationQuery,
) -> None:
    """A request's dict is built field by field (asdict's generic deep copy of a 512×512 image
    cost about 0.2 s a call, several times that traced): the same keys in the same order and
    the same values as asdict with the type's value, and containers of its own."""
    expected = asdict(request_)
    expected["explanation_type"] = request_.explanation_type.value
    found = request_.to_dict()
    assert list(found) == list(expected)
    assert found == expected
    assert type(found["explanation_type"]) is str
    assert json.dumps(found) == json.dumps(expected)
    assert type(request_).from_dict(found) == request_
    inputs = found.get("input_data") or found.get("inputs")
    before = json.dumps(asdict(request_), default=str)
    if isinstance(inputs, dict):
        inputs["image"][0][0] = 99.0
        inputs["extra"] = 1
    elif inputs is not None:
        inputs[0]["x"] = 99
        inputs.append({})
    assert json.dumps(asdict(request_), default=str) == before


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        (float("inf"), "explanations[1].feature_contributions[0].contribution"),
        (np.float64("nan"), "explanations[1].feature_contributions[0].contribution"),
        (
            OrderedDict(x=(1.0, -np.inf)),
            "explanations[1].feature_contributions[0].contribution.x[1]",
        ),
        (_Row([0.5, float("-inf")]), "explanations[1].feature_contributions[0].contribution[1]"),
        # Numbers that are not Python floats: a numpy float32, a numpy array, a Decimal.
        (np.float32("nan"), "explanations[1].feature_contributions[0].contribution"),
        (np.array([[0.5, np.inf]]), "explanations[1].feature_contributions[0].contribution[0][1]"),
        (Decimal("NaN"), "explanations[1].feature_contributions[0].contribution"),
        (Decimal("-Infinity"), "explanations[1].feature_contributions[0].contribution"),
    ],
)
def test_a_result_with_a_number_that_is_not_finite_is_refused_naming_it(
    bad: object, where: str
) -> None:
    """Results are first checked without keeping paths (the common, finite case of a large
    batch); a value that is not finite, however nested (dict and list subclasses, tuples,
    numpy floats, numpy arrays and scalars of any width, Decimals), is then named."""
    from chalicelib.core.errors import UnprocessableEntity
    from chalicelib.explainability.service import require_finite

    rows = [_explanation().to_dict() for _ in range(3)]
    assert require_finite({"count": 3, "explanations": rows})["explanations"] is rows
    rows[1]["feature_contributions"][0]["contribution"] = bad
    with pytest.raises(UnprocessableEntity) as caught:
        require_finite({"count": 3, "explanations": rows})
    assert caught.value.code == "not_finite"
    assert f"({where} is " in caught.value.message
