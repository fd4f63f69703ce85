"""KernelSHAP in numpy (issue 17, the explainer's cold start): the numbers ``shap.KernelExplainer``
gives, without importing shap.

Oracle: ``shap.KernelExplainer`` on the same model and background, ``l1_reg=False`` (what the
engine asks), numpy's global generator seeded with the seed ours draws from. The tolerance is
``TOLERANCE`` (1e-12), not equality: the same draws and the same arithmetic give the same
doubles at one BLAS thread count, but OpenBLAS splits ``X.T @ WX`` by thread count, which moves
the last bit (1.5e-16 to 2.5e-16 measured between 1 and 4 threads at 30 and 60 features), so
each comparison runs ours on one thread and shap on four. A wrong draw or weight moves values by
far more: ``test_the_tolerance_still_tells_another_draw_apart``.
Independent of both: efficiency (values add up to ``f(x) - E[f]``), exact enumeration against
Shapley values computed from their definition, and a feature no row varies getting 0. That the
cold path loads no shap, numba or pandas is shown in a fresh interpreter by
``tests/integration/test_explainer_cold_path.py``.
"""

from __future__ import annotations

import itertools
from math import factorial
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from chalicelib.explainability.explainers._kernel import row_seed
from chalicelib.explainability.explainers._shapley_kernel import KernelShap, kmeans_background
from tests.helpers.explain import memory_context, register, tabular_data


