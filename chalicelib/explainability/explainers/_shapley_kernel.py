"""KernelSHAP written with numpy alone: shap's ``KernelExplainer`` algorithm, without shap.

``import shap`` loads numba and pandas (about 2 s of CPU on a cold explainer); a KernelSHAP
answer needs neither. This is the algorithm of shap 0.51's ``shap/explainers/_kernel.py``
for what the engine asks of it (a dense background, a model with one output column, the
identity link, no l1 regularization), step for step so that the same seed gives the same
answer:

1. features whose value equals every background row's get 0 (compared exactly, where shap
   uses ``np.allclose`` and its relative tolerance of 1e-5); with one varying feature it gets
   ``f(x) - E[f]``;
2. coalition sizes are weighted with the Shapley kernel ``(M - 1) / (s (M - s))``; sizes whose
   every coalition (and complement) fits in the remaining budget are enumerated, the rest are
   drawn (one ``choice`` of sizes, one ``permutation`` per draw, complements paired, repeats
   adding weight) and their weights rescaled to the weight left;
3. the model runs once on every coalition's rows (background columns replaced by ``x`` where
   the coalition holds the feature); each coalition's expected output is the weighted mean over
   the background rows, summed in shap's order;
4. the values solve the weighted least squares constrained to add up to ``f(x) - E[f]`` (one
   variable eliminated; ``lstsq`` when the normal equations are singular); values under 1e-10
   are set to 0 as shap does, except that for a model whose values are all under 1e-6 the
   cut shrinks with them (shap's zeroed every value of such a model).

``tests/unit/test_ex_kernel_numpy.py`` compares it with ``shap.KernelExplainer`` (same seed,
sampled and enumerated) and checks efficiency.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from scipy.special import binom

Predict = Callable[[np.ndarray], np.ndarray]
ROUNDING = 1e-10  # shap sets values smaller than this to 0
# Below this scale (the largest value or f(x) - E[f]) the cut shrinks with it: shap's absolute
# 1e-10 zeroed every value of a model whose outputs are that small.
ROUNDING_SCALE = 1e-6


def kmeans_background(background: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """shap's ``kmeans`` summary: k-means centres (missing values imputed with the mean, each
    coordinate moved to the nearest value the column holds) and the rows each one stands for.

    Rows of extreme magnitude are clustered scaled by a power of two (:func:`_power_of_two_scale`).
    A background with fewer distinct rows than ``size`` is its own exact summary: its
    distinct rows, each weighted by its copies (there k-means finds fewer clusters than asked
    and scikit-learn's centres no longer match its labels; shap's ``kmeans`` fails on it).

    Returns:
        The centres and their weights (rows per centre).
    """
    from sklearn.cluster import KMeans

    rows = _mean_imputed(background)
    distinct, copies = np.unique(rows, axis=0, return_counts=True)
    if len(distinct) < size:
        return distinct, 1.0 * copies
    power = _power_of_two_scale(rows)
    fitted = KMeans(n_clusters=size, random_state=0, n_init=10).fit(np.ldexp(rows, -power))
    centres = np.ldexp(fitted.cluster_centers_, power)
    for i in range(size):
        for j in range(rows.shape[1]):
            centres[i, j] = rows[np.argmin(np.abs(rows[:, j] - centres[i, j])), j]
    return centres, 1.0 * np.bincount(fitted.labels_)


def _power_of_two_scale(rows: np.ndarray) -> int:
    """The power of two k-means' rows are divided by: 0 at ordinary magnitudes (shap's
    numbers), else what brings the largest to about 1, where squared distances neither
    overflow (1e200) nor underflow (1e-200). Dividing by a power of two is exact, so the
    clustering is the one of the same data at scale 1."""
    largest = float(np.abs(rows).max(initial=0.0))
    if largest == 0.0 or 2.0**-100 < largest < 2.0**100:
        return 0
    return int(np.frexp(largest)[1])


def _mean_imputed(background: np.ndarray) -> np.ndarray:
    """Missing values replaced by their column's mean (scikit-learn's ``SimpleImputer``, which
    shap uses, imports pandas to ask whether the marker is ``pandas.NA``)."""
    rows = np.array(background, dtype=float)
    missing = np.isnan(rows)
    if missing.any():
        with np.errstate(invalid="ignore"):
            means = np.nanmean(rows, axis=0)
        rows[missing] = np.take(means, np.nonzero(missing)[1])
    return rows


class KernelShap:
    """KernelSHAP of one model output over a weighted background.

    Args:
        predict: The model: rows → one output per row.
        data: Background rows.
        weights: Each background row's weight (``None``: equal).
    """

    def __init__(self, predict: Predict, data: np.ndarray, weights: np.ndarray | None = None):
        self.predict = predict
        self.data = np.asarray(data)
        raw = np.ones(len(self.data)) if weights is None else np.array(weights, dtype=float)
        raw /= np.sum(raw)
        self.weights = raw
        self.fnull = float(np.sum(np.asarray(predict(self.data)).reshape(-1) * self.weights, 0))
        self.expected_value = self.fnull

    def shap_values(self, x: np.ndarray, nsamples: int | str, seed: int) -> np.ndarray:
        """The SHAP values of one row.

        Args:
            x: The row (one value per feature).
            nsamples: Coalitions to evaluate, or ``"auto"`` (``2M + 2048``).
            seed: Seed of the coalition draws (numpy's ``RandomState``, as shap's global one).
        """
        row = np.asarray(x).reshape(1, -1)
        varying = self._varying(row)
        phi = np.zeros(row.shape[1])
        fx = float(np.asarray(self.predict(row)).reshape(-1)[0])
        if len(varying) == 1:
            phi[varying[0]] = fx - self.fnull
        elif len(varying) > 1:
            phi[varying] = _Coalitions(self, row, varying, nsamples, seed).solve(fx)
        return phi

    def _varying(self, row: np.ndarray) -> np.ndarray:
        flags = [_differs(row[0, [i]], self.data[:, [i]]) for i in range(self.data.shape[1])]
        return np.nonzero(np.asarray(flags, dtype=float))[0]


def _differs(value: np.ndarray, column: np.ndarray) -> bool:
    """Whether the row's value differs from some background row's (missing equals missing).

    Exactly, not with shap's ``np.allclose`` (relative tolerance 1e-5): that counted a Unix
    timestamp hours away from every background row (1.7e9 * 1e-5 s) as not varying, gave it
    0 and its credit to other features.
    """
    same = value == column
    if np.issubdtype(value.dtype, np.inexact) and np.issubdtype(column.dtype, np.inexact):
        same |= np.isnan(value) & np.isnan(column)
    return not bool(np.all(same))


class _Coalitions:
    """One row's coalitions, their kernel weights and the model's expected output on each."""

    def __init__(
        self,
        owner: KernelShap,
        row: np.ndarray,
        varying: np.ndarray,
        nsamples: int | str,
        seed: int,
    ):
        self.owner, self.row, self.varying = owner, row, varying
        self.M = len(varying)
        wanted = 2 * self.M + 2**11 if nsamples == "auto" else int(nsamples)
        self.max_samples = 2**30
        if self.M <= 30:
            self.max_samples = 2**self.M - 2
            wanted = min(wanted, self.max_samples)
        self.nsamples = wanted
        self.masks = np.zeros((wanted, self.M))
        self.kernel_weights = np.zeros(wanted)
        self.added = 0
        self._fill(np.random.RandomState(seed))
        self.ey = self._expected_outputs()

    def _add(self, mask: np.ndarray, weight: float) -> None:
        self.masks[self.added] = mask
        self.kernel_weights[self.added] = weight
        self.added += 1

    def _fill(self, rng: np.random.RandomState) -> None:
        M = self.M
        sizes = int(np.ceil((M - 1) / 2.0))
        paired = int(np.floor((M - 1) / 2.0))
        weight_vector = np.array([(M - 1.0) / (i * (M - i)) for i in range(1, sizes + 1)])
        weight_vector[:paired] *= 2
        weight_vector /= np.sum(weight_vector)
        full = self._enumerate(weight_vector, sizes, paired)
        if full != sizes:
            self._draw(rng, weight_vector, full, paired)

    def _enumerate(self, weight_vector: np.ndarray, sizes: int, paired: int) -> int:
        """Adds every coalition of the sizes the budget covers; returns how many sizes."""
        full, left = 0, self.nsamples
        remaining = weight_vector.copy()
        mask = np.zeros(self.M)
        for size in range(1, sizes + 1):
            count = binom(self.M, size) * (2 if size <= paired else 1)
            if left * remaining[size - 1] / count < 1.0 - 1e-8:
                break
            full += 1
            left -= count
            if remaining[size - 1] < 1.0:
                remaining /= 1 - remaining[size - 1]
            weight = weight_vector[size - 1] / binom(self.M, size)
            if size <= paired:
                weight /= 2.0
            for chosen in itertools.combinations(range(self.M), size):
                mask[:] = 0.0
                mask[list(chosen)] = 1.0
                self._add(mask, weight)
                if size <= paired:
                    self._add(np.abs(mask - 1), weight)
        return full

    def _draw(
        self, rng: np.random.RandomState, weight_vector: np.ndarray, full: int, paired: int
    ) -> None:
        """Draws coalitions of the remaining sizes (complements paired, repeats add weight)."""
        fixed = self.added
        left = self.nsamples - self.added
        remaining = weight_vector.copy()
        remaining[:paired] /= 2
        remaining = remaining[full:]
        remaining /= np.sum(remaining)
        draws = rng.choice(len(remaining), 4 * left, p=remaining)
        used: dict[tuple[float, ...], int] = {}
        mask = np.zeros(self.M)
        position = 0
        while left > 0 and position < len(draws):
            mask.fill(0.0)
            size = draws[position] + full + 1
            position += 1
            mask[rng.permutation(self.M)[:size]] = 1.0
            key = tuple(mask)
            new = key not in used
            if new:
                used[key] = self.added
                left -= 1
                self._add(mask, 1.0)
            else:
                self.kernel_weights[used[key]] += 1.0
            if left > 0 and size <= paired:
                if new:
                    left -= 1
                    self._add(np.abs(mask - 1), 1.0)
                else:
                    self.kernel_weights[used[key] + 1] += 1.0
        weight_left = np.sum(weight_vector[full:])
        self.kernel_weights[fixed:] *= weight_left / self.kernel_weights[fixed:].sum()

    def _expected_outputs(self) -> np.ndarray:
        """The model once on every added coalition's rows; each coalition's weighted mean."""
        data, weights = self.owner.data, self.owner.weights
        n = len(data)
        chosen = np.zeros((self.added, data.shape[1]), dtype=bool)
        chosen[:, self.varying] = self.masks[: self.added] == 1.0
        synthetic = np.where(chosen[:, None, :], self.row[0][None, None, :], data[None, :, :])
        outputs = np.asarray(self.owner.predict(synthetic.reshape(self.added * n, -1)))
        y = outputs.reshape(self.added, n)
        ey = np.zeros(self.nsamples)
        totals = np.zeros(self.added)
        for j in range(n):  # shap's order of summation (``_kernel_lib._exp_val``)
            totals += y[:, j] * weights[j]
        ey[: self.added] = totals
        return ey

    def solve(self, fx: float) -> np.ndarray:
        """The constrained weighted least squares: values adding up to ``fx - E[f]``."""
        gap = fx - self.owner.fnull
        adjusted = self.ey - self.owner.fnull
        last = self.M - 1
        target = adjusted - self.masks[:, last] * gap
        kept = np.arange(last)  # a copy as in shap: the product's rounding follows the layout
        X = np.transpose(np.transpose(self.masks[:, kept]) - self.masks[:, last])
        WX = self.kernel_weights[:, None] * X
        try:
            w = np.linalg.solve(X.T @ WX, WX.T @ target)
        except np.linalg.LinAlgError:
            root = np.sqrt(self.kernel_weights)
            w = np.linalg.lstsq(root[:, None] * X, root * target, rcond=None)[0]
        phi = np.zeros(self.M)
        phi[:last] = w
        phi[last] = gap - sum(w)
        scale = max(abs(gap), float(np.abs(phi).max()))
        phi[np.abs(phi) < ROUNDING * min(1.0, scale / ROUNDING_SCALE)] = 0
        return phi
