"""From many explanations of one model version to global importance, stability and interactions.

Aggregation works on absolute contributions (a feature that pushes predictions strongly either
way is important): ``mean`` (the usual mean |SHAP|), ``median``, ``max`` and ``percentile_95``
(linear interpolation). A feature absent from an explanation (a word LIME did not report)
counts as a zero contribution.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from chalicelib.core.errors import UnprocessableEntity, ValidationError
from chalicelib.explainability.models import (
    AggregationMethod,
    GlobalExplanation,
    PredictionExplanation,
)

_REDUCERS = {
    AggregationMethod.MEAN: lambda a: np.mean(a, axis=0),
    AggregationMethod.MEDIAN: lambda a: np.median(a, axis=0),
    AggregationMethod.MAX: lambda a: np.max(a, axis=0),
    AggregationMethod.PERCENTILE_95: lambda a: np.percentile(a, 95, axis=0),
}


class FeatureImportanceAggregator:
    """Aggregates explanations of one model version."""

    def aggregate_explanations(
        self,
        explanations: list[PredictionExplanation],
        method: AggregationMethod | str = AggregationMethod.MEAN,
    ) -> dict[str, float]:
        """Global importance per feature, most important first.

        Raises:
            ValidationError: No explanations or an unknown method.
            UnprocessableEntity: Explanations of different models or versions.
        """
        reducer = _REDUCERS[_method(method)]
        names, matrix = contribution_matrix(explanations)
        values = reducer(np.abs(matrix))
        pairs = sorted(zip(names, values.tolist(), strict=True), key=lambda p: (-p[1], p[0]))
        return dict(pairs)

    def compute_stability(
        self, explanations: list[PredictionExplanation], top_k: int = 5
    ) -> dict[str, Any]:
        """How consistently features rank in the top-k by |contribution|.

        Returns:
            ``top_k_frequency`` (feature → share of explanations where it is in the top-k),
            ``mean_pairwise_jaccard`` (mean Jaccard similarity of the top-k sets over all pairs;
            1.0 = always the same features; ``None`` with fewer than two explanations).
        """
        if top_k < 1:
            raise ValidationError("top_k must be at least 1")
        names, matrix = contribution_matrix(explanations)
        k = min(top_k, len(names))
        tops = [_top_set(row, names, k) for row in np.abs(matrix)]
        frequency = {name: sum(name in top for top in tops) / len(tops) for name in names}
        pairs = [len(a & b) / len(a | b) for a, b in combinations(tops, 2)]
        return {
            "top_k": k,
            "n_explanations": len(tops),
            "top_k_frequency": dict(sorted(frequency.items(), key=lambda p: (-p[1], p[0]))),
            "mean_pairwise_jaccard": float(np.mean(pairs)) if pairs else None,
        }

    def detect_feature_interactions(
        self, explanations: list[PredictionExplanation], threshold: float = 0.5
    ) -> list[dict[str, Any]]:
        """Feature pairs whose contributions move together across explanations.

        Pearson correlation of the two features' contributions over the explanations; pairs
        with |correlation| >= ``threshold`` are returned, strongest first. Features whose
        contribution never varies are skipped; fewer than three explanations give no pairs.
        """
        names, matrix = contribution_matrix(explanations)
        if len(matrix) < 3:
            return []
        varying = [j for j in range(len(names)) if np.std(matrix[:, j]) > 1e-12]
        found = []
        for a, b in combinations(varying, 2):
            correlation = float(np.corrcoef(matrix[:, a], matrix[:, b])[0, 1])
            if abs(correlation) >= threshold:
                found.append(
                    {"feature_a": names[a], "feature_b": names[b], "correlation": correlation}
                )
        return sorted(found, key=lambda pair: -abs(pair["correlation"]))

    def segment_by_prediction(
        self,
        explanations: list[PredictionExplanation],
        prediction_bins: list[float],
        method: AggregationMethod | str = AggregationMethod.MEAN,
    ) -> list[dict[str, Any]]:
        """Global importance within ranges of the predicted value.

        Args:
            explanations: Explanations of one model version.
            prediction_bins: Ascending bin edges; segment i is ``[edges[i], edges[i+1])``, the
                last one closed. Predictions outside every bin are left out.
            method: Aggregation method within each segment.

        Returns:
            One entry per segment: ``lower``, ``upper``, ``count`` and ``feature_importances``
            (empty when no prediction falls in the segment).
        """
        edges = [float(edge) for edge in prediction_bins]
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValidationError("prediction_bins must be at least two ascending edges")
        contribution_matrix(explanations)
        segments = []
        for i, (lower, upper) in enumerate(zip(edges, edges[1:], strict=False)):
            last = i == len(edges) - 2
            members = [
                e
                for e in explanations
                if lower <= e.actual_prediction < upper or (last and e.actual_prediction == upper)
            ]
            importances = self.aggregate_explanations(members, method) if members else {}
            segments.append(
                {
                    "lower": lower,
                    "upper": upper,
                    "count": len(members),
                    "feature_importances": importances,
                }
            )
        return segments

    def summarize(
        self,
        explanations: list[PredictionExplanation],
        method: AggregationMethod | str = AggregationMethod.MEAN,
        top_k: int = 5,
        interaction_threshold: float = 0.5,
    ) -> GlobalExplanation:
        """Importances, stability and interactions in one :class:`GlobalExplanation`."""
        first = explanations[0] if explanations else None
        importances = self.aggregate_explanations(explanations, method)
        assert first is not None
        return GlobalExplanation(
            model_id=first.model_id,
            model_version=first.model_version,
            explanation_type=first.explanation_type,
            aggregation_method=_method(method).value,
            feature_importances=importances,
            n_explanations=len(explanations),
            stability=self.compute_stability(explanations, top_k),
            interactions=self.detect_feature_interactions(explanations, interaction_threshold),
            output_space=first.output_space,
        )


def contribution_matrix(
    explanations: list[PredictionExplanation],
) -> tuple[list[str], np.ndarray]:
    """Feature names (first-seen order) and an explanations × features contribution matrix.

    Raises:
        ValidationError: No explanations.
        UnprocessableEntity: Explanations of different models or versions.
    """
    if not explanations:
        raise ValidationError("at least one explanation is needed")
    models = {(e.model_id, e.model_version) for e in explanations}
    if len(models) > 1:
        listed = ", ".join(f"{m}@{v}" for m, v in sorted(models))
        raise UnprocessableEntity(
            f"explanations of different models or versions cannot be aggregated: {listed}"
        )
    names: dict[str, int] = {}
    for explanation in explanations:
        for contribution in explanation.feature_contributions:
            names.setdefault(contribution.feature_name, len(names))
    matrix = np.zeros((len(explanations), len(names)), dtype=float)
    for row, explanation in enumerate(explanations):
        for contribution in explanation.feature_contributions:
            matrix[row, names[contribution.feature_name]] = contribution.contribution
    return list(names), matrix


def _top_set(row: np.ndarray, names: list[str], k: int) -> frozenset[str]:
    order = sorted(range(len(names)), key=lambda j: (-row[j], names[j]))
    return frozenset(names[j] for j in order[:k])


def _method(method: AggregationMethod | str) -> AggregationMethod:
    try:
        return AggregationMethod(method)
    except ValueError:
        allowed = ", ".join(m.value for m in AggregationMethod)
        raise ValidationError(f"aggregation_method must be one of {allowed}") from None
