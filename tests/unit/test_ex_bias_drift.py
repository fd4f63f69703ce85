"""Bias metrics (oracle: fairlearn) and attribution drift (NDCG by hand), issue 16."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chalicelib.core.errors import UnprocessableEntity
from chalicelib.explainability.bias import bias_metrics
from chalicelib.explainability.drift import compare, ndcg

fairlearn_metrics = pytest.importorskip("fairlearn.metrics")


def _population(seed: int, n: int = 500) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    group = rng.choice(["f", "m", "x"], n, p=[0.3, 0.6, 0.1])
    labels = (rng.random(n) < np.where(group == "m", 0.6, 0.4)).astype(int)
    predictions = np.where(rng.random(n) < 0.8, labels, 1 - labels)
    predictions[(group == "f") & (rng.random(n) < 0.2)] = 0
    return group, labels, predictions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bias_metrics_agree_with_fairlearn(seed: int) -> None:
    group, labels, predictions = _population(seed)
    report = bias_metrics(labels, group, ["f"], 1, predictions, facet_name="gender")
    facet = np.where(group == "f", "d", "a")  # Clarify compares d with every other row
    m = fairlearn_metrics
    assert abs(report.pre_training["DPL"]) == pytest.approx(
        m.demographic_parity_difference(labels, labels, sensitive_features=facet), abs=1e-12
    )
    assert abs(report.post_training["DPPL"]) == pytest.approx(
        m.demographic_parity_difference(labels, predictions, sensitive_features=facet), abs=1e-12
    )
    assert min(report.post_training["DI"], 1 / report.post_training["DI"]) == pytest.approx(
        m.demographic_parity_ratio(labels, predictions, sensitive_features=facet), abs=1e-12
    )
    assert abs(report.post_training["EOD"]) == pytest.approx(
        m.equal_opportunity_difference(labels, predictions, sensitive_features=facet), abs=1e-12
    )
    frame = m.MetricFrame(
        metrics={"count": m.count, "rate": m.selection_rate, "tpr": m.true_positive_rate},
        y_true=labels,
        y_pred=predictions,
        sensitive_features=facet,
    ).by_group
    n_a, n_d = frame.loc["a", "count"], frame.loc["d", "count"]
    assert report.counts == {"a": n_a, "d": n_d}
    assert report.pre_training["CI"] == pytest.approx((n_a - n_d) / (n_a + n_d))
    # The signs are Clarify's: a − d, and d / a.
    assert report.post_training["DPPL"] == pytest.approx(
        frame.loc["a", "rate"] - frame.loc["d", "rate"]
    )
    assert report.post_training["DI"] == pytest.approx(
        frame.loc["d", "rate"] / frame.loc["a", "rate"]
    )
    assert report.post_training["EOD"] == pytest.approx(
        frame.loc["a", "tpr"] - frame.loc["d", "tpr"]
    )


def test_a_facet_of_several_values_and_undefined_metrics() -> None:
    group, labels, predictions = _population(3)
    both = bias_metrics(labels, group, ["f", "x"], 1, predictions)
    assert both.counts["d"] == int(np.isin(group, ["f", "x"]).sum())
    nobody = bias_metrics([1, 0, 1, 0], ["a", "a", "b", "b"], ["b"], 1, [0, 0, 1, 1])
    assert nobody.post_training["DI"] is None and "DI" in nobody.undefined
    with pytest.raises(UnprocessableEntity, match="has no rows"):
        bias_metrics([1, 0], ["a", "a"], ["b"], 1)


def test_ndcg_by_hand_on_a_small_case() -> None:
    baseline = {"a": 0.5, "b": 0.3, "c": 0.2}
    assert ndcg(baseline, {"a": 9.0, "b": 2.0, "c": 1.0}) == pytest.approx(1.0)
    # Current order b, c, a: DCG = 0.3/log2(2) + 0.2/log2(3) + 0.5/log2(4).
    dcg = 0.3 / 1 + 0.2 / math.log2(3) + 0.5 / 2
    ideal = 0.5 / 1 + 0.3 / math.log2(3) + 0.2 / 2
    assert ndcg(baseline, {"b": 3.0, "c": 2.0, "a": 1.0}) == pytest.approx(dcg / ideal)
    # top-2 only; a new feature (z) has no baseline attribution, so it scores 0.
    assert ndcg(baseline, {"z": 5.0, "a": 1.0}, k=2) == pytest.approx(
        (0 + 0.5 / math.log2(3)) / (0.5 + 0.3 / math.log2(3))
    )
    report = compare(baseline, {"b": 3.0, "c": 2.0, "a": 1.0}, threshold=0.9)
    assert report["drifted"] is (dcg / ideal < 0.9)
    assert report["current_top"] == ["b", "c", "a"]
    first = report["features"][0]
    assert first["feature"] == "b" and first["change"] == pytest.approx(2.7)
    assert first["baseline_rank"] == 2 and first["current_rank"] == 1
