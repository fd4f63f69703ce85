"""Checks a model's compiled structures from its schema and arrays, before anything is loaded.

Compiled scikit-learn code indexes arrays of the file without bounds checks: a decision tree's
node array indexes the input's columns and its own nodes, a histogram-boosting predictor its
category bitsets, libsvm its support vectors and (for precomputed kernels) the input's columns,
gradient boosting its output columns. The type allow-list cannot see any of that, so this module
reads those arrays and checks them against *the estimator that calls them*, which is derived
from the model's own structure, never from where an object happens to be met first:

* a ``Tree`` may only be the ``tree_`` of a decision-tree estimator, and must have that
  estimator's ``n_features_in_`` features; a tree estimator that an ensemble calls without
  validation (an element of its ``estimators_``) must take the ensemble's inputs (or, with
  ``estimators_features_``, exactly its feature subset);
* a ``TreePredictor`` may only be in a histogram-boosting model's ``_predictors`` (a list of
  lists) and is checked against that model's inputs and binner;
* gradient boosting's ``estimators_`` must be a stages × outputs grid of regression trees as wide
  as the raw predictions its ``init_`` makes (which must be ``"zero"`` or the default dummy);
* libsvm models must have consistent support vector counts, coefficients and intercepts, and a
  precomputed kernel's support indices must be columns of the kernel matrix.

A structure reachable from several places is checked at each of them. The checks run at
registration (so a refused file is a 422 and never stored) and again on the stored bytes before
every load. They use numpy only (no scikit-learn), like the rest of the artifact check.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

from chalicelib.registry.errors import UnsafeArtifactError
from chalicelib.registry.integrity import (
    check_predictor_arrays,
    check_tree_arrays,
    refuse,
)

TREE = "sklearn.tree._tree.Tree"
PREDICTOR = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
TREE_ESTIMATORS = frozenset(
    {
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._classes.DecisionTreeRegressor",
        "sklearn.tree._classes.ExtraTreeClassifier",
        "sklearn.tree._classes.ExtraTreeRegressor",
    }
)
HIST_BOOSTING = frozenset(
    {
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    }
)
GRADIENT_BOOSTING = frozenset(
    {
        "sklearn.ensemble._gb.GradientBoostingClassifier",
        "sklearn.ensemble._gb.GradientBoostingRegressor",
    }
)
# Ensembles that call their trees without validating the input against the trees' own
# n_features_in_ (check_input=False, or compiled code); the others call the public methods.
UNVALIDATED_CALLERS = GRADIENT_BOOSTING | {
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.ensemble._forest.ExtraTreesRegressor",
    "sklearn.ensemble._forest.RandomTreesEmbedding",
    "sklearn.ensemble._iforest.IsolationForest",
}
_GB_TREE = "sklearn.tree._classes.DecisionTreeRegressor"
_DUMMY_CLASSIFIER = "sklearn.dummy.DummyClassifier"
_DUMMY_REGRESSOR = "sklearn.dummy.DummyRegressor"
_MULTICLASS_LOSS = "sklearn._loss.loss.HalfMultinomialLoss"
_COLUMN_TRANSFORMER = "sklearn.compose._column_transformer.ColumnTransformer"
LIBSVM = {
    "sklearn.svm._classes.SVC": "c_svc",
    "sklearn.svm._classes.NuSVC": "nu_svc",
    "sklearn.svm._classes.SVR": "epsilon_svr",
    "sklearn.svm._classes.NuSVR": "nu_svr",
    "sklearn.svm._classes.OneClassSVM": "one_class",
}
_LIBSVM_CLASSIFIERS = ("c_svc", "nu_svc")
_MISSING = object()

Reader = Callable[[str], bytes]


def check_structures(schema: dict[str, Any], read: Reader) -> None:
    """Checks every compiled structure of a schema that passed the type check.

    Args:
        schema: The parsed ``schema.json`` (already checked by the type check).
        read: Returns a member's bytes (its declared size is already checked).

    Raises:
        UnsafeArtifactError: A structure out of place or inconsistent with its estimator.
    """
    _Walker(read).visit(schema, None, "", 0)


class _Walker:
    """Visits every node with the estimator that holds it (``holder``) and its attribute."""

    def __init__(self, read: Reader) -> None:
        self.read = read
        self.checked: set[tuple[Any, ...]] = set()

    def visit(self, node: Any, holder: dict[str, Any] | None, key: str, inner: int) -> None:
        """Checks ``node`` where it stands, then its children."""
        _check_position(_name(node), _name(holder), key, inner)
        if node.get("__loader__") == "ObjectNode":
            self.estimator(node)
            attrs = _attrs(node)
            if attrs is not None:
                for attr, child in attrs.items():
                    self.visit(child, node, attr, 0)
                return
        for child in _children(node):
            self.visit(child, holder, key, inner + 1)

    def estimator(self, node: dict[str, Any]) -> None:
        """The checks of an object's class (each object id and content once)."""
        name = _name(node)
        attrs = _attrs(node)
        if attrs is None:
            return
        # Nodes sharing an id were shown identical (the shared-id check), so one check is enough.
        saved = node.get("__id__")
        marker = (saved, name) if type(saved) is int else (id(node), name)
        if marker in self.checked:
            return
        self.checked.add(marker)
        if name in TREE_ESTIMATORS and "tree_" in attrs:
            self.tree(attrs["tree_"], _width(attrs, name))
        if "estimators_" in attrs and name in UNVALIDATED_CALLERS:
            self.ensemble(attrs, name)
        if name in GRADIENT_BOOSTING:
            self.gradient_boosting(attrs)
        if name in HIST_BOOSTING:
            self.hist_boosting(attrs)
        if name in LIBSVM:
            self.libsvm(attrs, LIBSVM[name])

    # Decision trees ---------------------------------------------------------------------------

    def tree(self, node: Any, width: int) -> None:
        """A ``Tree`` node: Tree(n_features, n_classes, n_outputs) plus its node arrays."""
        if _name(node) != TREE or node.get("__loader__") != "TreeNode":
            raise refuse("decision-tree estimator whose tree_ is not a tree")
        args = _items(node.get("__reduce__", {}).get("args"))
        state = _dict_content(node.get("content"))
        if args is None or len(args) != 3 or state is None:
            raise refuse("decision tree of unexpected shape")
        n_features, n_outputs = _int(args[0]), _int(args[2])
        if n_features != width:
            raise refuse(
                f"decision tree over {n_features} features called with {width} (its "
                "estimator's n_features_in_)"
            )
        n_classes = self.array(args[1])
        if n_classes.ndim != 1 or n_classes.dtype.kind not in "iu" or n_outputs < 1:
            raise refuse("decision tree whose class counts are not integers")
        if len(n_classes) != n_outputs or (n_classes < 1).any():
            raise refuse("decision tree whose class counts disagree with its outputs")
        depth = check_tree_arrays(
            self.array(state.get("nodes")),
            self.array(state.get("values")),
            _int(state.get("node_count")),
            n_outputs,
            int(n_classes.max()),
            width,
        )
        if _int(state.get("max_depth")) != depth:
            raise refuse("decision tree whose declared depth is not its depth")

    def ensemble(self, attrs: dict[str, Any], name: str) -> None:
        """Tree estimators an ensemble calls without validating their input take its input."""
        members = list(_objects(attrs["estimators_"]))
        trees = [(i, m) for i, m in enumerate(members) if _name(m) in TREE_ESTIMATORS]
        if not trees:
            return
        width = _width(attrs, name)
        subsets = attrs.get("estimators_features_")
        if subsets is None or _json(subsets) is None:
            for _, member in trees:
                if _width(_attrs(member) or {}, _name(member)) != width:
                    raise refuse(f"tree in a {_short(name)} built for another number of inputs")
            return
        features = list(_items(subsets) or [])
        if len(features) != len(members):
            raise refuse(f"{_short(name)} whose feature subsets do not match its trees")
        for index, member in trees:
            subset = self.array(features[index])
            if subset.ndim != 1 or subset.dtype.kind not in "iu":
                raise refuse(f"{_short(name)} whose feature subsets are not column indices")
            if ((subset < 0) | (subset >= width)).any():
                raise refuse(f"{_short(name)} feature subset naming a column it does not have")
            if _width(_attrs(member) or {}, _name(member)) != len(subset):
                raise refuse(f"tree in a {_short(name)} built for another feature subset")

    # Gradient boosting ------------------------------------------------------------------------

    def gradient_boosting(self, attrs: dict[str, Any]) -> None:
        """A grid of regression trees (stages × outputs) as wide as the initial predictions."""
        if "estimators_" not in attrs:
            return
        grid = attrs["estimators_"]
        rows = _items(grid) if grid.get("type") == "json" else None
        outputs = _int(attrs.get("n_trees_per_iteration_"))
        shape = [_int(item) for item in _items(grid.get("shape")) or []]
        if rows is None or not rows or shape != [len(rows), outputs]:
            raise refuse("gradient boosting model whose trees are not a stages × outputs grid")
        for row in rows:
            stage = _items(row)
            if stage is None or len(stage) != outputs:
                raise refuse("gradient boosting stage with the wrong number of trees")
            if any(_name(tree) != _GB_TREE for tree in stage):
                raise refuse("gradient boosting stage holding something other than trees")
        if _gb_init_width(attrs) != outputs:
            raise refuse("gradient boosting model whose initial predictions have another width")

    # Histogram gradient boosting ---------------------------------------------------------------

    def hist_boosting(self, attrs: dict[str, Any]) -> None:
        """Every predictor against the model's inputs and its binner's categorical features."""
        if "_predictors" not in attrs:
            return
        width = _width(attrs, "HistGradientBoosting")
        preprocessor = attrs.get("_preprocessor")
        if (
            preprocessor is not None
            and _json(preprocessor) is not None
            and self.column_transformer_width(preprocessor) != width
        ):
            raise refuse("boosting model whose preprocessing changes its number of inputs")
        categorical = self.categorical(attrs.get("_bin_mapper"))
        for stage in _items(attrs["_predictors"]) or []:
            for predictor in _items(stage) or []:
                state = _attrs(predictor)
                if _name(predictor) != PREDICTOR or state is None:
                    raise refuse("boosting model holding something other than its trees")
                bitsets = self.array(state.get("raw_left_cat_bitsets"))
                check_predictor_arrays(self.array(state.get("nodes")), bitsets, categorical, width)

    def categorical(self, mapper: Any) -> Any:
        """The binner's per-feature categorical flags (``None``: none is categorical)."""
        flags = (_attrs(mapper) or {}).get("is_categorical_") if mapper else None
        if flags is None or _json(flags) is None:
            return None
        return self.array(flags)

    def column_transformer_width(self, node: Any) -> int:
        """Columns a histogram-boosting model's own ColumnTransformer outputs (int columns)."""
        attrs = _attrs(node)
        if _name(node) != _COLUMN_TRANSFORMER or attrs is None:
            raise refuse("boosting model with a preprocessing step it does not make")
        width = 0
        for entry in _items(attrs.get("transformers_")) or []:
            parts = _items(entry)
            if parts is None or len(parts) != 3:
                raise refuse("boosting model with a malformed preprocessing step")
            if _json(parts[1]) == "drop":
                continue
            width += len(self.columns(parts[2]))
        return width

    def columns(self, node: Any) -> list[int]:
        """A column selection given as indices or a boolean mask (an array or a list)."""
        if node.get("__loader__") == "NdArrayNode" and node.get("type") == "numpy":
            array = self.array(node)
            if array.ndim == 1 and array.dtype.kind in "iub":
                return [int(v) for v in (array.nonzero()[0] if array.dtype.kind == "b" else array)]
        values = [_json(item) for item in _items(node) or [_MISSING]]
        if all(type(value) is int for value in values):
            return values
        if all(type(value) is bool for value in values):
            return [index for index, value in enumerate(values) if value]
        raise refuse("boosting model whose preprocessing selects columns by other than index")

    # libsvm -----------------------------------------------------------------------------------

    def libsvm(self, attrs: dict[str, Any], default_impl: str) -> None:
        """Counts, coefficients and intercepts agree, and precomputed support indices fit."""
        if "support_" not in attrs:
            return
        impl = _json(attrs["_impl"]) if "_impl" in attrs else default_impl
        if "_sparse" in attrs and _json(attrs["_sparse"]) is not False:
            raise UnsafeArtifactError(
                "support vector machines fitted on sparse input are refused (their compiled "
                "sparse model cannot be checked); fit on dense input or use LinearSVC"
            )
        support = self.array(attrs["support_"])
        counts = self.array(attrs.get("_n_support"))
        classes = len(counts)
        pairs = classes * (classes - 1) // 2
        count = len(support)
        if support.ndim != 1 or counts.ndim != 1 or classes < 2:
            raise refuse("support vector machine with malformed support counts")
        if impl in _LIBSVM_CLASSIFIERS and ((counts < 0).any() or int(counts.sum()) != count):
            raise refuse("support vector machine whose class counts disagree with its vectors")
        coefficients = self.array(attrs.get("_dual_coef_"))
        intercepts = self.array(attrs.get("_intercept_"))
        if coefficients.shape != (classes - 1, count) or intercepts.shape != (pairs,):
            raise refuse("support vector machine whose coefficients disagree with its vectors")
        for key in ("_probA", "_probB"):
            if self.array(attrs.get(key)).shape not in ((0,), (pairs,)):
                raise refuse("support vector machine with malformed probability parameters")
        self.libsvm_vectors(attrs, support)

    def libsvm_vectors(self, attrs: dict[str, Any], support: Any) -> None:
        """Support indices inside a precomputed kernel's columns; otherwise one vector each."""
        count = len(support)
        if _json(attrs.get("kernel", {})) == "precomputed":
            columns = _int((_items(attrs.get("shape_fit_")) or [None])[0])
            if ((support < 0) | (support >= columns)).any():
                raise refuse("support vector machine whose support indices leave its kernel")
        elif self.array(attrs.get("support_vectors_")).shape[:1] != (count,):
            raise refuse("support vector machine whose support vectors disagree with support_")

    # Arrays -----------------------------------------------------------------------------------

    def array(self, node: Any) -> Any:
        """The array a numpy ``NdArrayNode`` stores.

        Raises:
            UnsafeArtifactError: Not a numpy array node, or an unreadable member.
        """
        import numpy as np

        if (
            not isinstance(node, dict)
            or node.get("__loader__") != "NdArrayNode"
            or node.get("type") != "numpy"
        ):
            raise refuse("compiled structure whose array is not an array")
        try:
            array = np.load(io.BytesIO(self.read(node["file"])), allow_pickle=False)
        except (ValueError, OSError, EOFError, TypeError) as exc:
            raise UnsafeArtifactError(f"an array of the artifact cannot be read ({exc})") from None
        if not isinstance(array, np.ndarray):
            raise refuse("compiled structure whose array is not an array")
        return array


