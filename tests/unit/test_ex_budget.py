"""Bounded explanation work: the cost estimate, the limits and the deadline (no AWS).

The counts an estimate is built on (model calls and rows) are checked against what shap and lime
really ask of the model (a model that counts its calls); the neighbourhood LIME image builds by
indexing against lime's own loop; chunked model calls and TreeSHAP calls against one call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.explainability import budget
from chalicelib.explainability.budget import (
    METHODS,
    Allowance,
    Estimate,
    Limits,
    ModelSpeed,
    Work,
    admit,
    bounded,
    checkpoint,
    decide,
    estimate,
    guarded,
    image_counts,
    job_allowance,
    measure_speed,
    text_counts,
)
from chalicelib.explainability.errors import DeadlineExceeded, NeedsJob, TooExpensive
from chalicelib.explainability.loading import LoadedModel, ModelDescriptor
from chalicelib.explainability.models import ExplanationQuery, parse_request

# --- the estimate -----------------------------------------------------------------------------
WORK = st.builds(
    Work,
    method=st.sampled_from(METHODS),
    inputs=st.integers(1, 200),
    features=st.integers(1, 400),
    samples=st.integers(10, 20_000),
    background_rows=st.integers(1, 2_000),
    row_values=st.integers(1, 800_000),
    pixels=st.integers(0, 300_000),
    segmentation=st.sampled_from(["slic", "quickshift", "felzenszwalb"]),
    interactions=st.booleans(),
    outputs=st.integers(1, 12),
)
GROWABLE = ("inputs", "features", "samples", "background_rows", "row_values", "pixels", "outputs")


@settings(max_examples=300, deadline=None)
@given(
    work=WORK,
    field=st.sampled_from(GROWABLE),
    more=st.integers(1, 5_000),
    speed=st.none() | st.builds(ModelSpeed, st.floats(0, 0.1), st.floats(0, 1e-3)),
)
def test_the_estimate_never_decreases_when_a_request_asks_for_more(
    work: Work, field: str, more: int, speed: ModelSpeed | None
) -> None:
    bigger = dataclasses.replace(work, **{field: getattr(work, field) + more})
    small, large = estimate(work, speed), estimate(bigger, speed)
    assert large.seconds >= small.seconds
    assert large.model_rows >= small.model_rows
    assert large.model_calls >= small.model_calls
    assert large.peak_values >= small.peak_values


@settings(max_examples=200, deadline=None)
@given(work=WORK, slower=st.floats(1e-9, 1e-3), extra_call=st.floats(0, 0.1))
def test_a_slower_model_never_makes_the_estimate_smaller(
    work: Work, slower: float, extra_call: float
) -> None:
    base = ModelSpeed(1e-4, 1e-7)
    slow = ModelSpeed(base.call_seconds + extra_call, base.row_seconds + slower)
    assert estimate(work, slow).seconds >= estimate(work, base).seconds


@settings(max_examples=100, deadline=None)
@given(work=WORK)
def test_interaction_values_never_cost_less(work: Work) -> None:
    without = dataclasses.replace(work, interactions=False)
    assert (
        estimate(dataclasses.replace(work, interactions=True)).seconds >= estimate(without).seconds
    )


def test_an_estimate_survives_the_lambda_boundary_unchanged() -> None:
    cost = estimate(Work("kernel", 3, 12, 0, 40, 12), ModelSpeed(2e-4, 3e-6))
    assert Estimate.from_dict(cost.to_dict()) == cost


def test_counts_of_texts_and_images_are_read_without_converting_them() -> None:
    assert text_counts("an excellent, gripping story!") == (4, 29)
    assert text_counts(None) == (1, 1)
    gray = np.zeros((7, 5)).tolist()
    rgb = np.zeros((4, 6, 3)).tolist()
    assert image_counts(gray) == (35, 35)
    assert image_counts(rgb) == (24, 72)
    assert image_counts("not an image") == (1, 1)


# --- counts against what shap and lime really evaluate ------------------------------------------
class CountingClassifier:
    """A logistic regression that counts the calls and rows it is asked to predict."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        self.inner = LogisticRegression(max_iter=500).fit(X, y)
        self.classes_ = self.inner.classes_
        self.n_features_in_ = X.shape[1]
        self.calls = 0
        self.rows = 0

    def predict_proba(self, X: Any) -> np.ndarray:
        self.calls += 1
        self.rows += len(X)
        return self.inner.predict_proba(np.asarray(X, dtype=float))

    def predict(self, X: Any) -> np.ndarray:
        return self.inner.predict(np.asarray(X, dtype=float))


