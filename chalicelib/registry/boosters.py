"""XGBoost and LightGBM models in their own formats, checked without importing either library.

Accepted formats (never pickle):

* ``xgboost_json``: ``Booster.save_model("m.json")``; ``xgboost_ubj``: the same as UBJSON
  (``"m.ubj"``, XGBoost's default binary form).
* ``lightgbm_text``: ``Booster.save_model("m.txt")`` / ``model_to_string()``.

The check runs at registration (on the API, where neither library is installed) and again on
the stored bytes before every load: the file must parse within the size cap, name a tree booster
and an objective we explain, declare as many features as the version's ``feature_names``, and
every tree must be a tree: each split's children later in its node array, leaves where the
arrays say, split features among the model's inputs. Categorical splits and linear trees are
refused (TreeSHAP cannot explain them exactly).
"""

from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.core import jsonutil
from chalicelib.registry.errors import UnsafeArtifactError

XGBOOST_JSON = "xgboost_json"
XGBOOST_UBJ = "xgboost_ubj"
LIGHTGBM_TEXT = "lightgbm_text"
BOOSTER_FORMATS = (XGBOOST_JSON, XGBOOST_UBJ, LIGHTGBM_TEXT)
MAX_DEPTH = 32

XGBOOST_OBJECTIVES = {
    "reg:squarederror": "regression",
    "reg:absoluteerror": "regression",
    "reg:pseudohubererror": "regression",
    "binary:logistic": "binary",
    "binary:logitraw": "binary",
    "multi:softprob": "multiclass",
    "multi:softmax": "multiclass",
}
LIGHTGBM_OBJECTIVES = {
    "regression": "regression",
    "regression_l1": "regression",
    "huber": "regression",
    "fair": "regression",
    "quantile": "regression",
    "binary": "binary",
    "multiclass": "multiclass",
}


@dataclass(frozen=True)
class BoosterReport:
    """What the check found in an accepted booster file.

    Attributes:
        library: ``xgboost`` or ``lightgbm``.
        kind: ``regression``, ``binary`` or ``multiclass``.
        objective: The objective the file names.
        n_features: Inputs the model reads.
        n_classes: Classes (1 for regression and 2 for binary models).
        trees: Number of trees.
        nodes: Number of nodes over all trees.
    """

    library: str
    kind: str
    objective: str
    n_features: int
    n_classes: int
    trees: int
    nodes: int

    @property
    def load_bytes(self) -> int:
        """Memory a load takes at most: about 64 bytes per node in either library."""
        return 64 * self.nodes + 4096


def check_booster(fmt: str, data: bytes, n_features: int | None, max_bytes: int) -> BoosterReport:
    """Checks a booster file of format ``fmt`` (see the module docstring).

    Args:
        fmt: One of :data:`BOOSTER_FORMATS`.
        data: The file's bytes.
        n_features: Features the version declares (``None``: not checked).
        max_bytes: The size cap.

    Raises:
        UnsafeArtifactError: Anything the check refuses, with the reason.
    """
    if len(data) > max_bytes:
        raise _refuse(f"the file is {len(data)} bytes, over the cap of {max_bytes}")
    if fmt == LIGHTGBM_TEXT:
        report = _check_lightgbm(data)
    else:
        document = _read_json(data) if fmt == XGBOOST_JSON else read_ubjson(data)
        report = _check_xgboost(document)
    if n_features is not None and report.n_features != n_features:
        raise _refuse(
            f"the model reads {report.n_features} features but {n_features} feature_names "
            "were given"
        )
    return report


def _refuse(reason: str) -> UnsafeArtifactError:
    return UnsafeArtifactError(f"the booster file is refused: {reason}")


# --- XGBoost ----------------------------------------------------------------------------------
def _read_json(data: bytes) -> Any:
    try:
        return jsonutil.loads(data, max_depth=MAX_DEPTH, max_digits=None, finite=False)
    except ValueError as exc:
        raise _refuse(f"not XGBoost JSON ({exc})") from None


def _field(document: Any, *path: str) -> Any:
    value = document
    for name in path:
        if not isinstance(value, dict) or name not in value:
            raise _refuse(f"not an XGBoost model: '{'.'.join(path)}' is missing")
        value = value[name]
    return value


