"""Checks what the type allow-list cannot: the content of a model's compiled structures.

scikit-learn's decision trees (``sklearn.tree._tree.Tree``) and histogram-boosting predictors
(``TreePredictor``) walk their node arrays in compiled code without bounds checks. A file of only
trusted types can still hold a node whose child or feature index points outside its arrays:
predicting then reads arbitrary memory (a crash, or bytes of the process leaking into a
prediction). So every tree must be a tree: each split's children come after it and inside the
array, every node but the root has exactly one parent, each split's feature is one of the inputs
*of the estimator that calls the tree*, and the tree is at most :data:`MAX_TREE_DEPTH` deep
(shap's compiled TreeSHAP recurses once per level and sizes its buffers by the depth squared).

The array checks here are pure numpy and run twice: on the arrays of the file, from the schema,
before anything is loaded (:mod:`chalicelib.registry.structures`, at registration and at load),
and on the loaded model (:func:`check_loaded`), where the owner of every tree is derived from the
model's structure (a ``tree_`` of a tree estimator, the ``_predictors`` of a histogram-boosting
model) and a tree found anywhere else is refused. ``n_jobs`` is reset so that a file cannot make
one prediction start thousands of threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from chalicelib.registry.errors import UnsafeArtifactError

_TREE = ("sklearn.tree._tree", "Tree")
_PREDICTOR = ("sklearn.ensemble._hist_gradient_boosting.predictor", "TreePredictor")
MAX_OBJECTS = 2_000_000
# Deepest tree accepted. Real trees are a few dozen levels deep (a fully grown tree on a million
# rows rarely passes 60); shap's TreeSHAP recurses once per level in C and allocates
# (depth + 1)(depth + 2)/2 path elements per call.
MAX_TREE_DEPTH = 1_000
# A bitset of categories is 8 words of 32 bits (categories 0-255).
BITSET_WORDS = 8


def refuse(what: str) -> UnsafeArtifactError:
    """The refusal of a compiled structure that would read outside its arrays."""
    return UnsafeArtifactError(
        f"the model holds a {what}; predicting with it would read outside its arrays"
    )


def check_tree_arrays(
    nodes: Any, values: Any, node_count: int, n_outputs: int, max_n_classes: int, width: int
) -> int:
    """Checks a decision tree's arrays; returns its depth.

    Args:
        nodes: The ``nodes`` record array (``left_child``, ``right_child``, ``feature``, ...).
        values: The ``values`` array.
        node_count: The node count the tree declares.
        n_outputs: Its outputs.
        max_n_classes: The most classes of an output.
        width: Columns of the input the tree is called with.

    Raises:
        UnsafeArtifactError: The arrays do not form a tree over ``width`` features.
    """
    import numpy as np

    try:
        left, right = nodes["left_child"], nodes["right_child"]
        feature = nodes["feature"]
    except (KeyError, ValueError, IndexError, TypeError):
        raise refuse("decision tree whose node array is not a node array") from None
    if (
        nodes.ndim != 1
        or len(nodes) != node_count
        or node_count < 1
        or getattr(values, "shape", None) != (node_count, n_outputs, max_n_classes)
    ):
        raise refuse("decision tree whose arrays disagree with its node count")
    leaf = left == -1
    if not np.array_equal(leaf, right == -1):
        raise refuse("decision tree node with one child")
    return check_splits(np.flatnonzero(~leaf), left, right, feature, node_count, width)


def check_predictor_arrays(nodes: Any, bitsets: Any, categorical: Any, width: int) -> int:
    """Checks a histogram-boosting predictor's arrays; returns its depth.

    Args:
        nodes: The predictor's ``nodes`` record array.
        bitsets: Its ``raw_left_cat_bitsets`` (one row of 8 words per categorical split).
        categorical: Per input feature, whether the model's binner treats it as categorical
            (``None``: no feature is).
        width: Columns of the input the predictor is called with.

    Raises:
        UnsafeArtifactError: The arrays do not form a tree over ``width`` features, or a
            categorical split reads a category set the model does not hold.
    """
    import numpy as np

    try:
        split = np.flatnonzero(nodes["is_leaf"] == 0)
        left, right, feature = nodes["left"], nodes["right"], nodes["feature_idx"]
        chosen = split[nodes["is_categorical"][split] != 0]
        bitset_idx = nodes["bitset_idx"][chosen].astype("int64")
    except (KeyError, ValueError, IndexError, TypeError):
        raise refuse("boosting tree whose node array is not a node array") from None
    if nodes.ndim != 1 or len(nodes) == 0 or width <= 0:
        raise refuse("boosting tree without nodes or features")
    depth = check_splits(split, left, right, feature, len(nodes), width)
    if len(chosen) == 0:
        return depth
    if getattr(bitsets, "ndim", 0) != 2 or bitsets.shape[1] != BITSET_WORDS:
        raise refuse("boosting tree whose category sets are not 8-word bitsets")
    if ((bitset_idx < 0) | (bitset_idx >= bitsets.shape[0])).any():
        raise refuse("boosting tree split on a category set it does not hold")
    flags = np.zeros(width, dtype=bool) if categorical is None else np.asarray(categorical)
    if flags.shape != (width,) or not flags[feature[chosen].astype("int64")].all():
        raise refuse("boosting tree categorical split on a feature that has no known categories")
    return depth


def check_splits(
    split: Any, left: Any, right: Any, feature: Any, count: int, n_features: int
) -> int:
    """Checks that the splits form a tree of ``count`` nodes over ``n_features`` features.

    Trees are stored parents first: a split's children come after it, inside the array (no
    cycles: prediction always moves forward and ends at a leaf), and every node but the root is
    the child of exactly one split (no node shared by two paths, which would make recursive
    walks exponential). The depth is computed level by level, never by recursion.

    Returns:
        The depth (0 for a single leaf).

    Raises:
        UnsafeArtifactError: Otherwise, or deeper than :data:`MAX_TREE_DEPTH`.
    """
    import numpy as np

    lefts, rights = left[split].astype("int64"), right[split].astype("int64")
    if not ((lefts > split) & (rights > split) & (lefts < count) & (rights < count)).all():
        raise refuse("tree split whose children are not later nodes of the tree")
    children = np.concatenate([lefts, rights])
    if len(children) != count - 1 or not np.array_equal(np.sort(children), np.arange(1, count)):
        raise refuse("tree whose nodes are not each the child of exactly one split")
    chosen = feature[split].astype("int64")
    if ((chosen < 0) | (chosen >= n_features)).any():
        raise refuse("tree split on a feature the model does not have")
    return tree_depth(split, lefts, rights, count)


def tree_depth(split: Any, lefts: Any, rights: Any, count: int) -> int:
    """The depth of a checked tree, level by level (refused past :data:`MAX_TREE_DEPTH`)."""
    import numpy as np

    is_split = np.zeros(count, dtype=bool)
    is_split[split] = True
    position = np.full(count, -1, dtype=np.int64)
    position[split] = np.arange(len(split))
    level = np.array([0], dtype=np.int64)
    depth = 0
    while True:
        inner = level[is_split[level]]
        if len(inner) == 0:
            return depth
        depth += 1
        if depth > MAX_TREE_DEPTH:
            raise UnsafeArtifactError(
                f"the model holds a tree more than {MAX_TREE_DEPTH} levels deep; deeper trees "
                "are refused (explaining them would exhaust the stack)"
            )
        index = position[inner]
        level = np.concatenate([lefts[index], rights[index]])


# --- the loaded model ------------------------------------------------------------------------


def check_loaded(model: Any) -> None:
    """Checks every tree a loaded model holds against its owner and resets its ``n_jobs``.

    Raises:
        UnsafeArtifactError: A tree outside its owner, or one whose indices leave its arrays or
            whose nodes form no tree.
    """
    owned: set[int] = set()
    objects = list(_walk(model))
    for obj in objects:
        tree = getattr(obj, "__dict__", {}).get("tree_")
        if _kind(tree) == _TREE:
            check_tree(tree, _width(obj))
            owned.add(id(tree))
        predictors = getattr(obj, "__dict__", {}).get("_predictors")
        if isinstance(predictors, list):
            for predictor in _predictors_of(predictors):
                check_predictor(predictor, obj)
                owned.add(id(predictor))
    for obj in objects:
        if _kind(obj) in (_TREE, _PREDICTOR) and id(obj) not in owned:
            raise refuse("tree outside the estimator that predicts with it")
        if type(obj).__module__.startswith("sklearn.") and "n_jobs" in getattr(obj, "__dict__", {}):
            obj.n_jobs = None


def _kind(obj: Any) -> tuple[str, str]:
    return (type(obj).__module__, type(obj).__name__)


def _width(owner: Any) -> int:
    width = getattr(owner, "__dict__", {}).get("n_features_in_")
    if type(width) is not int or width <= 0:
        raise refuse("tree whose estimator does not say how many features it takes")
    return width


def _predictors_of(predictors: list[Any]) -> Iterator[Any]:
    for stage in predictors:
        if not isinstance(stage, list):
            raise refuse("boosting model whose trees are not lists of trees")
        for predictor in stage:
            if _kind(predictor) != _PREDICTOR:
                raise refuse("boosting model holding something other than its trees")
            yield predictor


def _walk(root: Any) -> Iterator[Any]:
    """Every object reachable from ``root``."""
    import numpy as np

    seen: set[int] = set()
    stack: list[Any] = [root]
    while stack and len(seen) < MAX_OBJECTS:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, str | bytes | int | float | type | None):
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                stack.extend(obj.ravel().tolist())
            continue
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif isinstance(getattr(obj, "__dict__", None), dict):
            stack.extend(vars(obj).values())


def check_tree(tree: Any, width: int | None = None) -> None:
    """A loaded decision tree's nodes form a tree over ``width`` features.

    Args:
        tree: A ``sklearn.tree._tree.Tree``.
        width: The inputs of the estimator that calls it (default: the tree's own count).

    Raises:
        UnsafeArtifactError: Otherwise, or the tree's feature count differs from ``width``.
    """
    if width is not None and tree.n_features != width:
        raise refuse("decision tree whose feature count differs from its estimator's")
    state = tree.__getstate__()
    check_tree_arrays(
        state["nodes"],
        state["values"],
        int(state["node_count"]),
        int(tree.n_outputs),
        int(tree.max_n_classes),
        int(tree.n_features),
    )


def check_predictor(predictor: Any, owner: Any) -> None:
    """A loaded histogram-boosting predictor's nodes form a tree over its estimator's features.

    Raises:
        UnsafeArtifactError: Otherwise.
    """
    mapper = getattr(owner, "__dict__", {}).get("_bin_mapper")
    categorical = getattr(mapper, "__dict__", {}).get("is_categorical_")
    check_predictor_arrays(
        predictor.nodes, predictor.raw_left_cat_bitsets, categorical, _width(owner)
    )