def _check_position(name: str, holder: str, key: str, inner: int) -> None:
    """Trees stand only where the estimator that predicts with them keeps them."""
    if name == TREE and (holder not in TREE_ESTIMATORS or key != "tree_" or inner):
        raise refuse("decision tree outside the estimator that predicts with it")
    if name == PREDICTOR and (holder not in HIST_BOOSTING or key != "_predictors" or inner != 2):
        raise refuse("boosting tree outside the model that predicts with it")


def _gb_init_width(attrs: dict[str, Any]) -> int | None:
    """Columns of gradient boosting's initial raw predictions (``None``: unknown init)."""
    init = attrs.get("init_")
    if init is None or _json(init) == "zero":
        return _int(attrs.get("n_trees_per_iteration_"))
    init_attrs = _attrs(init) or {}
    if _name(init) == _DUMMY_REGRESSOR:
        return 1 if _int(init_attrs.get("n_outputs_")) == 1 else None
    if _name(init) != _DUMMY_CLASSIFIER:
        raise UnsafeArtifactError(
            "gradient boosting with an init estimator other than the default is refused (its "
            "initial predictions decide how many columns the compiled trees write)"
        )
    loss = attrs.get("_loss")
    loss_attrs = _attrs(loss) or {}
    multiclass = (
        _json(loss_attrs["is_multiclass"])
        if "is_multiclass" in loss_attrs
        else _name(loss) == _MULTICLASS_LOSS
    )
    return _int(init_attrs.get("n_classes_")) if multiclass is True else 1


