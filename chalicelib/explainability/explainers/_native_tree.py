"""TreeSHAP of scikit-learn's forests and decision trees through shap's C kernel, without
importing shap.

``import shap`` costs about a second of an explainer's cold start (numba, pandas, every
explainer); for the trees whose conversion is a copy of their arrays (random forests, extra
trees and decision trees, classifiers and regressors) the first answer needs only shap's
compiled TreeSHAP, ``shap._cext``, which :func:`load_cext` loads from shap's installed files
without running ``shap/__init__``. The arrays are laid out as ``shap.TreeExplainer`` lays them
out for these models (its ``TreeEnsemble`` and ``SingleTree`` with ``tree_path_dependent``
perturbation and no background) and the same C functions compute from them, so values, base
values, interaction values and the trees' outputs are shap's to the bit
(``tests/unit/test_ex_native_tree.py`` compares them with ``shap.TreeExplainer``). Every other
tree model goes to ``shap.TreeExplainer`` itself.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

# scikit-learn's tree models that shap reads as copies of their arrays: the name → whether the
# leaves hold class counts to normalize into probabilities (shap's ``normalize=True``).
NATIVE_TREES = {
    "RandomForestClassifier": True,
    "ExtraTreesClassifier": True,
    "DecisionTreeClassifier": True,
    "ExtraTreeClassifier": True,
    "RandomForestRegressor": False,
    "ExtraTreesRegressor": False,
    "DecisionTreeRegressor": False,
    "ExtraTreeRegressor": False,
}
TREE_PATH_DEPENDENT = 1  # shap's feature_perturbation_codes["tree_path_dependent"]
IDENTITY = 0  # shap's output_transform_codes["identity"]
_lock = threading.Lock()


def supports(model: Any) -> bool:
    """Whether ``model`` is explained here rather than by ``shap.TreeExplainer``."""
    name = type(model).__name__
    return name in NATIVE_TREES and hasattr(model, "estimators_" if _forest(model) else "tree_")


def _forest(model: Any) -> bool:
    return type(model).__name__.startswith(("RandomForest", "ExtraTrees"))


def load_cext() -> ModuleType:
    """``shap._cext`` (shap's compiled TreeSHAP), loaded without importing the ``shap`` package.

    It is registered as ``shap._cext``, so a later ``import shap`` uses this same module.

    Raises:
        ImportError: shap or its compiled extension is not installed.
    """
    found = sys.modules.get("shap._cext")
    if found is not None:
        return found
    with _lock:
        found = sys.modules.get("shap._cext")
        if found is not None:
            return found
        package = importlib.util.find_spec("shap")  # locates shap, does not run its __init__
        folders = list(package.submodule_search_locations or []) if package else []
        for folder in folders:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = Path(folder) / f"_cext{suffix}"
                if path.is_file():
                    return _load_extension("shap._cext", path)
        raise ImportError("shap's compiled TreeSHAP (shap._cext) is not installed")


def _load_extension(name: str, path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules[name] = module
    return module


class NativeEnsemble:
    """A tree model's nodes as shap's dense arrays (one row per tree, ``-1`` past its nodes).

    Args:
        model: A fitted model of :data:`NATIVE_TREES`.
    """

    def __init__(self, model: Any) -> None:
        cext = load_cext()
        normalize = NATIVE_TREES[type(model).__name__]
        estimators = list(model.estimators_) if _forest(model) else [model]
        scaling = 1.0 / len(estimators) if _forest(model) else 1.0
        trees = [_tree_arrays(cext, e.tree_, normalize, scaling) for e in estimators]
        self.internal_dtype = estimators[0].tree_.value.dtype.type
        self.input_dtype = np.float32  # scikit-learn compares float32 inputs
        self.num_outputs = int(trees[0]["values"].shape[1])
        nodes = max(len(tree["values"]) for tree in trees)
        shape = (len(trees), nodes)
        self.children_left = _stacked(trees, "children_left", shape, -1, np.int32)
        self.children_right = _stacked(trees, "children_right", shape, -1, np.int32)
        self.children_default = _stacked(trees, "children_default", shape, -1, np.int32)
        self.features = _stacked(trees, "features", shape, -1, np.int32)
        self.thresholds = _stacked(trees, "thresholds", shape, 0, self.internal_dtype)
        self.threshold_types = np.zeros(shape, dtype=np.int32)
        self.values = _stacked(trees, "values", (*shape, self.num_outputs), 0, self.internal_dtype)
        self.node_sample_weight = _stacked(trees, "weights", shape, 0, self.internal_dtype)
        self.max_depth = max(int(tree["depth"]) for tree in trees)
        self.base_offset = np.zeros(self.num_outputs, dtype=self.internal_dtype)
        predict = dense_predictor(self)
        assert predict is not None  # the raw output of trees that are not XGBoost's
        self._predict = predict

    def inputs(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """``X`` as the C code reads it (shap's input dtype) and its missing-value mask."""
        return as_rows(X, self.input_dtype)

    def predict(self, X: Any) -> np.ndarray:
        """The trees' raw output (``TreeEnsemble.predict``): one value per row, or one column
        per output."""
        return self._predict(X)

    def phi(self, X: Any, interactions: bool) -> np.ndarray:
        """shap's ``phi``: per row, each feature's value (or pair's) and the bias last."""
        X, missing = self.inputs(X)
        width = X.shape[1] + 1
        shape = (X.shape[0], width, width) if interactions else (X.shape[0], width)
        phi = np.zeros((*shape, self.num_outputs))
        load_cext().dense_tree_shap(
            *self._nodes()[:6],
            self.values,
            self.node_sample_weight,
            self.max_depth,
            X,
            missing,
            None,
            None,
            None,
            len(self.values),
            self.base_offset,
            phi,
            TREE_PATH_DEPENDENT,
            IDENTITY,
            interactions,
        )
        return phi

    def _nodes(self) -> tuple[np.ndarray, ...]:
        return (
            self.children_left,
            self.children_right,
            self.children_default,
            self.features,
            self.thresholds,
            self.threshold_types,
            self.values,
        )


def as_rows(X: Any, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """``X`` as shap's C code reads it (rows of ``dtype``) and its missing-value mask."""
    X = np.asarray(X)
    if X.ndim == 1:
        X = X.reshape(1, -1)
    if X.dtype != dtype:
        X = X.astype(dtype)
    return X, np.isnan(X)  # a bool array


def dense_predictor(ensemble: Any) -> Callable[[Any], np.ndarray] | None:
    """``ensemble.predict`` for the trees' raw output, its arrays bound to shap's C function
    once: each call converts the rows, masks the missing values and makes that one call, as
    ``TreeEnsemble.predict`` does (the same numbers; a single row skips its Python checks).

    Args:
        ensemble: :class:`NativeEnsemble` or a ``shap.TreeExplainer``'s ``TreeEnsemble``.

    Returns:
        The function, or ``None`` where shap's own ``predict`` must answer (an output other
        than the raw one, or an XGBoost model shap does not predict: boosted random forests).
    """
    if getattr(ensemble, "model_output", "raw") != "raw":
        return None
    xgboost = getattr(ensemble, "model_type", None) == "xgboost"
    if xgboost and ensemble.num_stacked_models != ensemble.num_outputs:
        return None  # shap refuses to predict it (boosted random forests)
    trees = len(ensemble.values)
    limit = getattr(ensemble, "tree_limit", None)
    if limit is None or not 0 <= limit <= trees:
        limit = trees  # shap's default: every tree
    call = partial(
        load_cext().dense_tree_predict,
        ensemble.children_left,
        ensemble.children_right,
        ensemble.children_default,
        ensemble.features,
        ensemble.thresholds,
        ensemble.threshold_types,
        ensemble.values,
        ensemble.max_depth,
        limit,
        ensemble.base_offset,
        IDENTITY,
    )
    dtype, outputs = ensemble.input_dtype, int(ensemble.num_outputs)

    def predict(X: Any) -> np.ndarray:
        X, missing = as_rows(X, dtype)
        out = np.zeros((X.shape[0], outputs))
        call(X, missing, None, out)
        return out.reshape(-1) if outputs == 1 else out

    return predict


class NativeTreeExplainer:
    """What the engine uses of ``shap.TreeExplainer`` (``tree_path_dependent``, no background),
    computed by shap's C kernel on :class:`NativeEnsemble`'s arrays.

    Args:
        model: A fitted model of :data:`NATIVE_TREES`.
    """

    def __init__(self, model: Any) -> None:
        self.model = NativeEnsemble(model)
        expected = self.model.values[:, 0].sum(0)
        if expected.size == 1:
            expected = expected[0]
        self.expected_value: Any = expected + self.model.base_offset

    def shap_values(self, X: Any, check_additivity: bool = False) -> np.ndarray:
        """SHAP values: (rows, features) for one output, (rows, features, outputs) otherwise.
        ``check_additivity`` is accepted and ignored (the engine reports its own check)."""
        phi = self.model.phi(X, interactions=False)
        if self.model.num_outputs == 1:
            return phi[:, :-1, 0]
        return np.stack([phi[:, :-1, i] for i in range(self.model.num_outputs)], axis=-1)

    def shap_interaction_values(self, X: Any) -> np.ndarray:
        """SHAP interaction values: (rows, features, features[, outputs])."""
        phi = self.model.phi(X, interactions=True)
        if self.model.num_outputs == 1:
            return phi[:, :-1, :-1, 0]
        self.expected_value = [phi[0, -1, -1, i] for i in range(phi.shape[3])]
        return np.stack([phi[:, :-1, :-1, i] for i in range(self.model.num_outputs)], axis=-1)


def _tree_arrays(cext: ModuleType, tree: Any, normalize: bool, scaling: float) -> dict[str, Any]:
    """One scikit-learn tree as shap's ``SingleTree`` reads it (leaf values normalized to class
    fractions for classifiers, scaled by the forest's 1/n), with every node's expectation and
    the tree's depth from shap's ``compute_expectations``."""
    left = tree.children_left.astype(np.int32)
    right = tree.children_right.astype(np.int32)
    default = left
    if hasattr(tree, "missing_go_to_left"):
        default = np.where(tree.missing_go_to_left, left, right)
    values = tree.value.reshape(tree.value.shape[0], tree.value.shape[1] * tree.value.shape[2])
    if normalize:
        values = (values.T / values.sum(1)).T
    values = values * scaling
    weights = tree.weighted_n_node_samples.astype(np.float64)
    depth = cext.compute_expectations(left, right, weights, values)
    return {
        "children_left": left,
        "children_right": right,
        "children_default": default,
        "features": tree.feature.astype(np.int32),
        "thresholds": tree.threshold.astype(np.float64),
        "values": values,
        "weights": weights,
        "depth": depth,
    }


def _stacked(
    trees: list[dict[str, Any]], name: str, shape: tuple[int, ...], fill: int, dtype: Any
) -> np.ndarray:
    """The trees' ``name`` arrays as rows of one array, ``fill`` past each tree's nodes."""
    out = np.full(shape, fill, dtype=dtype)
    for i, tree in enumerate(trees):
        out[i, : len(tree[name])] = tree[name]
    return out
