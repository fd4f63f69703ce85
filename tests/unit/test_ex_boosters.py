"""XGBoost and LightGBM models (issue 16): registered in their own formats, never pickle, checked
without their libraries, explained by TreeSHAP exactly as shap explains the booster itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from typing import Any

import numpy as np
import pytest

from chalicelib.core.errors import UnprocessableEntity
from chalicelib.registry.boosters import check_booster, read_ubjson
from chalicelib.registry.errors import UnsafeArtifactError
from tests.helpers.explain import MemoryContext, memory_context, tabular_data

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")

NAMES = ["f0", "f1", "f2", "f3"]


@pytest.fixture
def ctx() -> MemoryContext:
    """The registry and service over in-memory stores."""
    return memory_context()


def _data() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    X, _ = tabular_data(300, 4)
    labels = {
        "binary": (X[:, 0] + X[:, 1] > 0).astype(int),
        "multiclass": np.digitize(X[:, 0] - X[:, 2], [-0.5, 0.5]),
        "regression": X[:, 0] * X[:, 1] + X[:, 3],
    }
    return X, labels


XGB_OBJECTIVES = {
    "binary": {"objective": "binary:logistic"},
    "multiclass": {"objective": "multi:softprob", "num_class": 3},
    "regression": {"objective": "reg:squarederror"},
}
LGB_OBJECTIVES = {
    "binary": {"objective": "binary"},
    "multiclass": {"objective": "multiclass", "num_class": 3},
    "regression": {"objective": "regression"},
}


def xgb_file(kind: str, suffix: str = "json", rounds: int = 6) -> tuple[Any, bytes]:
    """A trained XGBoost booster and its saved bytes (``json`` or ``ubj``)."""
    X, labels = _data()
    params = {**XGB_OBJECTIVES[kind], "max_depth": 3, "seed": 0}
    booster = xgboost.train(params, xgboost.DMatrix(X, label=labels[kind]), num_boost_round=rounds)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"model.{suffix}")
        booster.save_model(path)
        with open(path, "rb") as handle:
            return booster, handle.read()


def lgb_file(kind: str, rounds: int = 6) -> tuple[Any, bytes]:
    """A trained LightGBM booster and its text model."""
    X, labels = _data()
    params = {**LGB_OBJECTIVES[kind], "num_leaves": 8, "verbose": -1, "seed": 0}
    booster = lightgbm.train(params, lightgbm.Dataset(X, label=labels[kind]), rounds)
    return booster, booster.model_to_string().encode()


def register_booster(reg: Any, fmt: str, data: bytes, kind: str, **extra: Any) -> tuple[str, int]:
    from chalicelib.registry.service import VersionSpec

    model_id = reg.create_model(f"booster-{uuid.uuid4().hex[:8]}").model_id
    spec = VersionSpec(
        format=fmt,
        task="regression" if kind == "regression" else "classification",
        feature_names=tuple(NAMES),
        **extra,
    )
    return model_id, reg.register_version(model_id, spec, artifact=data).version


CASES = [
    (library, fmt, kind)
    for library, fmt in (
        ("xgboost", "xgboost_json"),
        ("xgboost", "xgboost_ubj"),
        ("lightgbm", "lightgbm_text"),
    )
    for kind in ("binary", "multiclass", "regression")
]


@pytest.mark.parametrize(("library", "fmt", "kind"), CASES)
def test_tree_shap_through_the_service_equals_shap_on_the_booster(
    ctx: Any, library: str, fmt: str, kind: str
) -> None:
    import shap

    if library == "xgboost":
        booster, data = xgb_file(kind, "json" if fmt == "xgboost_json" else "ubj")
    else:
        booster, data = lgb_file(kind)
    model_id, version = register_booster(ctx.reg, fmt, data, kind)
    X, _ = _data()
    rows = [dict(zip(NAMES, X[i].tolist(), strict=True)) for i in range(5)]
    oracle = shap.TreeExplainer(booster, feature_perturbation="tree_path_dependent")
    expected = np.asarray(oracle.shap_values(X[:5]))
    margin = (
        booster.predict(xgboost.DMatrix(X[:5]), output_margin=True)
        if library == "xgboost"
        else booster.predict(X[:5], raw_score=True)
    )
    classes = {"binary": [1], "multiclass": [0, 1, 2], "regression": [None]}[kind]
    for k in classes:
        options = {} if k is None else {"class_name": str(k)}
        batch = ctx.svc.shap.explain_batch(model_id, version, rows, **options)
        for i, explanation in enumerate(batch):
            assert explanation.algorithm == "tree"
            want = expected[i] if expected.ndim == 2 else expected[i, :, k]
            got = [explanation.contribution_map()[name] for name in NAMES]
            assert got == want.tolist()  # difference 0
            actual = margin[i] if np.ndim(margin) == 1 else margin[i, k]
            assert explanation.actual_prediction == pytest.approx(float(actual), abs=1e-6)
            assert explanation.additivity_error < 1e-5  # the libraries add in float32
    space = {"binary": "log_odds", "multiclass": "margin", "regression": "raw"}[kind]
    assert batch[0].output_space == space


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_xgboost_interaction_values_equal_shaps(ctx: Any, kind: str) -> None:
    import shap

    booster, data = xgb_file(kind)
    model_id, version = register_booster(ctx.reg, "xgboost_json", data, kind)
    X, _ = _data()
    row = dict(zip(NAMES, X[2].tolist(), strict=True))
    explanation = ctx.svc.shap.explain_prediction(
        model_id, version, row, include_interactions=True, class_name="1"
    )
    oracle = shap.TreeExplainer(booster, feature_perturbation="tree_path_dependent")
    expected = np.asarray(oracle.shap_interaction_values(X[2:3]))[0]
    if expected.ndim == 3:
        expected = expected[:, :, 1]
    np.testing.assert_array_equal(np.asarray(explanation.interactions["matrix"]), expected)


@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_lightgbm_interaction_values_equal_shaps(ctx: Any, kind: str) -> None:
    import shap

    booster, data = lgb_file(kind)
    model_id, version = register_booster(ctx.reg, "lightgbm_text", data, kind)
    X, _ = _data()
    row = dict(zip(NAMES, X[2].tolist(), strict=True))
    options = {"class_name": "1"} if kind == "binary" else {}
    explanation = ctx.svc.shap.explain_prediction(
        model_id, version, row, include_interactions=True, **options
    )
    oracle = shap.TreeExplainer(booster, feature_perturbation="tree_path_dependent")
    expected = np.asarray(oracle.shap_interaction_values(X[2:3]))[0]
    np.testing.assert_array_equal(np.asarray(explanation.interactions["matrix"]), expected)


def test_xgboost_data_is_read_by_one_thread_on_every_path(
    ctx: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DMatrix left at its default starts an OpenMP team whose idle worker spins for a core
    after each call (on a busy machine, ~30 ms more per single-row request in the bench): the
    booster is loaded with one thread, and so is every DMatrix the service or shap builds."""
    threads: list[Any] = []

    class Recorded(xgboost.core.DMatrix):  # type: ignore[misc]
        def __init__(self, data: Any, *args: Any, **kwargs: Any) -> None:
            threads.append(kwargs.get("nthread"))
            super().__init__(data, *args, **kwargs)

    _, data = xgb_file("binary")
    X, _ = _data()
    model_id, version = register_booster(
        ctx.reg, "xgboost_json", data, "binary", background_sample=tuple(map(tuple, X[:30]))
    )
    rows = [dict(zip(NAMES, X[i].tolist(), strict=True)) for i in range(3)]
    monkeypatch.setattr(xgboost, "DMatrix", Recorded)
    ctx.svc.shap.explain_prediction(model_id, version, rows[0], include_interactions=True)
    ctx.svc.shap.explain_batch(model_id, version, rows[1:])
    ctx.svc.lime.explain_prediction(model_id, version, rows[0], num_samples=50)
    # Interaction values, the batch's values and LIME's predictions each build one at least.
    assert len(threads) >= 3 and set(threads) == {1}, threads


