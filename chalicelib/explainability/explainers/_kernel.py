"""KernelSHAP: shap's ``KernelExplainer`` algorithm on the model's outputs, a row at a time.

Model-agnostic, in probability space for classifiers with ``predict_proba`` (margin otherwise),
the prediction for regressors. A background larger than ``background_sample_size`` is
summarized (k-means centres or a seeded random subsample). The values come from
:mod:`._shapley_kernel` (shap's algorithm in numpy: no shap, numba or pandas on a cold
start); every row draws its coalitions with a seed from the request's ``seed`` and its own
values (:func:`row_seed`), so a row's answer is the same alone and in any batch, and equals
``shap.KernelExplainer``'s with numpy's global generator seeded the same way.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

from chalicelib.explainability.budget import guarded
from chalicelib.explainability.explainers._common import (
    ShapOptions,
    ShapResult,
    chosen_classes,
    model_key,
    model_outputs,
    require_background,
)
from chalicelib.explainability.explainers._shapley_kernel import KernelShap, kmeans_background
from chalicelib.explainability.loading import LoadedModel

if TYPE_CHECKING:
    from chalicelib.explainability.base import ExplainerBase


def kernel_values(
    engine: ExplainerBase,
    loaded: LoadedModel,
    X: np.ndarray,
    options: ShapOptions,
    space: str,
    algorithm: str = "kernel",
    nsamples: Any = None,
) -> ShapResult:
    """KernelSHAP values of every row's explained class (one explainer per explained class).

    Args:
        engine: Holds the per-model explainer cache.
        loaded: The model and its background.
        X: Rows to explain.
        options: The request's SHAP options.
        space: The output space explained.
        algorithm: ``kernel`` or ``exact`` (recorded, and part of the explainer's key).
        nsamples: Coalitions per row (``None``: ``options.nsamples`` or shap's ``auto``).
    """
    descriptor, estimator = loaded.descriptor, loaded.estimator
    outputs = model_outputs(estimator, X, space, descriptor.is_classifier)
    chosen = chosen_classes(loaded, X, options, outputs)
    values = np.zeros(X.shape, dtype=float)
    base = np.zeros(len(X), dtype=float)
    rows_used = 0
    count = nsamples if nsamples is not None else options.nsamples or "auto"
    for column in sorted({0 if c is None else c for c in chosen}):
        mask = np.asarray([(0 if c is None else c) == column for c in chosen])
        explainer, rows_used = kernel_explainer(engine, loaded, options, algorithm, space, column)
        values[mask], base[mask] = row_by_row(explainer, X[mask], options.seed, count)
    picks = [0 if c is None else c for c in chosen]
    return ShapResult(
        values=values,
        base=base,
        actual=outputs[np.arange(len(X)), picks],
        classes=chosen,
        algorithm=algorithm,
        output_space=space,
        background_rows=rows_used,
    )


def row_by_row(
    explainer: KernelShap, X: np.ndarray, seed: int, nsamples: Any
) -> tuple[np.ndarray, np.ndarray]:
    """KernelSHAP values row by row, each row's coalitions drawn with its own seed.

    A generator continuing from row to row would make a row's answer depend on the rows
    before it in a batch; seeding from :func:`row_seed` for every row makes a batch equal the
    single explanations.
    """
    values = np.empty(X.shape, dtype=float)
    for i in range(len(X)):
        values[i] = explainer.shap_values(X[i : i + 1], nsamples, row_seed(X[i], seed))
    return values, np.full(len(X), explainer.expected_value)


def kernel_explainer(
    engine: ExplainerBase,
    loaded: LoadedModel,
    options: ShapOptions,
    algorithm: str,
    space: str,
    column: int,
) -> tuple[Any, int]:
    """The KernelSHAP explainer of one output column over the summarized background (cached)
    and the background rows it uses."""
    background = require_background(loaded)
    descriptor, estimator = loaded.descriptor, loaded.estimator

    @guarded
    def predict(data: np.ndarray) -> np.ndarray:
        return model_outputs(estimator, np.asarray(data), space, descriptor.is_classifier)[
            :, column
        ]

    def build() -> tuple[KernelShap, int]:
        weighted = algorithm == "kernel"
        data, rows = summarize_background(
            background,
            options.background_sample_size,
            options.background_method,
            options.seed,
            weighted,
        )
        return KernelShap(predict, *data), rows

    key = (
        *model_key(descriptor, algorithm),
        column,
        options.background_sample_size,
        options.background_method,
        options.seed,
    )
    return engine._explainer(loaded, key, build)


def summarize_background(
    background: np.ndarray, size: int, method: str, seed: int, weighted: bool
) -> tuple[tuple[np.ndarray, np.ndarray | None], int]:
    """The background actually used: all rows, a seeded random subsample or k-means centres.

    Args:
        background: All background rows.
        size: Rows wanted.
        method: ``kmeans`` or ``random``.
        seed: Subsampling seed.
        weighted: Whether the consumer accepts weighted rows (KernelSHAP).

    Returns:
        The rows and their weights (``None``: equal), and how many rows there are.
    """
    if len(background) <= size:
        return (background, None), len(background)
    if method == "kmeans" and weighted:
        centres, weights = kmeans_background(background, size)
        return (centres, weights), len(centres)
    chosen = np.random.default_rng(seed).choice(len(background), size=size, replace=False)
    return (background[np.sort(chosen)], None), size


def row_seed(row: np.ndarray, seed: int) -> int:
    """The seed of one row's KernelSHAP sampling: from the request's ``seed`` and the row's own
    values (so it is the same alone and in any batch)."""
    digest = hashlib.sha256(np.asarray(row, dtype=np.float64).tobytes())
    digest.update(int(seed).to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest()[:4], "little")
