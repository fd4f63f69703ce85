"""FeatureImportanceAggregator: aggregation methods, stability, interactions and segments."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr

from chalicelib.core.errors import UnprocessableEntity, ValidationError
from chalicelib.explainability.aggregator import FeatureImportanceAggregator, contribution_matrix
from chalicelib.explainability.models import FeatureContribution, PredictionExplanation


def _explanation(
    values: dict[str, float], prediction: float = 0.5, model: str = "m", version: int = 1
) -> PredictionExplanation:
    return PredictionExplanation(
        explanation_id="e",
        prediction_id=None,
        model_id=model,
        model_version=version,
        explanation_type="shap",
        input_kind="tabular",
        algorithm="tree",
        output_space="probability",
        explained_class=None,
        base_prediction=0.0,
        actual_prediction=prediction,
        feature_contributions=[FeatureContribution(k, 0.0, v) for k, v in values.items()],
        top_positive_features=[],
        top_negative_features=[],
    )


ROWS = [
    {"a": 1.0, "b": -4.0, "c": 0.0},
    {"a": -2.0, "b": 1.0, "c": 0.5},
    {"a": 3.0, "b": 0.0, "c": -0.5},
    {"a": 10.0, "b": -2.0, "c": 0.0},
]


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("mean", {"a": 4.0, "b": 1.75, "c": 0.25}),
        ("median", {"a": 2.5, "b": 1.5, "c": 0.25}),
        ("max", {"a": 10.0, "b": 4.0, "c": 0.5}),
        (
            "percentile_95",
            {
                "a": float(np.percentile([1, 2, 3, 10], 95)),
                "b": float(np.percentile([4, 1, 0, 2], 95)),
                "c": float(np.percentile([0, 0.5, 0.5, 0], 95)),
            },
        ),
    ],
)
def test_every_aggregation_method_works_on_absolute_contributions(
    method: str, expected: dict[str, float]
) -> None:
    result = FeatureImportanceAggregator().aggregate_explanations(
        [_explanation(r) for r in ROWS], method
    )
    assert result == pytest.approx(expected)
    assert list(result) == sorted(expected, key=lambda k: -expected[k])


def test_explanations_of_different_versions_are_refused() -> None:
    mixed = [_explanation(ROWS[0]), _explanation(ROWS[1], version=2)]
    with pytest.raises(UnprocessableEntity, match="different models or versions"):
        FeatureImportanceAggregator().aggregate_explanations(mixed)


def test_no_explanations_and_unknown_methods_are_400() -> None:
    aggregator = FeatureImportanceAggregator()
    with pytest.raises(ValidationError, match="at least one"):
        aggregator.aggregate_explanations([])
    with pytest.raises(ValidationError, match="aggregation_method"):
        aggregator.aggregate_explanations([_explanation(ROWS[0])], "mode")


def test_missing_features_count_as_zero_contributions() -> None:
    names, matrix = contribution_matrix([_explanation({"x": 1.0}), _explanation({"y": 2.0})])
    assert names == ["x", "y"]
    assert matrix.tolist() == [[1.0, 0.0], [0.0, 2.0]]


def test_stability_reports_top_k_frequency_and_mean_pairwise_jaccard() -> None:
    # top-1 sets: {b}, {a}, {a}, {a}
    result = FeatureImportanceAggregator().compute_stability([_explanation(r) for r in ROWS], 1)
    assert result["top_k_frequency"] == {"a": 0.75, "b": 0.25, "c": 0.0}
    # pairs: 6 in total, 3 of them ({a},{a}) similar -> 3/6
    assert result["mean_pairwise_jaccard"] == pytest.approx(0.5)
    # top-2 sets: {a,b}, {a,b}, {a,c}, {a,b} -> Jaccard 1,1/3,1,1/3,1,1/3 (mean 2/3)
    two = FeatureImportanceAggregator().compute_stability([_explanation(r) for r in ROWS], 2)
    assert two["mean_pairwise_jaccard"] == pytest.approx(2 / 3)
    assert two["top_k"] == 2


def test_stability_of_one_explanation_has_no_pairwise_score_and_top_k_is_checked() -> None:
    aggregator = FeatureImportanceAggregator()
    single = aggregator.compute_stability([_explanation(ROWS[0])], 10)
    assert single["mean_pairwise_jaccard"] is None
    assert single["top_k"] == 3
    with pytest.raises(ValidationError, match="top_k"):
        aggregator.compute_stability([_explanation(ROWS[0])], 0)


def test_correlated_contributions_are_reported_as_interactions() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=30)
    rows = [
        {"x": float(v), "y": float(2 * v + 0.01 * n), "z": float(n), "k": 1.0}
        for v, n in zip(base, rng.normal(size=30), strict=True)
    ]
    found = FeatureImportanceAggregator().detect_feature_interactions(
        [_explanation(r) for r in rows], 0.9
    )
    assert [(p["feature_a"], p["feature_b"]) for p in found] == [("x", "y")]
    assert found[0]["correlation"] > 0.99
    assert (
        FeatureImportanceAggregator().detect_feature_interactions(
            [_explanation(r) for r in rows[:2]]
        )
        == []
    )


def test_segments_by_prediction_aggregate_within_each_bin() -> None:
    explanations = [_explanation(r, p) for r, p in zip(ROWS, [0.1, 0.2, 0.7, 1.0], strict=True)]
    segments = FeatureImportanceAggregator().segment_by_prediction(
        explanations, [-1.0, 0.0, 0.5, 1.0], "max"
    )
    assert [s["count"] for s in segments] == [0, 2, 2]  # the last bin includes its upper edge
    assert segments[0]["feature_importances"] == {}
    assert segments[1]["feature_importances"] == {"b": 4.0, "a": 2.0, "c": 0.5}
    assert segments[2]["feature_importances"]["a"] == 10.0
    with pytest.raises(ValidationError, match="ascending"):
        FeatureImportanceAggregator().segment_by_prediction(explanations, [1.0, 0.0])


def test_summarize_combines_importances_stability_and_interactions() -> None:
    result = FeatureImportanceAggregator().summarize([_explanation(r) for r in ROWS], "mean", 1)
    assert result.feature_importances == pytest.approx({"a": 4.0, "b": 1.75, "c": 0.25})
    assert result.n_explanations == 4
    assert result.stability["top_k"] == 1
    assert result.model_id == "m" and result.aggregation_method == "mean"
    assert result.interactions == []  # no pair reaches |r| 0.5 (scipy below: -0.40, -0.32, 0.18)
    looser = FeatureImportanceAggregator().summarize(
        [_explanation(r) for r in ROWS], "mean", 1, interaction_threshold=0.3
    )

    def r(a: str, b: str) -> float:
        return float(pearsonr([row[a] for row in ROWS], [row[b] for row in ROWS])[0])

    assert [(p["feature_a"], p["feature_b"]) for p in looser.interactions] == [
        ("a", "c"),
        ("a", "b"),
    ]
    assert [p["correlation"] for p in looser.interactions] == pytest.approx(
        [r("a", "c"), r("a", "b")]
    )