class CountingTextModel:
    """A TF-IDF + logistic regression pipeline that counts the texts it is asked to score."""

    def __init__(self, texts: list[str], labels: list[int]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        self.inner = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, labels)
        self.classes_ = self.inner.classes_
        self.calls = 0
        self.rows = 0

    def predict_proba(self, texts: Any) -> np.ndarray:
        self.calls += 1
        self.rows += len(texts)
        return self.inner.predict_proba(list(texts))


class Loader:
    """An in-memory model loader."""

    def __init__(self) -> None:
        self.models: dict[str, LoadedModel] = {}

    def add(self, name: str, estimator: Any, task: str, features: int, background: Any) -> None:
        names = tuple(f"f{i}" for i in range(features))
        descriptor = ModelDescriptor(name, 1, task, names, ("a", "b"), f"sha-{name}")
        self.models[name] = LoadedModel(estimator, descriptor, background)

    def describe(self, model_id: str, version: int | None) -> ModelDescriptor:
        return self.models[model_id].descriptor

    def load(self, model_id: str, version: int | None) -> LoadedModel:
        return self.models[model_id]


@pytest.fixture
def engines() -> Any:
    from chalicelib.explainability.lime_engine import LIMEExplainer
    from chalicelib.explainability.planner import CostPlanner
    from chalicelib.explainability.shap_engine import SHAPExplainer

    loader = Loader()
    shap = SHAPExplainer(loader)
    return type(
        "Engines",
        (),
        {
            "loader": loader,
            "shap": shap,
            "lime": LIMEExplainer(loader),
            "planner": CostPlanner(loader, shap.tree_explainer),
        },
    )


def _tabular(engines: Any, name: str, features: int, background_rows: int) -> CountingClassifier:
    rng = np.random.default_rng(features)
    X = rng.normal(size=(400, features))
    model = CountingClassifier(X, (X[:, 0] - X[:, 1] > 0).astype(int))
    engines.loader.add(name, model, "classification", features, X[:background_rows])
    return model


def _rows(engines: Any, name: str, count: int) -> list[dict[str, float]]:
    names = engines.loader.models[name].descriptor.feature_names
    rng = np.random.default_rng(7)
    return [
        dict(zip(names, rng.normal(size=len(names)).tolist(), strict=True)) for _ in range(count)
    ]


def _counted(model: Any, run: Any) -> tuple[int, int]:
    model.calls = model.rows = 0
    run()
    return model.calls, model.rows


@pytest.mark.parametrize(("algorithm", "features"), [("kernel", 12), ("exact", 5)])
def test_model_rows_of_kernel_and_exact_shap_are_what_shap_evaluates(
    engines: Any, algorithm: str, features: int
) -> None:
    model = _tabular(engines, algorithm, features, 30)
    rows = _rows(engines, algorithm, 2)
    options = {"algorithm": algorithm, "background_sample_size": 20, "background_method": "random"}
    options |= {"class_name": "b"}
    payload = {"explanation_type": "shap", "inputs": rows, **options}
    descriptor = engines.loader.describe(algorithm, 1)
    planned = engines.planner.measured(_request("batch", payload), descriptor)
    calls, counted = _counted(
        model, lambda: engines.shap.explain_batch(algorithm, 1, rows, **options)
    )
    # shap: the 20 background rows once (building the explainer), then per input the input and
    # every coalition over the 20 background rows; the engine adds one call on the inputs.
    coalitions = budget.kernel_coalitions(features) if algorithm == "kernel" else 2**features - 2
    assert planned.model_rows == 2 * (coalitions * 20 + 1) + 20
    assert counted - len(rows) == planned.model_rows
    assert calls - 1 == planned.model_calls


def _tree_model(engines: Any, name: str, features: int, classes: int) -> None:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(features)
    X = rng.normal(size=(300, features))
    y = np.digitize(X[:, 0] + X[:, 1], np.linspace(-1, 1, classes - 1))
    forest = RandomForestClassifier(5, max_depth=3, random_state=0).fit(X, y)
    engines.loader.add(name, forest, "classification", features, X[:20])