def _classifier(features: int, seed: int = 0) -> tuple[Any, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    rows = np.random.default_rng(seed).normal(size=(300, features))
    labels = (rows[:, 0] - rows[:, 1] + rows[:, -1] * rows[:, 0] > 0).astype(int)
    model = LogisticRegression().fit(rows, labels)
    return lambda data: model.predict_proba(data)[:, 1], rows


TOLERANCE = 1e-12  # BLAS's thread-count rounding (~1e-16), far below any algorithmic change


def _shap(predict: Any, background: Any, x: np.ndarray, nsamples: Any, seed: int) -> np.ndarray:
    """shap's values on four BLAS threads (ours run on one: :func:`_ours`)."""
    import shap

    np.random.seed(seed)
    with threadpool_limits(4):
        found = shap.KernelExplainer(predict, background).shap_values(
            x, nsamples=nsamples, silent=True, l1_reg=False
        )
    return np.asarray(found, dtype=float).reshape(-1)


def _ours(explainer: KernelShap, x: np.ndarray, nsamples: Any, seed: int) -> np.ndarray:
    with threadpool_limits(1):
        return explainer.shap_values(x, nsamples, seed)


def _agrees(found: Any, expected: np.ndarray) -> None:
    np.testing.assert_allclose(found, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize(
    ("features", "background_rows", "nsamples"),
    [(20, 100, "auto"), (12, 50, 300), (5, 30, "auto"), (3, 10, "auto"), (30, 20, "auto")],
)
def test_kernel_shap_equals_shaps_kernel_explainer_bit_for_bit(
    features: int, background_rows: int, nsamples: Any
) -> None:
    predict, rows = _classifier(features)
    background = rows[:background_rows]
    ours = KernelShap(predict, background)
    for seed, index in enumerate(range(100, 104)):
        x = rows[index : index + 1].copy()
        if seed == 1:
            x[0, : features - 2] = background[0, : features - 2]  # most features do not vary
        expected = _shap(predict, background, x, nsamples, seed)
        _agrees(_ours(ours, x, nsamples, seed), expected)
    assert ours.expected_value == pytest.approx(float(np.mean(predict(background))), abs=1e-12)


def test_a_kmeans_background_is_shaps_summary_and_gives_shaps_values() -> None:
    import shap
    from sklearn.ensemble import RandomForestRegressor

    rows = np.random.default_rng(3).normal(size=(300, 6))
    rows[::17, 2] = np.nan  # imputed with the column mean, as shap.kmeans does
    target = np.nan_to_num(rows[:, 0] * rows[:, 1])
    model = RandomForestRegressor(10, random_state=0).fit(np.nan_to_num(rows), target)
    centres, weights = kmeans_background(rows, 10)
    summary = shap.kmeans(rows, 10)
    assert np.array_equal(centres, summary.data)
    assert np.array_equal(weights / weights.sum(), summary.weights)
    ours = KernelShap(model.predict, centres, weights)
    x = np.nan_to_num(rows[5:6])
    _agrees(_ours(ours, x, "auto", 3), _shap(model.predict, summary, x, "auto", 3))


def _shapley_by_definition(predict: Any, background: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Shapley values of ``v(S) = mean over the background of f(x on S, background elsewhere)``."""
    m = x.shape[1]

    def value(subset: tuple[int, ...]) -> float:
        data = background.copy()
        data[:, list(subset)] = x[0, list(subset)]
        return float(np.mean(predict(data)))

    phi = np.zeros(m)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for size in range(m):
            weight = factorial(size) * factorial(m - size - 1) / factorial(m)
            for subset in itertools.combinations(others, size):
                phi[i] += weight * (value((*subset, i)) - value(subset))
    return phi


def test_enumerating_every_coalition_gives_the_shapley_values_of_their_definition() -> None:
    predict, rows = _classifier(5, seed=1)
    background, x = rows[:25], rows[200:201]
    found = KernelShap(predict, background).shap_values(x, 2**5 - 2, seed=0)
    np.testing.assert_allclose(found, _shapley_by_definition(predict, background, x), atol=1e-12)


def test_values_add_up_and_features_no_row_varies_get_zero() -> None:
    predict, rows = _classifier(8, seed=2)
    background = rows[:40].copy()
    background[:, 3] = 1.5
    x = rows[250:251].copy()
    x[0, 3] = 1.5
    ours = KernelShap(predict, background)
    values = ours.shap_values(x, "auto", 11)
    assert values[3] == 0.0
    assert values.sum() == pytest.approx(predict(x)[0] - ours.expected_value, abs=1e-12)
    same = KernelShap(predict, np.repeat(background[:1], 5, axis=0))  # one row, five times
    assert not same.shap_values(background[:1], "auto", 0).any()  # nothing varies
    only = background[:1].copy()
    only[0, 6] = 9.0  # one feature varies: it gets the whole difference
    single = same.shap_values(only, "auto", 0)
    assert np.count_nonzero(single) == 1
    assert single[6] == pytest.approx(predict(only)[0] - same.expected_value, abs=1e-15)


def test_singular_normal_equations_fall_back_to_least_squares_as_shap_does() -> None:
    rows = np.random.default_rng(5).normal(size=(30, 4))
    background = np.repeat(rows[:1], 3, axis=0)
    background[1:, 0] += 1.0

    def predict(data: np.ndarray) -> np.ndarray:
        return data[:, 0] * 2 + data[:, 1] * data[:, 2]

    x = rows[7:8]
    # Four varying features and two coalitions: the normal equations cannot be solved.
    with pytest.warns(UserWarning, match="singular"):
        expected = _shap(predict, background, x, 2, 4)
    _agrees(_ours(KernelShap(predict, background), x, 2, 4), expected)


def test_the_engine_answers_what_shap_answers_with_the_rows_seed() -> None:
    from sklearn.neural_network import MLPClassifier

    X, names = tabular_data(200, 11, seed=6)
    labels = (X[:, 0] + X[:, 3] > 0).astype(int)
    ctx = memory_context()
    mlp = MLPClassifier((8,), max_iter=300, random_state=0).fit(X, labels)
    model = register(ctx.reg, mlp, "classification", names, X, ["n", "y"], X[:40])
    batch = ctx.svc.shap.explain_batch(
        model.model_id, model.version, [model.row(i) for i in (150, 151)], seed=9
    )
    for explanation, index in zip(batch, (150, 151), strict=True):
        assert explanation.algorithm == "kernel"
        column = ["n", "y"].index(explanation.explained_class)

        def predict(data: np.ndarray, column: int = column) -> np.ndarray:
            return mlp.predict_proba(data)[:, column]

        x = X[index : index + 1]
        expected = _shap(predict, X[:40], x, "auto", row_seed(X[index], 9))
        found = explanation.contribution_map()
        _agrees([found[name] for name in names], expected)


def test_a_background_with_fewer_distinct_rows_than_centres_is_summarized_by_the_rows_it_has() -> (
    None
):
    """k-means finds only as many clusters as distinct rows; shap.kmeans (and our copy) gave
    weights for those and centres for all ``k``, and the explainer failed on the mismatch."""
    from sklearn.neural_network import MLPRegressor

    X, names = tabular_data(200, 5, seed=6)
    background = np.repeat(X[:3], 70, axis=0)  # 210 rows, 3 distinct
    centres, weights = kmeans_background(background, 10)
    assert len(centres) == len(weights) == 3
    assert sorted(weights.tolist()) == [70.0, 70.0, 70.0]
    ctx = memory_context()
    mlp = MLPRegressor(hidden_layer_sizes=(4,), max_iter=50, random_state=0).fit(X, X[:, 0])
    model = register(ctx.reg, mlp, "regression", names, X, None, background)
    for size in (10, 100):
        found = ctx.svc.shap.explain_batch(
            model.model_id,
            model.version,
            [model.row(150)],
            algorithm="kernel",
            background_sample_size=size,
        )[0]
        # 5 features: every coalition is enumerated, so these are the definition's values
        # over the whole background (each distinct row weighted by its 70 copies).
        expected = _shapley_by_definition(mlp.predict, background, X[150:151])
        values = found.contribution_map()
        np.testing.assert_allclose([values[n] for n in names], expected, atol=1e-12)


def test_the_tolerance_still_tells_another_draw_apart() -> None:
    """The tolerance's power: coalitions drawn with the neighbouring seed (a wrong draw) or
    background weights off by one part in a million are far outside it."""
    predict, rows = _classifier(30)
    background, x = rows[:20], rows[100:101]
    expected = _shap(predict, background, x, "auto", 0)
    ours = KernelShap(predict, background)
    assert np.abs(_ours(ours, x, "auto", 1) - expected).max() > 1e-6
    skewed = KernelShap(predict, background, np.linspace(1.0, 1.000001, len(background)))
    assert np.abs(_ours(skewed, x, "auto", 0) - expected).max() > 1e3 * TOLERANCE


def test_a_feature_near_every_background_value_still_varies() -> None:
    """shap tells a varying feature with ``np.allclose`` (rtol 1e-5): a Unix timestamp three
    hours from every background row (1.7e9 * 1e-5 = 4.7 hours) counted as not varying, got 0,
    and its credit went to the other feature (or, alone, nowhere: values no longer added up).
    Oracle: a linear model's Shapley values, ``coef * (x - mean of the background)``."""
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    X = np.column_stack([1.7e9 + rng.integers(0, 86_400 * 30, 300), rng.normal(size=300)])
    model = LinearRegression().fit(X, (X[:, 0] - 1.7e9) / 86_400 + X[:, 1])
    background = X[:50].copy()
    background[:, 0] = 1.7e9 + 86_400 * 10  # every background row at one moment
    ctx = memory_context()
    registered = register(ctx.reg, model, "regression", ["ts", "x"], X, None, background)
    for other in (0.5, background[0, 1]):  # the second: only the timestamp differs
        x = np.array([[background[0, 0] + 3 * 3600, other]])
        found = ctx.svc.shap.explain_batch(
            registered.model_id,
            registered.version,
            [{"ts": x[0, 0], "x": x[0, 1]}],
            algorithm="kernel",
        )[0].contribution_map()
        expected = model.coef_ * (x[0] - background.mean(axis=0))
        np.testing.assert_allclose([found["ts"], found["x"]], expected, atol=1e-9)


@pytest.mark.parametrize("scale", [1e-12, 1e-300])
def test_a_model_of_tiny_outputs_keeps_its_values(scale: float) -> None:
    """shap sets values under 1e-10 to 0: a model whose outputs are that small (a rare class's
    probability, a quantity in small units) got all zeros, adding up to nothing. Oracle: a
    linear model's Shapley values, ``coef * (x - mean of the background)``; values at ordinary
    scales are still rounded as shap rounds them (the oracle tests above)."""
    coef = np.array([2.0, 1.0, -1.0]) * scale
    rows = np.random.default_rng(4).normal(size=(40, 3))
    background, x = rows[:30], rows[35:36]

    def predict(data: np.ndarray) -> np.ndarray:
        return data @ coef

    found = KernelShap(predict, background).shap_values(x, "auto", 0)
    np.testing.assert_allclose(found, coef * (x[0] - background.mean(axis=0)), rtol=1e-9)


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_a_background_of_extreme_magnitude_is_summarized_as_at_ordinary_scale(scale: float) -> None:
    """k-means' squared distances overflow (1e200) or underflow (1e-200): every row fell in
    one cluster, 20 centres had one weight, and the explainer failed (IndexError, a 500;
    shap.kmeans fails the same way). Oracle: shap.KernelExplainer over shap.kmeans of the same
    data at scale 1 (4 features: every coalition enumerated), whose values the linear model's
    scaled twin must reproduce."""
    import shap
    from sklearn.linear_model import LinearRegression

    rows = np.random.default_rng(0).normal(size=(300, 4))
    target = rows[:, 0] + 2 * rows[:, 1]
    ordinary = LinearRegression().fit(rows, target)
    scaled = LinearRegression().fit(rows * scale, target)
    ctx = memory_context()
    model = register(
        ctx.reg, scaled, "regression", list("abcd"), rows * scale, None, rows[:200] * scale
    )
    found = ctx.svc.shap.explain_batch(
        model.model_id,
        model.version,
        [model.row(250)],
        algorithm="kernel",
        background_sample_size=20,
    )[0].contribution_map()
    summary = shap.kmeans(rows[:200], 20)
    expected = shap.KernelExplainer(ordinary.predict, summary).shap_values(
        rows[250:251], silent=True, l1_reg=False
    )
    np.testing.assert_allclose([found[n] for n in "abcd"], np.ravel(expected), rtol=1e-6, atol=1e-9)
