"""Bias metrics of a model on a dataset with a declared facet, as SageMaker Clarify defines them.

The facet splits the rows into ``d`` (the facet value(s) declared, e.g. the group that may be
disadvantaged) and ``a`` (every other row). With ``n`` rows per group, ``q`` the share of
positive labels and ``q̂`` the share of positive predictions:

* Pre-training (labels only): class imbalance ``CI = (n_a − n_d) / (n_a + n_d)``; difference in
  proportions of labels ``DPL = q_a − q_d``.
* Post-training (predictions): difference in positive proportions in predicted labels
  ``DPPL = q̂_a − q̂_d``; disparate impact ``DI = q̂_d / q̂_a``; equal-opportunity difference
  (Clarify's recall difference) ``EOD = TPR_a − TPR_d``, the true-positive rates.

Signed as Clarify signs them (positive: ``a`` is favoured). A ratio or rate over an empty set is
``None`` (not a number JSON can carry), with the reason in ``undefined``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from chalicelib.core.errors import UnprocessableEntity
from chalicelib.explainability.models import BiasReport


def _share(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def _difference(a: float | None, d: float | None) -> float | None:
    return None if a is None or d is None else a - d


def bias_metrics(
    labels: Sequence[Any],
    facet: Sequence[Any],
    facet_values: Sequence[Any],
    positive_label: Any,
    predictions: Sequence[Any] | None = None,
    facet_name: str = "facet",
) -> BiasReport:
    """Clarify's bias metrics (see the module docstring).

    Args:
        labels: The observed label of each row.
        facet: Each row's facet value.
        facet_values: The facet values forming group ``d``.
        positive_label: The favourable label (for labels and predictions).
        predictions: The model's predicted label of each row (post-training metrics).
        facet_name: The facet column's name (reported).

    Raises:
        UnprocessableEntity: Lengths differ, or a group is empty.
    """
    y = np.asarray([value == positive_label for value in labels], dtype=bool)
    wanted = set(facet_values)
    in_d = np.asarray([value in wanted for value in facet], dtype=bool)
    if len(in_d) != len(y) or (predictions is not None and len(predictions) != len(y)):
        raise UnprocessableEntity("labels, facet and predictions must have one value per row")
    n_d, n_a = int(in_d.sum()), int((~in_d).sum())
    if n_d == 0 or n_a == 0:
        empty = "d (the facet values)" if n_d == 0 else "a (every other row)"
        raise UnprocessableEntity(f"facet '{facet_name}': group {empty} has no rows")
    report = BiasReport(
        facet=facet_name,
        facet_values=list(facet_values),
        counts={"a": n_a, "d": n_d},
        pre_training={
            "CI": (n_a - n_d) / (n_a + n_d),
            "DPL": _difference(_share(y[~in_d]), _share(y[in_d])),
        },
    )
    if predictions is not None:
        _post_training(report, y, in_d, predictions, positive_label)
    return report


def _post_training(
    report: BiasReport, y: np.ndarray, in_d: np.ndarray, predictions: Any, positive: Any
) -> None:
    y_hat = np.asarray([value == positive for value in predictions], dtype=bool)
    rate_a, rate_d = _share(y_hat[~in_d]), _share(y_hat[in_d])
    tpr_a, tpr_d = _share(y_hat[~in_d & y]), _share(y_hat[in_d & y])
    impact = None if not rate_a else (rate_d or 0.0) / rate_a
    report.post_training = {
        "DPPL": _difference(rate_a, rate_d),
        "DI": impact,
        "EOD": _difference(tpr_a, tpr_d),
    }
    if impact is None:
        report.undefined["DI"] = "no row of group a is predicted positive"
    if tpr_a is None or tpr_d is None:
        report.undefined["EOD"] = "a group has no positive labels"