# --- schema helpers ----------------------------------------------------------------------------


def _name(node: Any) -> str:
    if not isinstance(node, dict):
        return ""
    return f"{node.get('__module__')}.{node.get('__class__')}"


def _short(name: str) -> str:
    return name.rpartition(".")[2]


def _attrs(node: Any) -> dict[str, Any] | None:
    """An ObjectNode's attributes (its DictNode content), or ``None``."""
    if not isinstance(node, dict) or node.get("__loader__") != "ObjectNode":
        return None
    return _dict_content(node.get("content"))


def _dict_content(node: Any) -> dict[str, Any] | None:
    if isinstance(node, dict) and node.get("__loader__") == "DictNode":
        content = node.get("content")
        return content if isinstance(content, dict) else None
    return None


def _items(node: Any) -> list[Any] | None:
    """A list, tuple or object array node's items, or ``None``."""
    if not isinstance(node, dict) or node.get("__loader__") not in (
        "ListNode",
        "TupleNode",
        "NdArrayNode",
    ):
        return None
    items = node.get("content")
    return items if isinstance(items, list) else None


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """The objects of a (nested) list, tuple or object array, in order."""
    items = _items(node)
    if items is None:
        if isinstance(node, dict) and node.get("__loader__") == "ObjectNode":
            yield node
        return
    for item in items:
        yield from _objects(item)