def _shap_calls(engines: Any, name: str, run: Any) -> int:
    """The calls ``run`` makes to the model's TreeExplainer (values and interaction values)."""
    explainer = engines.shap.tree_explainer(engines.loader.load(name, 1))
    counted = {"calls": 0}

    def counting(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            counted["calls"] += 1
            return method(*args, **kwargs)

        return call

    names = ("shap_values", "shap_interaction_values")
    for method in names:
        setattr(explainer, method, counting(getattr(explainer, method)))
    try:
        run()
    finally:
        for method in names:
            delattr(explainer, method)  # the class's methods again
    return counted["calls"]


@pytest.mark.parametrize(
    ("features", "classes", "interactions", "rows", "calls", "under_deadline"),
    [
        # One call holds 2^21 result values (features × classes per row): without a deadline
        # 1,000 rows of 20 features and 2 classes are one call; under one the first call is
        # 256 rows and the next ones 4 times larger (these trees are fast: time never binds).
        (20, 2, False, 1, 1, 1),
        (20, 2, False, 256, 1, 1),
        (20, 2, False, 257, 1, 2),
        (20, 2, False, 1000, 1, 2),
        (20, 2, False, 2000, 1, 3),
        # Interaction values: 30² × 3 values per row, 776 rows per call; under a deadline the
        # first call is 256 // 30 = 8 rows (8, 32, 128, 512, then 320), after the values' calls.
        (30, 3, True, 1000, 1 + 2, 2 + 5),
    ],
)
def test_the_estimate_counts_the_tree_shap_calls_the_engine_makes(
    engines: Any,
    features: int,
    classes: int,
    interactions: bool,
    rows: int,
    calls: int,
    under_deadline: int,
) -> None:
    """TreeSHAP batches in as few shap calls as memory and the deadline allow: the estimate
    counts those calls, without a deadline (library use) and under a synchronous request's, as
    counted on the explainer while the batch runs."""
    name = f"tree-{features}-{classes}"
    _tree_model(engines, name, features, classes)
    inputs = _rows(engines, name, rows)
    descriptor = engines.loader.describe(name, 1)
    payload = {"explanation_type": "shap", "inputs": inputs, "include_interactions": interactions}
    for allowance, expected in ((None, calls), (budget.sync_allowance(), under_deadline)):
        with bounded(allowance):
            planned = engines.planner.measured(_request("batch", payload), descriptor)
            made = _shap_calls(
                engines,
                name,
                lambda: engines.shap.explain_batch(
                    name, 1, inputs, include_interactions=interactions
                ),
            )
        assert planned.model_calls == made == expected, allowance


def test_model_rows_of_lime_are_what_lime_evaluates(engines: Any) -> None:
    model = _tabular(engines, "lime", 6, 100)
    rows = _rows(engines, "lime", 3)
    payload = {"explanation_type": "lime", "inputs": rows, "num_samples": 700}
    planned = engines.planner.measured(
        _request("batch", payload), engines.loader.describe("lime", 1)
    )
    calls, counted = _counted(
        model, lambda: engines.lime.explain_batch("lime", 1, rows, num_samples=700)
    )
    assert planned.model_rows == counted == 3 * 700
    assert planned.model_calls == calls == 3


def test_model_rows_of_lime_and_shap_on_text_are_what_they_evaluate(engines: Any) -> None:
    texts = ["great fun", "a great story", "awful bore", "an awful plot"] * 5
    model = CountingTextModel(texts, [1, 1, 0, 0] * 5)
    engines.loader.add("text", model, "text_classification", 0, None)
    text = "a great plot with an awful ending and a great cast"
    descriptor = engines.loader.describe("text", 1)
    lime = {"explanation_type": "lime", "input_data": {"text": text}, "num_samples": 400}
    planned = engines.planner.measured(_request("explain", lime), descriptor)
    _, counted = _counted(
        model, lambda: engines.lime.explain_text_prediction("text", 1, text, num_samples=400)
    )
    assert planned.model_rows == counted == 400


@pytest.mark.parametrize(
    ("text", "max_evals"),
    [
        ("a great plot with an awful ending and a great cast", 5000),  # hierarchy exhausted
        ("a great plot with an awful ending and a great cast", 40),  # max_evals reached
        ("great, fun... and yet: an awful, awful bore! " * 12, 700),
        ("great, fun... and yet: an awful, awful bore! " * 12, 10_000),
        ("great", 500),  # one token: no hierarchy
    ],
)
def test_text_shap_estimate_counts_the_model_rows_and_calls_the_engine_makes(
    engines: Any, text: str, max_evals: int
) -> None:
    texts = ["great fun", "a great story", "awful bore", "an awful plot"] * 5
    model = CountingTextModel(texts, [1, 1, 0, 0] * 5)
    engines.loader.add("text", model, "text_classification", 0, None)
    shap = {"explanation_type": "shap", "input_data": {"text": text}, "max_evals": max_evals}
    planned = engines.planner.measured(
        _request("explain", shap), engines.loader.describe("text", 1)
    )
    calls, rows = _counted(
        model, lambda: engines.shap.explain_text_prediction("text", 1, text, max_evals=max_evals)
    )
    assert (planned.model_rows, planned.model_calls) == (rows, calls)
    static = engines.planner.static(_request("explain", shap), engines.loader.describe("text", 1))
    assert static.model_rows <= rows  # without the model: a balanced hierarchy, the fewest


def _partition_masks_shap_evaluates(linkage: np.ndarray) -> int:
    """The masks shap's Partition explainer evaluates to exhaust ``linkage`` (the oracle)."""
    from chalicelib.explainability.jit_cache import import_shap

    shap = import_shap()
    leaves = len(linkage) + 1
    masker = shap.maskers.Partition(np.zeros((1, leaves)), clustering=linkage)
    weights = np.linspace(0.1, 1.0, leaves)
    explainer = shap.PartitionExplainer(lambda masks: np.asarray(masks) @ weights, masker)
    explainer(np.ones((1, leaves)), max_evals=10**9, silent=True)
    return int(explainer.last_eval_count)


@settings(max_examples=25, deadline=None)
@given(
    leaves=st.integers(2, 24),
    seed=st.integers(0, 2**32 - 1),
    method=st.sampled_from(["ward", "single", "complete", "average"]),
)
def test_hierarchy_masks_are_what_shaps_partition_explainer_evaluates(
    leaves: int, seed: int, method: str
) -> None:
    from scipy.cluster.hierarchy import linkage

    points = np.random.default_rng(seed).normal(size=(leaves, 2))
    tree = linkage(points, method=method)
    counted = budget.hierarchy_masks(tree)
    assert counted == _partition_masks_shap_evaluates(tree)
    assert counted >= budget.balanced_hierarchy_masks(leaves)


def test_model_rows_of_lime_and_shap_on_images_are_what_they_evaluate(engines: Any) -> None:
    rng = np.random.default_rng(3)
    images = rng.random((40, 16, 16))
    labels = (images[:, :8].mean(axis=(1, 2)) > images[:, 8:].mean(axis=(1, 2))).astype(int)
    model = CountingClassifier(images.reshape(40, -1), labels)
    engines.loader.add("image", model, "image_classification", 0, None)
    image = images[0].tolist()
    descriptor = engines.loader.describe("image", 1)
    lime = {"explanation_type": "lime", "input_data": {"image": image}, "num_samples": 150}
    lime |= {"n_segments": 9}
    planned = engines.planner.measured(_request("explain", lime), descriptor)
    calls, counted = _counted(
        model,
        lambda: engines.lime.explain_image_prediction(
            "image", 1, image, num_samples=150, n_segments=9
        ),
    )
    assert planned.model_rows == counted - 1  # lime's rows, plus the engine's own prediction
    assert planned.model_calls == calls - 1
    shap = {"explanation_type": "shap", "input_data": {"image": image}, "max_evals": 100}
    shap |= {"n_segments": 9}
    planned = engines.planner.measured(_request("explain", shap), descriptor)
    _, counted = _counted(
        model,
        lambda: engines.shap.explain_image_prediction(
            "image", 1, image, max_evals=100, n_segments=9
        ),
    )
    assert counted - 1 <= planned.model_rows <= 100


def test_the_planner_counts_the_superpixels_the_engines_will_use(
    engines: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.explainability import planner
    from chalicelib.explainability.lime_engine import image_segments

    # The model measured as fast as the floor (no clock): the estimates differ by counting only.
    monkeypatch.setattr(
        planner, "measure_speed", lambda predict, rows, **_: budget.floor_speed(rows.shape[1])
    )

    rng = np.random.default_rng(5)
    images = rng.random((10, 32, 32))
    model = CountingClassifier(images.reshape(10, -1), np.arange(10) % 2)
    engines.loader.add("felzenszwalb", model, "image_classification", 0, None)
    payload = {"explanation_type": "lime", "input_data": {"image": images[0].tolist()}}
    payload |= {"segmentation": "felzenszwalb", "num_samples": 100}
    planned = engines.planner.measured(
        _request("explain", payload), engines.loader.describe("felzenszwalb", 1)
    )
    superpixels = len(np.unique(image_segments(images[0], "felzenszwalb", 25, 0)))
    assert superpixels > 25  # felzenszwalb ignores n_segments: the count must come from the map
    assert planned.peak_values == 100 * superpixels
    static = engines.planner.static(
        _request("explain", payload), engines.loader.describe("felzenszwalb", 1)
    )
    # Estimates, not clocks: the count-only estimate never exceeds the one from the real map.
    static_estimate, measured_estimate = static.seconds, planned.seconds
    assert static_estimate <= measured_estimate


def test_the_estimate_without_the_model_counts_no_more_than_the_model_needs(
    engines: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.explainability import planner

    # The model measured as fast as the floor, and the request's rows no slower than the
    # background (no clock): what remains to compare is the counting.
    monkeypatch.setattr(
        planner, "measure_speed", lambda predict, rows, **_: budget.floor_speed(rows.shape[1])
    )
    monkeypatch.setattr(planner, "measure_rows", lambda predict, rows, reference, **_: 0.0)
    _tabular(engines, "cheap", 20, 200)
    rows = _rows(engines, "cheap", 4)
    descriptor = engines.loader.describe("cheap", 1)
    for payload in (
        {"explanation_type": "lime", "inputs": rows, "num_samples": 2000},
        {"explanation_type": "shap", "inputs": rows, "background_sample_size": 150},
        {"explanation_type": "shap", "inputs": rows, "algorithm": "kernel"},
    ):
        static = engines.planner.static(_request("batch", payload), descriptor)
        measured = engines.planner.measured(_request("batch", payload), descriptor)
        assert not static.measured and measured.measured
        static_estimate, measured_estimate = static.seconds, measured.seconds
        assert static_estimate <= measured_estimate, payload


def test_measured_speed_separates_the_cost_of_a_call_from_the_cost_of_a_row() -> None:
    clock = [0.0]

    def predict(rows: Any) -> Any:
        clock[0] += 0.002 + 0.00002 * len(rows)  # 2 ms per call, 20 µs per row
        return rows

    speed = measure_speed(predict, np.zeros((100, 3)), repeat=2, clock=lambda: clock[0])
    assert speed.call_seconds == pytest.approx(0.002)
    assert speed.row_seconds == pytest.approx(0.00002)
    single = measure_speed(predict, np.zeros((1, 3)), clock=lambda: clock[0])
    assert single == ModelSpeed(0.0, pytest.approx(0.00202))


# --- limits, admission, deadline ----------------------------------------------------------------
def test_limits_come_from_the_environment_and_are_checked(monkeypatch: Any) -> None:
    monkeypatch.setenv("SYNAPSE_EXPLAIN_SYNC_SECONDS", "2.5")
    monkeypatch.setenv("SYNAPSE_EXPLAIN_SYNC_DEADLINE", "4")
    monkeypatch.setenv("SYNAPSE_EXPLAIN_JOB_SECONDS", "60")
    assert Limits() == Limits(2.5, 4.0, 60.0)
    for name, value in (
        ("SYNAPSE_EXPLAIN_JOB_SECONDS", "soon"),
        ("SYNAPSE_EXPLAIN_JOB_SECONDS", "-1"),
        ("SYNAPSE_EXPLAIN_JOB_SECONDS", "nan"),
        ("SYNAPSE_EXPLAIN_SYNC_DEADLINE", "1"),  # under the synchronous limit
        ("SYNAPSE_EXPLAIN_JOB_SECONDS", "2"),  # under the synchronous limit
    ):
        with monkeypatch.context() as patched:
            patched.setenv(name, value)
            with pytest.raises(ValueError, match="SYNAPSE_EXPLAIN"):
                Limits()


def _cost(seconds: float, peak: int = 10) -> Estimate:
    return Estimate(seconds, 1, 10, 5, 1e-6, 1e-4, True, peak, "kernel: 1 input(s)")


def test_the_api_decides_sync_job_or_refusal_at_the_limits() -> None:
    limits = Limits(2.0, 5.0, 30.0)
    assert decide(_cost(2.0), limits) == "sync"
    assert decide(_cost(2.0000001), limits) == "job"
    assert decide(_cost(30.0), limits) == "job"
    with pytest.raises(TooExpensive) as refused:
        decide(_cost(30.5), limits)
    assert refused.value.status == 422 and refused.value.code == "too_expensive"
    assert "about 30.5 s" in refused.value.message and "limit of 30.0 s" in refused.value.message
    assert refused.value.details["limit_seconds"] == 30.0
    assert refused.value.details["estimate"]["seconds"] == 30.5
    with pytest.raises(TooExpensive, match="array of"):
        decide(_cost(0.1, budget.MAX_VALUES + 1), limits)


def test_admission_follows_the_running_allowance() -> None:
    admit(_cost(1e9))  # no allowance: library use is not bounded
    sync = Allowance.lasting("sync", 60, 2.0, 30.0)
    with bounded(sync):
        admit(_cost(2.0))
        with pytest.raises(NeedsJob) as over:
            admit(_cost(2.5))
        assert over.value.estimate == _cost(2.5)
        with pytest.raises(TooExpensive):
            admit(_cost(31.0))
    with bounded(Allowance.lasting("job", 10, 10.0, 30.0)):
        admit(_cost(9.0))
        with pytest.raises(TooExpensive, match="the time this job has left"):
            admit(_cost(11.0))
    assert budget.current() is None


def test_a_checkpoint_after_the_deadline_stops_the_work() -> None:
    expired = Allowance.lasting("job", -0.001, 1.0, 30.0)
    with bounded(expired), pytest.raises(DeadlineExceeded) as stopped:
        checkpoint()
    assert stopped.value.code == "deadline_exceeded" and stopped.value.status == 422
    with bounded(Allowance.lasting("job", 60, 60.0, 60.0)):
        checkpoint()
    checkpoint()  # unbounded


def test_a_job_keeps_a_safety_margin_before_its_function_times_out() -> None:
    limits = Limits(10.0, 20.0, 240.0)
    assert job_allowance(None, limits).limit_seconds == 240.0
    assert job_allowance(300.0, limits).limit_seconds == 240.0
    assert job_allowance(100.0, limits).limit_seconds == pytest.approx(95.0)
    assert job_allowance(3.0, limits).limit_seconds == pytest.approx(2.7)
    assert job_allowance(0.0, limits).limit_seconds == 0.0


def test_guarded_calls_split_large_batches_and_give_the_same_outputs() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 8))
    model = LogisticRegression().fit(X, X[:, 0] > 0)
    calls: list[int] = []

    def predict(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return model.predict_proba(rows)

    wrapped = guarded(predict, chunk_values=8 * 700)
    np.testing.assert_array_equal(wrapped(X), model.predict_proba(X))
    assert calls == [700] * 7 + [100]
    calls.clear()
    assert wrapped(X[:10]).shape == (10, 2) and calls == [10]
    texts = ["word " * 50] * 30
    counted: list[int] = []
    wrapped_text = guarded(
        lambda batch: counted.append(len(batch)) or np.ones((len(batch), 2)), 2500
    )
    assert wrapped_text(texts).shape == (30, 2) and counted == [10, 10, 10]
    with bounded(Allowance.lasting("job", -1, 1.0, 1.0)), pytest.raises(DeadlineExceeded):
        wrapped(X)


def test_the_masking_image_explainer_builds_the_same_neighbourhood_as_lime() -> None:
    from lime.lime_image import LimeImageExplainer

    from chalicelib.explainability.lime_engine import image_segments, masking_image_explainer

    rng = np.random.default_rng(11)
    for image in (np.repeat(rng.random((24, 20))[..., None], 3, axis=2), rng.random((16, 16, 3))):
        segments = image_segments(image, "slic", 12, 0)
        fudged = np.full_like(image, 0.25)

        def classify(batch: np.ndarray) -> np.ndarray:
            mean = batch.reshape(len(batch), -1).mean(axis=1)
            return np.stack([mean, 1 - mean], axis=1)

        ours_class = masking_image_explainer(LimeImageExplainer)
        ours = ours_class(random_state=4).data_labels(image, fudged, segments, classify, 60, 7)
        theirs = LimeImageExplainer(random_state=4).data_labels(
            image, fudged, segments, classify, 60, 7
        )
        np.testing.assert_array_equal(ours[0], theirs[0])
        np.testing.assert_array_equal(ours[1], theirs[1])
    negative = segments - 1  # lime's loop never masks label -1; the fallback is lime's code
    ours = masking_image_explainer(LimeImageExplainer)(random_state=1).data_labels(
        image, fudged, negative, classify, 20, 5
    )
    theirs = LimeImageExplainer(random_state=1).data_labels(
        image, fudged, negative, classify, 20, 5
    )
    np.testing.assert_array_equal(ours[1], theirs[1])


def test_tree_shap_in_chunks_equals_one_call() -> None:
    import shap
    from sklearn.ensemble import RandomForestClassifier

    from chalicelib.explainability.shap_engine import in_row_chunks

    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 5))
    forest = RandomForestClassifier(20, random_state=0).fit(X, X[:, 0] + X[:, 3] > 0)
    explainer = shap.TreeExplainer(forest, feature_perturbation="tree_path_dependent")
    whole = explainer.shap_values(X, check_additivity=False)
    parts = in_row_chunks(lambda part: explainer.shap_values(part, check_additivity=False), X, 64)
    np.testing.assert_allclose(np.asarray(parts), np.asarray(whole), rtol=0, atol=1e-12)
    pieces = in_row_chunks(lambda part: [part[:, :2], part[:, 2:]], X, 100)
    np.testing.assert_array_equal(pieces[0], X[:, :2])
    np.testing.assert_array_equal(pieces[1], X[:, 2:])


