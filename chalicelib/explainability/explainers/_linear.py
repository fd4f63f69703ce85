"""LinearSHAP: ``shap.LinearExplainer`` (interventional), ``phi = coef * (x - mean(background))``.

Output space: log-odds for binary logistic regression, margin for other linear classifiers, the
prediction for regressors. The whole background is used: its mean costs one pass over it, so
linear models never subsample (``background_sample_size`` is ignored).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from chalicelib.explainability.budget import SHAP_CHUNK
from chalicelib.explainability.explainers._common import (
    ShapOptions,
    ShapResult,
    chosen_classes,
    class_result,
    in_row_chunks,
    model_key,
    model_outputs,
    require_background,
)
from chalicelib.explainability.jit_cache import import_shap
from chalicelib.explainability.loading import LoadedModel

if TYPE_CHECKING:
    from chalicelib.explainability.base import ExplainerBase


def linear_explainer(engine: ExplainerBase, loaded: LoadedModel) -> tuple[Any, int]:
    """shap's LinearExplainer over the whole background (cached) and the rows it uses."""
    background = require_background(loaded)

    def build() -> tuple[Any, int]:
        shap = import_shap()

        masker = shap.maskers.Independent(background, max_samples=len(background))
        return shap.LinearExplainer(loaded.estimator, masker), len(background)

    return engine._explainer(loaded, model_key(loaded.descriptor, "linear"), build)


def linear_values(
    engine: ExplainerBase, loaded: LoadedModel, X: np.ndarray, options: ShapOptions, space: str
) -> ShapResult:
    """LinearSHAP values of every row's explained class."""
    descriptor = loaded.descriptor
    explainer, rows = linear_explainer(engine, loaded)
    outputs = model_outputs(loaded.estimator, X, space, descriptor.is_classifier)
    raw = in_row_chunks(lambda part: explainer.shap_values(part), X, SHAP_CHUNK)
    chosen = chosen_classes(loaded, X, options, outputs, from_outputs=True)
    return class_result(raw, explainer.expected_value, outputs, chosen, "linear", space, rows)