def _children(node: Any) -> Iterator[Any]:
    """Every node directly inside ``node`` (whatever field holds it)."""
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "key_types":
            continue
        if isinstance(value, dict) and "__loader__" in value:
            yield value
        elif isinstance(value, dict):
            yield from (v for v in value.values() if isinstance(v, dict) and "__loader__" in v)
        elif isinstance(value, list):
            yield from (v for v in value if isinstance(v, dict) and "__loader__" in v)


def _json(node: Any) -> Any:
    """The value of a JsonNode (``_MISSING`` for any other node)."""
    if isinstance(node, dict) and node.get("__loader__") == "JsonNode":
        try:
            return json.loads(node["content"])
        except (KeyError, TypeError, ValueError):
            return _MISSING
    return _MISSING


def _int(node: Any) -> int:
    value = _json(node)
    return value if type(value) is int else -1


def _width(attrs: dict[str, Any], name: str) -> int:
    width = _int(attrs.get("n_features_in_"))
    if width <= 0:
        raise refuse(f"{_short(name)} that does not say how many inputs it takes")
    return width


def check_sparse(data: bytes, name: str) -> None:
    """A stored sparse matrix (``.npz``) whose indices stay inside its shape.

    scipy's ``load_npz`` does not check index ranges, and its compiled products trust them.
    CSR, CSC and BSR matrices must pass ``check_format(full_check=True)``, COO coordinates must
    lie inside the shape; other formats are refused.

    Raises:
        UnsafeArtifactError: Unreadable, another format, or indices outside the matrix.
    """
    import scipy.sparse as sp

    try:
        matrix = sp.load_npz(io.BytesIO(data))
        if matrix.format in ("csr", "csc", "bsr"):
            matrix.check_format(full_check=True)
        elif matrix.format == "coo":
            for axis, index in enumerate(matrix.coords):
                if len(index) and (index.min() < 0 or index.max() >= matrix.shape[axis]):
                    raise ValueError("coordinates outside the matrix")
        else:
            raise UnsafeArtifactError(
                f"'{name}' is a {matrix.format.upper()} sparse matrix; only CSR, CSC, BSR and "
                "COO matrices are accepted"
            )
    except (ValueError, TypeError, KeyError, OSError, EOFError, IndexError) as exc:
        raise refuse(f"sparse matrix that fails scipy's full format check ({exc})") from None