API_GATEWAY_INTEGRATION_LIMIT = 29.0  # API Gateway's maximum integration timeout (configuration)


def test_the_deployed_limits_fit_api_gateway_and_the_explainer_timeout() -> None:
    import json
    from pathlib import Path

    from infra.template import _parameters

    config = json.loads((Path(__file__).parents[2] / ".chalice" / "config.json").read_text())
    for stage in ("dev", "prod"):
        env = config["stages"][stage]["environment_variables"]
        limits = Limits(
            float(env["SYNAPSE_EXPLAIN_SYNC_SECONDS"]),
            float(env["SYNAPSE_EXPLAIN_SYNC_DEADLINE"]),
            float(env["SYNAPSE_EXPLAIN_JOB_SECONDS"]),
        )
        # Configuration, not a measured time: API Gateway gives up on an integration after 29 s,
        # so the configured synchronous deadline hands the work to a job before that.
        configured_deadline = limits.sync_deadline_seconds
        assert configured_deadline < API_GATEWAY_INTEGRATION_LIMIT
        assert configured_deadline < config["stages"][stage]["lambda_timeout"]
        # A job's whole budget fits the explanation function's default timeout with the margin.
        timeout = _parameters(env)["ExplainerTimeout"]["Default"]
        configured_job_budget = limits.job_seconds + budget.SAFETY_SECONDS
        assert configured_job_budget <= timeout
        assert job_allowance(float(timeout), limits).limit_seconds == limits.job_seconds