def test_lightgbm_predicts_on_one_thread_on_every_path(
    ctx: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As XGBoost's: LightGBM's predictions (shap's pred_contrib, ours) at their default start
    an OpenMP team; the service asks for one thread on each."""
    threads: list[Any] = []
    real = lightgbm.Booster.predict

    def recorded(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        threads.append(kwargs.get("num_threads"))
        return real(self, data, *args, **kwargs)

    _, data = lgb_file("binary")
    X, _ = _data()
    model_id, version = register_booster(
        ctx.reg, "lightgbm_text", data, "binary", background_sample=tuple(map(tuple, X[:30]))
    )
    rows = [dict(zip(NAMES, X[i].tolist(), strict=True)) for i in range(3)]
    monkeypatch.setattr(lightgbm.Booster, "predict", recorded)
    ctx.svc.shap.explain_prediction(model_id, version, rows[0], include_interactions=True)
    ctx.svc.shap.explain_batch(model_id, version, rows[1:])
    ctx.svc.lime.explain_prediction(model_id, version, rows[0], num_samples=50)
    assert len(threads) >= 3 and set(threads) == {1}, threads


def test_lime_and_kernel_shap_explain_boosters_too(ctx: Any) -> None:
    booster, data = lgb_file("binary")
    X, _ = _data()
    model_id, version = register_booster(
        ctx.reg, "lightgbm_text", data, "binary", background_sample=tuple(map(tuple, X[:30]))
    )
    row = dict(zip(NAMES, X[4].tolist(), strict=True))
    lime = ctx.svc.lime.explain_prediction(model_id, version, row, num_samples=300)
    proba = booster.predict(X[4:5])[0]
    assert lime.actual_prediction == pytest.approx(max(proba, 1 - proba))
    kernel = ctx.svc.shap.explain_prediction(model_id, version, row, algorithm="exact")
    assert kernel.output_space == "probability" and kernel.additivity_error < 1e-9


def _one_class_lightgbm(booster: Any, k: int, n_classes: int) -> Any:
    """The oracle's model: a single-output LightGBM booster holding only class ``k``'s trees
    (tree ``i`` of a multiclass model adds to class ``i % n_classes``), rebuilt from the model
    text by LightGBM itself."""
    import re

    head, rest = booster.model_to_string().split("\nTree=0\n", 1)
    body, tail = rest.split("\nend of trees\n", 1)
    blocks = [b for b in re.split(r"\nTree=\d+\n", "\n" + body) if b.strip()]
    mine = [b.strip("\n") for i, b in enumerate(blocks) if i % n_classes == k]
    for pattern, value in (
        (r"\nnum_class=\d+", "\nnum_class=1"),
        (r"\nnum_tree_per_iteration=\d+", "\nnum_tree_per_iteration=1"),
        (r"\nobjective=[^\n]*", "\nobjective=regression"),
        (r"\ntree_sizes=[^\n]*", ""),
    ):
        head = re.sub(pattern, value, head)
    trees = "".join(f"\nTree={i}\n{block}\n" for i, block in enumerate(mine))
    return lightgbm.Booster(model_str=f"{head}{trees}\nend of trees\n{tail}")


def test_multiclass_lightgbm_interaction_values_equal_shaps_on_each_class(ctx: Any) -> None:
    """shap computes a multiclass LightGBM model's interaction values as if it had one output
    (all classes' trees summed); ours are per class: each equals, to the last bit, shap's
    TreeExplainer on a LightGBM model of that class's trees alone, and each row of the matrix
    adds up to LightGBM's own SHAP values (``pred_contrib``) for the class."""
    import shap

    booster, data = lgb_file("multiclass")
    model_id, version = register_booster(ctx.reg, "lightgbm_text", data, "multiclass")
    X, _ = _data()
    rows = [dict(zip(NAMES, X[i].tolist(), strict=True)) for i in range(6)]
    contributions = booster.predict(X[:6], pred_contrib=True).reshape(6, 3, len(NAMES) + 1)
    for k in range(3):
        single = shap.TreeExplainer(
            _one_class_lightgbm(booster, k, 3), feature_perturbation="tree_path_dependent"
        )
        assert (
            single.model.predict(X[:6]).tolist()
            == booster.predict(X[:6], raw_score=True)[:, k].tolist()
        )
        expected = np.asarray(single.shap_interaction_values(X[:6]))
        batch = ctx.svc.shap.explain_batch(
            model_id, version, rows, class_name=str(k), include_interactions=True
        )
        for i, explanation in enumerate(batch):
            matrix = np.asarray(explanation.interactions["matrix"])
            np.testing.assert_array_equal(matrix, expected[i])  # difference 0
            np.testing.assert_allclose(matrix.sum(axis=1), contributions[i, k, :-1], atol=1e-12)
            got = [explanation.contribution_map()[name] for name in NAMES]
            np.testing.assert_allclose(got, contributions[i, k, :-1], atol=1e-12)


def _xgb_document() -> dict[str, Any]:
    return json.loads(xgb_file("binary")[1])


def _forged(change: Any) -> bytes:
    document = _xgb_document()
    change(document["learner"]["gradient_booster"]["model"]["trees"][0], document)
    return json.dumps(document).encode()


FORGED_XGBOOST = {
    "a child before its parent": lambda t, d: t["left_children"].__setitem__(0, 0),
    "a child beyond the nodes": lambda t, d: t["right_children"].__setitem__(0, 10_000),
    "a feature the model does not read": lambda t, d: t["split_indices"].__setitem__(0, 99),
    "categorical splits": lambda t, d: t["split_type"].__setitem__(0, 1),
    "arrays of different lengths": lambda t, d: t["split_conditions"].pop(),
    "a linear booster": lambda t, d: d["learner"]["gradient_booster"].__setitem__("name", "x"),
    "an objective we do not explain": lambda t, d: d["learner"]["objective"].__setitem__(
        "name", "rank:pairwise"
    ),
}


@pytest.mark.parametrize("name", sorted(FORGED_XGBOOST))
def test_forged_xgboost_files_are_refused_before_anything_loads_them(name: str) -> None:
    with pytest.raises(UnsafeArtifactError):
        check_booster("xgboost_json", _forged(FORGED_XGBOOST[name]), 4, 1 << 28)


def test_forged_lightgbm_files_and_broken_ubjson_are_refused() -> None:
    _, text = lgb_file("binary")
    good = text.decode()
    forged = {
        "a child before its parent": good.replace("left_child=", "left_child=0 ", 1),
        "categorical splits": good.replace("num_cat=0", "num_cat=1", 1),
        "a feature beyond max_feature_idx": good.replace("max_feature_idx=3", "max_feature_idx=0"),
        "not a model": "hello",
    }
    for name, forged_text in forged.items():
        with pytest.raises(UnsafeArtifactError):
            check_booster("lightgbm_text", forged_text.encode(), None, 1 << 28)
            pytest.fail(name)
    _, ubj = xgb_file("binary", "ubj")
    for broken in (ubj[:-10], ubj + b"Z", b"[" * 100):
        with pytest.raises(UnsafeArtifactError):
            read_ubjson(broken)
    assert read_ubjson(ubj)["learner"]["objective"]["name"] == "binary:logistic"


def test_registration_checks_format_task_features_and_size(ctx: Any) -> None:
    _, data = xgb_file("binary")
    with pytest.raises(UnprocessableEntity, match="unsafe_format|pickle"):
        register_booster(ctx.reg, "pickle", data, "binary")
    with pytest.raises(UnprocessableEntity, match="is classification, not regression"):
        register_booster(ctx.reg, "xgboost_json", data, "regression")
    with pytest.raises(UnprocessableEntity, match="predicts 2 classes"):
        register_booster(ctx.reg, "xgboost_json", data, "binary", class_names=("a", "b", "c"))
    with pytest.raises(UnsafeArtifactError, match="reads 4 features"):
        check_booster("xgboost_json", data, 5, 1 << 28)
    with pytest.raises(UnsafeArtifactError, match="over the cap"):
        check_booster("xgboost_json", data, 4, 100)


def test_checking_a_booster_file_imports_neither_library() -> None:
    _, data = xgb_file("binary", "ubj")
    _, text = lgb_file("multiclass")
    with tempfile.TemporaryDirectory() as folder:
        paths = [os.path.join(folder, "m.ubj"), os.path.join(folder, "m.txt")]
        for path, content in zip(paths, (data, text), strict=True):
            with open(path, "wb") as handle:
                handle.write(content)
        script = (
            "import sys\n"
            "from chalicelib.registry.boosters import check_booster\n"
            f"check_booster('xgboost_ubj', open({paths[0]!r}, 'rb').read(), 4, 1 << 28)\n"
            f"check_booster('lightgbm_text', open({paths[1]!r}, 'rb').read(), 4, 1 << 28)\n"
            "print(sorted(m for m in ('xgboost', 'lightgbm', 'sklearn') if m in sys.modules))\n"
        )
        found = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
    assert found.stdout.strip() == "[]"


# What two computations of one explanation do not share: its id, time and duration.
UNSHARED = {"explanation_id": "", "created_at": "", "computation_time_ms": 0.0}


@pytest.mark.parametrize(
    ("library", "fmt"), [("xgboost", "xgboost_ubj"), ("lightgbm", "lightgbm_text")]
)
def test_a_single_row_of_a_binary_booster_equals_shap_and_its_batch_row_for_either_class(
    ctx: Any, library: str, fmt: str
) -> None:
    """A single request takes only its class's numbers (class 1 the booster's own, class 0
    their negation) and builds its margin's two columns from the number: the same values,
    base, output, error, order and top features as the batch's row, and shap's values."""
    import shap

    booster, data = xgb_file("binary", "ubj") if library == "xgboost" else lgb_file("binary")
    model_id, version = register_booster(ctx.reg, fmt, data, "binary")
    ctx.svc.shap.cache = None  # each single request computed, not answered from the batch
    X, _ = _data()
    X[3, 1] = np.nan  # a missing value: the trees' default side
    rows = [dict(zip(NAMES, X[i].tolist(), strict=True)) for i in range(8)]
    rows[3]["f1"] = 0.0  # the service refuses NaN inputs; the oracle row below is this one
    X[3, 1] = 0.0
    oracle = shap.TreeExplainer(booster, feature_perturbation="tree_path_dependent")
    expected = np.asarray(oracle.shap_values(X[:8]), dtype=float)
    predicted = []
    for options in ({}, {"class_name": "0"}, {"class_name": "1"}):
        batch = ctx.svc.shap.explain_batch(model_id, version, rows, **options)
        for i, row in enumerate(rows):
            single = ctx.svc.shap.explain_prediction(model_id, version, row, **options)
            pair = (single, batch[i])
            first, second = ({**e.to_dict(), **UNSHARED} for e in pair)
            assert first == second
            sign = 1.0 if single.explained_class == "1" else -1.0
            found = [single.contribution_map()[name] for name in NAMES]
            assert found == (sign * expected[i]).tolist()
            predicted.append(single.explained_class)
    # The predicted class is each of the two for some rows: both branches ran unasked too.
    assert set(predicted[:8]) == {"0", "1"}
