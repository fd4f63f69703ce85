"""Exact SHAP: every coalition (2^M - 2) weighted with the Shapley kernel.

For at most ``EXACT_MAX_FEATURES`` features this gives the exact Shapley values for the
background. It runs through the KernelSHAP machinery (:mod:`._kernel`) because shap's
``ExactExplainer`` JIT-compiles with numba on first use (seconds on a cold Lambda).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from chalicelib.explainability.explainers._common import ShapOptions, ShapResult
from chalicelib.explainability.explainers._kernel import kernel_values
from chalicelib.explainability.loading import LoadedModel

if TYPE_CHECKING:
    from chalicelib.explainability.base import ExplainerBase

EXACT_MAX_FEATURES = 10


def exact_values(
    engine: ExplainerBase, loaded: LoadedModel, X: np.ndarray, options: ShapOptions, space: str
) -> ShapResult:
    """Exact Shapley values of every row's explained class (every coalition, no sampling)."""
    coalitions = 2 ** X.shape[1] - 2
    return kernel_values(engine, loaded, X, options, space, "exact", coalitions)