def test_an_allowance_crosses_the_lambda_boundary_as_plain_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    monkeypatch.setattr(budget.time, "monotonic", lambda: 1_000.0)  # a clock that stands still
    waiting = Allowance("job", float("inf"), 240.0, 240.0)
    sent = json.loads(json.dumps(waiting.to_dict(), allow_nan=False))
    assert sent["seconds_left"] is None and Allowance.from_dict(sent).deadline == float("inf")
    sync = json.loads(json.dumps(Allowance.lasting("sync", 20.0, 10.0, 240.0).to_dict()))
    assert sync["seconds_left"] == 20.0  # what is left when it is sent
    received = Allowance.from_dict(sync)
    assert (received.mode, received.limit_seconds, received.job_seconds) == ("sync", 10.0, 240.0)


def _request(operation: str, payload: dict[str, Any]) -> ExplanationQuery:
    """The typed request of a payload (the planner never reads the model id)."""
    return parse_request(operation, {"model_id": "planned", **payload})


def test_the_first_text_shap_of_a_process_counts_loading_when_numba_cached_it(
    engines: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from chalicelib.explainability import jit_cache, planner, shap_media

    texts = ["great fun", "a great story", "awful bore", "an awful plot"] * 5
    model = CountingTextModel(texts, [1, 1, 0, 0] * 5)
    engines.loader.add("text", model, "text_classification", 0, None)
    descriptor = engines.loader.describe("text", 1)
    request = _request(
        "explain",
        {"explanation_type": "shap", "input_data": {"text": "a great cast"}, "max_evals": 50},
    )
    # No clock: the three estimates differ only by what the first call in a process adds.
    monkeypatch.setattr(planner, "measure_speed", lambda *_, **__: ModelSpeed(0.0, 0.0))
    monkeypatch.setattr(shap_media, "partition_compiled", lambda: True)
    warm = engines.planner.measured(request, descriptor).seconds
    monkeypatch.setattr(shap_media, "partition_compiled", lambda: False)
    monkeypatch.setattr(jit_cache, "cache_directory", lambda: str(tmp_path))
    compiling = engines.planner.measured(request, descriptor).seconds
    cached = tmp_path / "explainability_0"
    cached.mkdir()
    (cached / "jit_kernels.lower_credit_rows-82.py311.nbi").write_bytes(b"")
    loading = engines.planner.measured(request, descriptor).seconds
    assert compiling == pytest.approx(warm + budget.RATES.partition_first_call)
    assert loading == pytest.approx(warm + budget.RATES.partition_cached_call)


LONG_TEXT = "great, fun... and yet: an awful, awful bore! " * 12  # 96 tokens


def _long_text_shap(engines: Any, monkeypatch: pytest.MonkeyPatch, max_evals: int) -> Any:
    """A text model, shap stubbed by an object without maskers (building shap's Text masker
    fails) and no clock; the planner's request for text SHAP of :data:`LONG_TEXT`."""
    from types import SimpleNamespace

    from chalicelib.explainability import jit_cache, planner

    texts = ["great fun", "a great story", "awful bore", "an awful plot"] * 5
    engines.loader.add("text", CountingTextModel(texts, [1, 1, 0, 0] * 5), "text_classification",
                       0, None)  # fmt: skip
    monkeypatch.setattr(jit_cache, "import_shap", lambda: SimpleNamespace())
    monkeypatch.setattr(planner, "measure_speed", lambda *_, **__: ModelSpeed(0.0, 0.0))
    payload = {"explanation_type": "shap", "input_data": {"text": LONG_TEXT}}
    return _request("explain", {**payload, "max_evals": max_evals})


def test_a_text_too_long_to_exhaust_within_max_evals_is_counted_at_max_evals_without_shap(
    engines: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a balanced hierarchy of 95 tokens (one fewer, as shap's tokenizer may see) needs
    far more than 100 masks, so shap stops at max_evals: the planner counts max_evals - 2 masks
    without tokenizing or clustering the text (the stub would fail)."""
    from chalicelib.explainability import shap_media

    monkeypatch.setattr(shap_media, "partition_compiled", lambda: True)
    request = _long_text_shap(engines, monkeypatch, 100)
    assert text_counts(LONG_TEXT)[0] == 96 and budget.balanced_hierarchy_masks(95) > 98

    planned = engines.planner.measured(request, engines.loader.describe("text", 1))
    masks = 98
    assert planned.model_rows == masks + budget.TEXT_EXTRA_CALLS
    assert planned.model_calls == (
        1 + -(-(masks - 2) // budget.TEXT_MASKS_PER_CALL) + budget.TEXT_EXTRA_CALLS
    )


def test_the_first_text_shap_of_a_process_without_a_numba_cache_directory_counts_compiling(
    engines: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """No cache directory (numba not loaded, ``NUMBA_CACHE_DIR`` unset) or one that does not
    exist: nothing can be loaded, so the first Partition explanation compiles."""
    from chalicelib.explainability import jit_cache, shap_media

    request = _long_text_shap(engines, monkeypatch, 100)
    descriptor = engines.loader.describe("text", 1)
    monkeypatch.setattr(shap_media, "partition_compiled", lambda: True)
    warm = engines.planner.measured(request, descriptor).seconds
    monkeypatch.setattr(shap_media, "partition_compiled", lambda: False)
    for directory in ("", str(tmp_path / "missing")):
        monkeypatch.setattr(jit_cache, "cache_directory", lambda found=directory: found)
        first = engines.planner.measured(request, descriptor).seconds
        assert first == pytest.approx(warm + budget.RATES.partition_first_call), directory
