"""Checks what the type allow-list cannot: the content of a loaded model's compiled structures.

scikit-learn's decision trees (``sklearn.tree._tree.Tree``) and histogram-boosting predictors
(``TreePredictor``) walk their node arrays in compiled code without bounds checks. A file of only
trusted types can still hold a node whose child or feature index points outside its arrays:
predicting then reads arbitrary memory (a crash, or bytes of the process leaking into a
prediction). So every loaded tree must be a tree: each split's children come after it and inside
the array, each split's feature is one of the model's inputs, and its values have the declared
shape. ``n_jobs`` is reset so that a file cannot make one prediction start thousands of threads.

Runs on the explanation path, after skops built the model and before anything uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from chalicelib.registry.errors import UnsafeArtifactError

_TREE = ("sklearn.tree._tree", "Tree")
_PREDICTOR = ("sklearn.ensemble._hist_gradient_boosting.predictor", "TreePredictor")
MAX_OBJECTS = 2_000_000


def check_loaded(model: Any) -> None:
    """Checks every tree a loaded model holds and resets its ``n_jobs``.

    Raises:
        UnsafeArtifactError: A tree whose indices leave its arrays or whose nodes form no tree.
    """
    for obj, owner in _walk(model):
        kind = (type(obj).__module__, type(obj).__name__)
        if kind == _TREE:
            check_tree(obj)
        elif kind == _PREDICTOR:
            check_predictor(obj, owner)
        elif type(obj).__module__.startswith("sklearn.") and "n_jobs" in getattr(
            obj, "__dict__", {}
        ):
            obj.n_jobs = None


def _walk(root: Any) -> Iterator[tuple[Any, Any]]:
    """Every object reachable from ``root`` (with the nearest estimator above it)."""
    import numpy as np

    seen: dict[int, Any] = {}
    stack: list[tuple[Any, Any]] = [(root, root)]
    while stack and len(seen) < MAX_OBJECTS:
        obj, owner = stack.pop()
        if id(obj) in seen or isinstance(obj, str | bytes | int | float | type | None):
            continue
        seen[id(obj)] = obj
        yield obj, owner
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                stack.extend((item, owner) for item in obj.ravel().tolist())
            continue
        if isinstance(obj, dict):
            stack.extend((item, owner) for item in obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend((item, owner) for item in obj)
        elif isinstance(getattr(obj, "__dict__", None), dict):
            inner = obj if hasattr(obj, "n_features_in_") else owner
            stack.extend((item, inner) for item in vars(obj).values())


def _refuse(what: str) -> UnsafeArtifactError:
    return UnsafeArtifactError(
        f"the model holds a {what}; predicting with it would read outside its arrays"
    )


def check_tree(tree: Any) -> None:
    """A decision tree's nodes form a tree over the model's features.

    Raises:
        UnsafeArtifactError: Otherwise.
    """
    import numpy as np

    state = tree.__getstate__()
    nodes, values = state["nodes"], state["values"]
    count = int(state["node_count"])
    if len(nodes) != count or values.shape != (count, tree.n_outputs, tree.max_n_classes):
        raise _refuse("decision tree whose arrays disagree with its node count")
    left, right = nodes["left_child"], nodes["right_child"]
    leaf = left == -1
    if not np.array_equal(leaf, right == -1):
        raise _refuse("decision tree node with one child")
    _check_splits(np.flatnonzero(~leaf), left, right, nodes["feature"], count, tree.n_features)


def check_predictor(predictor: Any, owner: Any) -> None:
    """A histogram-boosting predictor's nodes form a tree over its estimator's features.

    Raises:
        UnsafeArtifactError: Otherwise.
    """
    import numpy as np

    nodes = predictor.nodes
    count = len(nodes)
    n_features = int(getattr(owner, "n_features_in_", 0))
    split = np.flatnonzero(nodes["is_leaf"] == 0)
    if count == 0 or n_features <= 0:
        raise _refuse("boosting tree without nodes or features")
    _check_splits(split, nodes["left"], nodes["right"], nodes["feature_idx"], count, n_features)
    categorical = split[nodes["is_categorical"][split] != 0]
    bitsets = len(predictor.raw_left_cat_bitsets)
    if len(categorical) and (nodes["bitset_idx"][categorical] >= bitsets).any():
        raise _refuse("boosting tree split on a category set it does not hold")


def _check_splits(
    split: Any, left: Any, right: Any, feature: Any, count: int, n_features: int
) -> None:
    # Trees are stored parents first: a split's children come after it, inside the array. That
    # also rules out cycles (prediction always moves forward and ends at a leaf).
    lefts, rights = left[split].astype("int64"), right[split].astype("int64")
    if not ((lefts > split) & (rights > split) & (lefts < count) & (rights < count)).all():
        raise _refuse("tree split whose children are not later nodes of the tree")
    chosen = feature[split].astype("int64")
    if ((chosen < 0) | (chosen >= n_features)).any():
        raise _refuse("tree split on a feature the model does not have")