def _number(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _refuse(f"{what} is not a number") from None


def _check_xgboost(document: Any) -> BoosterReport:
    learner = _field(document, "learner")
    booster = _field(learner, "gradient_booster")
    if booster.get("name") != "gbtree":
        raise _refuse(f"booster '{booster.get('name')}' is not a tree booster (gbtree)")
    objective = str(_field(learner, "objective", "name"))
    if objective not in XGBOOST_OBJECTIVES:
        raise _refuse(f"objective '{objective}' is not one of {sorted(XGBOOST_OBJECTIVES)}")
    params = _field(learner, "learner_model_param")
    n_features = int(_number(params.get("num_feature"), "num_feature"))
    n_classes = max(1, int(_number(params.get("num_class", 0), "num_class")))
    if int(_number(params.get("num_target", 1), "num_target")) != 1:
        raise _refuse("models with several targets are not explained")
    model = _field(booster, "model")
    trees = _field(model, "trees")
    if not isinstance(trees, list) or not trees:
        raise _refuse("the model has no trees")
    nodes = sum(_check_xgboost_tree(tree, n_features, index) for index, tree in enumerate(trees))
    _check_xgboost_layout(model, len(trees), n_classes)
    kind = XGBOOST_OBJECTIVES[objective]
    classes = n_classes if kind == "multiclass" else (2 if kind == "binary" else 1)
    return BoosterReport("xgboost", kind, objective, n_features, classes, len(trees), nodes)


def _check_xgboost_layout(model: dict[str, Any], n_trees: int, n_classes: int) -> None:
    """XGBoost adds tree ``i`` to output group ``tree_info[i]`` without a bounds check: one
    group per class (one for binary and regression models), as many entries as trees; the
    declared tree count and the per-iteration boundaries must agree with the trees."""
    groups = _model_ints(model, "tree_info")
    if len(groups) != n_trees:
        raise _refuse("tree_info does not name an output group for every tree")
    if np.any((groups < 0) | (groups >= n_classes)):
        raise _refuse("tree_info names an output group the model does not have")
    params = model.get("gbtree_model_param", {})
    if int(_number(params.get("num_trees", n_trees), "num_trees")) != n_trees:
        raise _refuse("num_trees is not the number of trees")
    if int(_number(params.get("num_parallel_tree", 1), "num_parallel_tree")) < 1:
        raise _refuse("num_parallel_tree must be at least 1")
    if "iteration_indptr" in model:
        bounds = _model_ints(model, "iteration_indptr")
        if (
            len(bounds) < 1
            or bounds[0] != 0
            or bounds[-1] != n_trees
            or np.any(np.diff(bounds) < 0)
        ):
            raise _refuse("iteration_indptr does not divide the trees into iterations")


def _model_ints(model: dict[str, Any], name: str) -> np.ndarray:
    try:
        array = np.asarray(model[name], dtype=np.int64)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise _refuse(f"'{name}' is missing or not integers") from None
    if array.ndim != 1:
        raise _refuse(f"'{name}' is not a list")
    return array


def _int_array(tree: dict[str, Any], name: str, index: int) -> np.ndarray:
    try:
        array = np.asarray(tree[name], dtype=np.int64)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise _refuse(f"tree {index}: '{name}' is missing or not integers") from None
    if array.ndim != 1:
        raise _refuse(f"tree {index}: '{name}' is not a list")
    return array


def _check_xgboost_tree(tree: Any, n_features: int, index: int) -> int:
    if not isinstance(tree, dict):
        raise _refuse(f"tree {index} is not an object")
    left = _int_array(tree, "left_children", index)
    right = _int_array(tree, "right_children", index)
    features = _int_array(tree, "split_indices", index)
    split_type = _int_array(tree, "split_type", index) if "split_type" in tree else None
    try:
        conditions = np.asarray(tree["split_conditions"], dtype=float)
    except (KeyError, TypeError, ValueError):
        raise _refuse(f"tree {index}: 'split_conditions' is missing or not numbers") from None
    n = len(left)
    sizes = {len(right), len(features), len(conditions)}
    if n == 0 or sizes != {n} or (split_type is not None and len(split_type) != n):
        raise _refuse(f"tree {index}: its node arrays differ in length")
    if split_type is not None and np.any(split_type != 0):
        raise _refuse(f"tree {index} has categorical splits, which TreeSHAP cannot explain")
    _check_children(left, right, n, f"tree {index}")
    _check_parents(tree, left, right, index)
    for name in ("base_weights", "default_left", "loss_changes", "sum_hessian"):
        if name in tree and np.size(tree[name]) != n:
            raise _refuse(f"tree {index}: its node arrays differ in length")
    inner = left != -1
    if np.any((features[inner] < 0) | (features[inner] >= n_features)):
        raise _refuse(f"tree {index} splits on a feature the model does not read")
    return n


#: The parent XGBoost writes for a tree's root.
XGBOOST_ROOT_PARENT = 2147483647


def _check_parents(tree: dict[str, Any], left: np.ndarray, right: np.ndarray, index: int) -> None:
    """XGBoost follows ``parents`` without a bounds check: each must be the node whose child
    it is (the root's, XGBoost's marker)."""
    parents = _int_array(tree, "parents", index)
    expected = np.full(len(left), XGBOOST_ROOT_PARENT, dtype=np.int64)
    splits = np.flatnonzero(left != -1)
    expected[left[splits]] = splits
    expected[right[splits]] = splits
    if len(parents) != len(left) or np.any(parents != expected):
        raise _refuse(f"tree {index}: 'parents' are not the nodes' parents")


def _check_children(left: np.ndarray, right: np.ndarray, n: int, where: str) -> None:
    """Leaves have no children; a split's children come later in the node array (so the nodes
    form a tree: no cycles, nothing outside the array)."""
    leaf = left == -1
    if np.any(right[leaf] != -1):
        raise _refuse(f"{where}: a node has a right child but no left child")
    positions = np.arange(n)
    for children in (left[~leaf], right[~leaf]):
        if np.any(children <= positions[~leaf]) or np.any(children >= n):
            raise _refuse(f"{where}: a split's child is not later in the node array")


# --- UBJSON (XGBoost's binary model format) --------------------------------------------------
_SCALARS = {
    b"i": (">i1", 1),
    b"U": (">u1", 1),
    b"I": (">i2", 2),
    b"l": (">i4", 4),
    b"L": (">i8", 8),
    b"d": (">f4", 4),
    b"D": (">f8", 8),
}


class _Reader:
    """A bounded UBJSON reader (Draft 12 as XGBoost writes it: typed, counted containers)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise _refuse("the UBJSON is truncated")
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def marker(self) -> bytes:
        return self.take(1)

    def scalar(self, marker: bytes) -> Any:
        dtype, size = _SCALARS[marker]
        return np.frombuffer(self.take(size), dtype=dtype)[0].item()

    def length(self) -> int:
        marker = self.marker()
        if marker not in _SCALARS or marker in (b"d", b"D"):
            raise _refuse("a UBJSON length is not an integer")
        value = int(self.scalar(marker))
        if value < 0 or value > len(self.data):
            raise _refuse("a UBJSON length is beyond the file")
        return value

    def string(self) -> str:
        try:
            return self.take(self.length()).decode("utf-8")
        except UnicodeDecodeError:
            raise _refuse("a UBJSON string is not UTF-8") from None

    def value(self, marker: bytes, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _refuse(f"the UBJSON nests deeper than {MAX_DEPTH}")
        if marker in _SCALARS:
            return self.scalar(marker)
        simple = {b"T": True, b"F": False, b"Z": None}
        if marker in simple:
            return simple[marker]
        if marker in (b"S", b"H"):
            return self.string()
        if marker == b"C":
            return self.take(1).decode("latin-1")
        if marker == b"[":
            return self.array(depth + 1)
        if marker == b"{":
            return self.object(depth + 1)
        raise _refuse(f"unknown UBJSON marker {marker!r}")

    def header(self) -> tuple[bytes | None, int | None]:
        kind = count = None
        if self.data[self.at : self.at + 1] == b"$":
            self.at += 1
            kind = self.marker()
        if self.data[self.at : self.at + 1] == b"#":
            self.at += 1
            count = self.length()
        if kind is not None and count is None:
            raise _refuse("a typed UBJSON container has no count")
        return kind, count

    def array(self, depth: int) -> Any:
        kind, count = self.header()
        if kind in _SCALARS and count is not None:
            dtype, size = _SCALARS[kind]
            return np.frombuffer(self.take(size * count), dtype=dtype)
        items: list[Any] = []
        while count is None or len(items) < count:
            marker = kind or self.marker()
            if count is None and marker == b"]":
                break
            items.append(self.value(marker, depth))
        return items

    def object(self, depth: int) -> dict[str, Any]:
        kind, count = self.header()
        found: dict[str, Any] = {}
        while count is None or len(found) < count:
            if count is None and self.data[self.at : self.at + 1] == b"}":
                self.at += 1
                break
            key = self.string()
            found[key] = self.value(kind or self.marker(), depth)
        return found


def read_ubjson(data: bytes) -> Any:
    """Parses UBJSON within :data:`MAX_DEPTH` levels (typed numeric arrays become numpy arrays).

    Raises:
        UnsafeArtifactError: Truncated, malformed, too deep, or trailing bytes.
    """
    reader = _Reader(data)
    try:
        value = reader.value(reader.marker(), 0)
    except struct.error:
        raise _refuse("the UBJSON is malformed") from None
    if reader.at != len(data):
        raise _refuse("bytes follow the UBJSON document")
    return value


# --- LightGBM ---------------------------------------------------------------------------------
#: The keys LightGBM writes for a tree (LightGBM 4): a tree section may hold each at most once.
LIGHTGBM_TREE_KEYS = frozenset(
    {
        "Tree", "num_leaves", "num_cat", "split_feature", "split_gain", "threshold",
        "decision_type", "left_child", "right_child", "leaf_value", "leaf_weight", "leaf_count",
        "internal_value", "internal_weight", "internal_count", "cat_boundaries", "cat_threshold",
        "is_linear", "shrinkage", "leaf_const", "num_features", "leaf_features", "leaf_coeff",
    }
)  # fmt: skip
#: Control characters LightGBM does not treat as line ends but Python's ``splitlines`` does,
#: or that a model file never holds.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029]")


def _check_lightgbm(data: bytes) -> BoosterReport:
    """Reads the text the way LightGBM does: a tree ends at its first blank line, trees are
    where ``tree_sizes`` says; anything the two readings could see differently (a repeated key,
    lines after a tree's blank line, sizes that do not match, other line breaks) is refused."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse("a LightGBM text model is UTF-8 text") from None
    if _CONTROL.search(text):
        raise _refuse("a LightGBM text model holds no control characters but tabs and newlines")
    head, _, rest = text.partition("\nTree=")
    header = _key_values(head, "the header")
    if not head.startswith("tree\n") or "max_feature_idx" not in header:
        raise _refuse("not a LightGBM text model (no 'tree' header with max_feature_idx)")
    n_features = int(_number(header["max_feature_idx"], "max_feature_idx")) + 1
    n_classes = int(_number(header.get("num_class", 1), "num_class"))
    objective = header.get("objective", "").split(" ")[0]
    if objective not in LIGHTGBM_OBJECTIVES:
        raise _refuse(f"objective '{objective}' is not one of {sorted(LIGHTGBM_OBJECTIVES)}")
    body = rest.split("\nend of trees", 1)[0]
    sections = ("Tree=" + body).split("\nTree=") if rest else []
    if not sections:
        raise _refuse("the model has no trees")
    sections = [sections[0], *("Tree=" + section for section in sections[1:])]
    _check_tree_sizes(header.get("tree_sizes"), sections)
    nodes = sum(_check_lightgbm_tree(section, n_features) for section in sections)
    kind = LIGHTGBM_OBJECTIVES[objective]
    _check_lightgbm_groups(header, kind, n_classes, len(sections))
    classes = n_classes if kind == "multiclass" else (2 if kind == "binary" else 1)
    return BoosterReport("lightgbm", kind, objective, n_features, classes, len(sections), nodes)


def _check_lightgbm_groups(header: dict[str, str], kind: str, n_classes: int, trees: int) -> None:
    """LightGBM indexes its output by ``num_tree_per_iteration`` unchecked: one tree per class
    and iteration for a multiclass model, one otherwise, and whole iterations of trees."""
    per_iteration = int(_number(header.get("num_tree_per_iteration", 1), "num_tree_per_iteration"))
    expected = n_classes if kind == "multiclass" else 1
    if kind != "multiclass" and n_classes != 1:
        raise _refuse(f"a {kind} model has one output, not num_class={n_classes}")
    if expected < 1 or per_iteration != expected or trees % per_iteration:
        raise _refuse("num_tree_per_iteration does not match the classes and the trees")


def _check_tree_sizes(declared: str | None, sections: list[str]) -> None:
    """LightGBM reads tree ``i`` at the offset the sizes before it add up to: they must be the
    sizes of the trees checked here (each up to the next ``Tree=`` or ``end of trees``)."""
    if declared is None:
        return
    actual = [len(section.encode("utf-8")) + 1 for section in sections]
    if declared.split() != [str(size) for size in actual]:
        raise _refuse("tree_sizes does not match the trees in the file")


def _key_values(block: str, where: str) -> dict[str, str]:
    """``key=value`` lines, each key once (LightGBM and a dict would keep different copies)."""
    found: dict[str, str] = {}
    for line in block.split("\n"):
        if "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if key in found:
            raise _refuse(f"{where} names '{key[:40]}' twice")
        found[key] = value
    return found


def _tree_lines(section: str, where: str) -> str:
    """A tree's lines up to its blank line, where LightGBM stops reading it; only blank lines
    may follow, and only the keys LightGBM writes."""
    lines = section.split("\n")
    end = lines.index("") if "" in lines else len(lines)
    if any(line.strip() for line in lines[end:]):
        raise _refuse(f"{where}: lines follow the blank line that ends the tree")
    keys = [line.split("=", 1)[0].strip() for line in lines[:end]]
    unknown = sorted(set(keys) - LIGHTGBM_TREE_KEYS)
    if unknown or any("=" not in line for line in lines[:end]):
        raise _refuse(f"{where}: a line is not one of LightGBM's tree fields")
    return "\n".join(lines[:end])


def _lightgbm_ints(values: dict[str, str], name: str, where: str) -> np.ndarray:
    try:
        return np.asarray([int(v) for v in values.get(name, "").split()], dtype=np.int64)
    except ValueError:
        raise _refuse(f"{where}: '{name}' is not integers") from None


def _check_lightgbm_tree(section: str, n_features: int) -> int:
    first_line = section.split("\n", 1)[0]
    where = f"tree {first_line.removeprefix('Tree=')[:20]}"
    values = _key_values(_tree_lines(section, where), where)
    leaves = int(_number(values.get("num_leaves"), f"{where}: num_leaves"))
    if int(_number(values.get("num_cat", 0), "num_cat")) != 0:
        raise _refuse(f"{where} has categorical splits, which TreeSHAP cannot explain")
    if values.get("is_linear", "0") != "0":
        raise _refuse(f"{where} is a linear tree, which TreeSHAP cannot explain")
    if leaves < 1:
        raise _refuse(f"{where}: num_leaves must be at least 1")
    if leaves == 1:
        return 1
    left = _lightgbm_ints(values, "left_child", where)
    right = _lightgbm_ints(values, "right_child", where)
    features = _lightgbm_ints(values, "split_feature", where)
    inner = leaves - 1
    if {len(left), len(right), len(features)} != {inner}:
        raise _refuse(f"{where}: its node arrays do not hold num_leaves - 1 splits")
    for children in (left, right):
        split = children >= 0
        if np.any(children[split] <= np.arange(inner)[split]) or np.any(children >= inner):
            raise _refuse(f"{where}: a split's child is not later in the node array")
        if np.any(~children[~split] >= leaves):
            raise _refuse(f"{where}: a leaf index is beyond num_leaves")
    if np.any((features < 0) | (features >= n_features)):
        raise _refuse(f"{where} splits on a feature the model does not read")
    _check_decisions(_lightgbm_ints(values, "decision_type", where), inner, where)
    return 2 * leaves - 1


def _check_decisions(decisions: np.ndarray, inner: int, where: str) -> None:
    """Bit 0 marks a categorical split (refused: ``num_cat`` is 0); bits 2-3 the missing-value
    type (0, 1 or 2); nothing above bit 3."""
    if (
        len(decisions) != inner
        or np.any((decisions < 0) | (decisions > 15) | (decisions & 1 == 1))
        or np.any((decisions >> 2) & 3 == 3)
    ):
        raise _refuse(f"{where}: a decision_type LightGBM does not write for numeric splits")


# --- loading (explainer image only: xgboost and lightgbm are imported here) ------------------
class BoosterModel:
    """A loaded XGBoost or LightGBM booster with the scikit-learn methods the explainers use.

    ``decision_function`` is the raw margin (log-odds for binary models), the space TreeSHAP
    explains; ``predict_proba`` the library's own probabilities; ``predict`` the regression
    value or the class index.

    Attributes:
        booster: ``xgboost.Booster`` or ``lightgbm.Booster``.
        report: What the check found in the file.
        classes_: Class indices (classifiers), ``n_features_in_``: inputs.
    """

    def __init__(self, booster: Any, report: BoosterReport) -> None:
        self.booster = booster
        self.report = report
        self.n_features_in_ = report.n_features
        if report.kind != "regression":
            self.classes_ = np.arange(report.n_classes)

    def _raw(self, X: Any, margin: bool) -> np.ndarray:
        data = np.asarray(X, dtype=float)
        if self.report.library == "lightgbm":
            return np.asarray(self.booster.predict(data, raw_score=margin), dtype=float)
        import xgboost

        # One thread, as the booster: a default DMatrix starts an OpenMP team (see path_dependent).
        matrix = xgboost.DMatrix(data, nthread=1)
        return np.asarray(self.booster.predict(matrix, output_margin=margin), dtype=float)

    def decision_function(self, X: Any) -> np.ndarray:
        """The raw margin: one value per row (binary) or one per class."""
        return self._raw(X, margin=True)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, one column per class."""
        found = self._raw(X, margin=False)
        if self.report.kind == "binary":
            return np.stack([1.0 - found, found], axis=1)
        return found.reshape(len(found), -1)

    def predict(self, X: Any) -> np.ndarray:
        """The regression value, or each row's most probable class index."""
        if self.report.kind == "regression":
            return self._raw(X, margin=False)
        return np.argmax(self.predict_proba(X), axis=1)


def load_booster(fmt: str, data: bytes, report: BoosterReport) -> BoosterModel:
    """Loads a checked booster file with its own library (never pickle).

    Raises:
        UnsafeArtifactError: The library refuses the file.
    """
    try:
        if report.library == "lightgbm":
            import lightgbm

            booster: Any = lightgbm.Booster(model_str=data.decode("utf-8"))
            _check_loaded_lightgbm(booster, report)
            # Every prediction (ours and shap's pred_contrib) on one thread, as XGBoost's: an
            # OpenMP team at its default waits for a second core on a busy machine.
            booster.predict = functools.partial(booster.predict, num_threads=1)
        else:
            import xgboost

            booster = xgboost.Booster()
            booster.load_model(bytearray(data))
            booster.set_param({"nthread": 1})
    except ImportError as exc:
        raise _refuse(f"{exc.name} is not installed where this model is loaded") from None
    except UnsafeArtifactError:
        raise
    except Exception as exc:  # the file is user data: any failure is the file's
        raise _refuse(f"{report.library} could not load it ({type(exc).__name__})") from None
    return BoosterModel(booster, report)


def _check_loaded_lightgbm(booster: Any, report: BoosterReport) -> None:
    """The trees LightGBM actually loaded, walked before any prediction: as many inputs and
    trees as the checked text, every split on one of those inputs (LightGBM indexes the row
    with a split's feature unchecked)."""
    dumped = booster.dump_model()
    trees = dumped.get("tree_info", [])
    if booster.num_feature() != report.n_features or len(trees) != report.trees:
        raise _refuse("the loaded model differs from the checked file")
    for tree in trees:
        pending = [tree.get("tree_structure", {})]
        while pending:
            node = pending.pop()
            if "split_feature" not in node:
                continue
            if not 0 <= int(node["split_feature"]) < report.n_features:
                raise _refuse("the loaded model splits on a feature it does not read")
            pending += [node.get("left_child", {}), node.get("right_child", {})]
