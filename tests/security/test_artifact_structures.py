"""Compiled structures are checked against the estimator that calls them, at registration.

Each forged file below is a real fitted model with one array or schema value changed the way an
attacker would. The first group of tests shows, in a child process and with plain skops and
scikit-learn (or shap), that the file is dangerous (SIGSEGV, or memory far past what it declares);
the others show the service refuses it with 422 at registration (nothing stored), and that the
load path refuses the same bytes planted in S3 behind a registered version before skops reads
them (so nothing here predicts with a forged model in the test process).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import os
import re
import select
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chalicelib.core import aws
from chalicelib.core.config import get_settings
from chalicelib.registry.errors import UnsafeArtifactError
from chalicelib.registry.integrity import MAX_TREE_DEPTH, check_loaded
from chalicelib.registry.safety import inspect_artifact
from chalicelib.registry.service import get_model_registry
from tests.conftest import Http
from tests.security import forge
from tests.security.helpers import model

FEATURES = ["x0", "x1", "x2"]


def _data(rows: int = 300) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(0).normal(size=(rows, 3))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def _load(members: dict[str, bytes], node: dict[str, Any]) -> np.ndarray:
    return np.load(io.BytesIO(members[node["file"]]), allow_pickle=False)


def _store(members: dict[str, bytes], node: dict[str, Any], array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    members[node["file"]] = buffer.getvalue()


# --- forged files ------------------------------------------------------------------------------


def tree_claiming_1e8_features() -> bytes:
    """A forest whose first tree says Tree(n_features=10**8) and splits on feature 10**8 - 1."""
    from sklearn.ensemble import RandomForestClassifier

    schema, members = forge.unpack(
        forge.dumps(RandomForestClassifier(n_estimators=3, random_state=0).fit(*_data()))
    )
    tree = forge.attribute(schema, "estimators_")["content"][0]["content"]["content"]["tree_"]
    tree["__reduce__"]["args"]["content"][0] = forge.value(10**8)
    nodes = tree["content"]["content"]["nodes"]
    array = _load(members, nodes)
    array["feature"][0] = 10**8 - 1
    _store(members, nodes, array)
    return forge.pack(schema, members)


def boosting_stage_claiming_1e8_inputs() -> bytes:
    """A GradientBoosting whose second tree (estimator and Tree alike) says it takes 10**8
    inputs: the model validates X against its first tree only and its compiled stage loop then
    calls the second unvalidated with 3 columns."""
    from sklearn.ensemble import GradientBoostingClassifier

    schema, members = forge.unpack(
        forge.dumps(GradientBoostingClassifier(n_estimators=3, max_depth=2).fit(*_data()))
    )
    second = forge.attribute(schema, "estimators_")["content"][1]["content"][0]["content"]
    second["content"]["n_features_in_"] = forge.value(10**8)
    tree = second["content"]["tree_"]
    tree["__reduce__"]["args"]["content"][0] = forge.value(10**8)
    nodes = tree["content"]["content"]["nodes"]
    array = _load(members, nodes)
    array["feature"][0] = 10**8 - 1
    _store(members, nodes, array)
    return forge.pack(schema, members)


def predictor_under_a_decoy_owner() -> bytes:
    """An HGB predictor split on feature 10**8 - 1, also stored (same id, same content) under a
    StandardScaler claiming 10**8 inputs in an attribute the model never has."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    schema, members = forge.unpack(
        forge.dumps(HistGradientBoostingClassifier(max_iter=3).fit(*_data()))
    )
    predictor = forge.attribute(schema, "_predictors")["content"][0]["content"][0]
    nodes = predictor["content"]["content"]["nodes"]
    array = _load(members, nodes)
    array["feature_idx"][np.flatnonzero(array["is_leaf"] == 0)[0]] = 10**8 - 1
    _store(members, nodes, array)
    decoy = forge.node(
        "ObjectNode",
        "sklearn.preprocessing._data.StandardScaler",
        content=forge.dict_of(n_features_in_=forge.value(10**8), held_=copy.deepcopy(predictor)),
    )
    schema["content"]["content"]["zz_"] = decoy
    schema["content"]["key_types"]["content"].append(forge.type_node("builtins.str"))
    return forge.pack(schema, members)


def honest_predictor_also_under_a_decoy() -> bytes:
    """An unchanged HGB predictor also stored (same id) in an attribute the model never has:
    ambiguous, so refused, whatever the copy holds."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    schema, members = forge.unpack(
        forge.dumps(HistGradientBoostingClassifier(max_iter=3).fit(*_data()))
    )
    predictor = forge.attribute(schema, "_predictors")["content"][0]["content"][0]
    schema["content"]["content"]["zz_"] = forge.list_of(copy.deepcopy(predictor))
    schema["content"]["key_types"]["content"].append(forge.type_node("builtins.str"))
    return forge.pack(schema, members)


def categorical_split_on_a_numeric_feature() -> bytes:
    """An HGB without categorical features whose root split is made categorical: its unknown-
    category lookup reads row 0 of a bitset table with no rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    schema, members = forge.unpack(
        forge.dumps(HistGradientBoostingClassifier(max_iter=3).fit(*_data()))
    )
    predictor = forge.attribute(schema, "_predictors")["content"][0]["content"][0]
    state = predictor["content"]["content"]
    array = _load(members, state["nodes"])
    array["is_categorical"][0] = 1
    array["bitset_idx"][0] = 0
    _store(members, state["nodes"], array)
    _store(members, state["raw_left_cat_bitsets"], np.zeros((1, 8), dtype=np.uint32))
    return forge.pack(schema, members)


def svc_precomputed_support_1e9() -> bytes:
    """SVC(kernel='precomputed') whose support indices are 10**9 (libsvm reads X[row, 10**9])."""
    from sklearn.svm import SVC

    A = np.random.default_rng(0).normal(size=(20, 3))
    schema, members = forge.unpack(
        forge.dumps(SVC(kernel="precomputed").fit(A @ A.T, (A[:, 0] > 0).astype(int)))
    )
    support = forge.attribute(schema, "support_")
    _store(members, support, np.full_like(_load(members, support), 10**9))
    return forge.pack(schema, members)


def svc_precomputed_claiming_2e8_support_vectors() -> bytes:
    """A precomputed-kernel SVC whose class counts add up to 2 * 10**8 support vectors (it holds
    11); scikit-learn's own count check skips precomputed kernels."""
    from sklearn.svm import SVC

    A = np.random.default_rng(0).normal(size=(20, 3))
    schema, members = forge.unpack(
        forge.dumps(SVC(kernel="precomputed").fit(A @ A.T, (A[:, 0] > 0).astype(int)))
    )
    counts = forge.attribute(schema, "_n_support")
    _store(members, counts, np.full_like(_load(members, counts), 10**8))
    return forge.pack(schema, members)


def sparse_coef_indices_1e9() -> bytes:
    """LogisticRegression.sparsify()'d, its CSR coef_ with column indices 10**9."""
    from sklearn.linear_model import LogisticRegression

    X, y = _data(60)
    estimator = LogisticRegression().fit(X, y)
    estimator.sparsify()
    schema, members = forge.unpack(forge.dumps(estimator))
    name = forge.attribute(schema, "coef_")["file"]
    with zipfile.ZipFile(io.BytesIO(members[name])) as npz:
        inner = {member: npz.read(member) for member in npz.namelist()}
    indices = np.load(io.BytesIO(inner["indices.npy"]), allow_pickle=False)
    buffer = io.BytesIO()
    np.save(buffer, np.full_like(indices, 10**9), allow_pickle=False)
    inner["indices.npy"] = buffer.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as npz:
        for member, content in inner.items():
            npz.writestr(member, content)
    members[name] = out.getvalue()
    return forge.pack(schema, members)


def gradient_boosting_two_trees_per_stage() -> bytes:
    """A binary GradientBoostingClassifier (one raw column) given two trees per stage: the
    compiled stage loop writes a second column past the end of its output."""
    from sklearn.ensemble import GradientBoostingClassifier

    schema, members = forge.unpack(
        forge.dumps(GradientBoostingClassifier(n_estimators=3, max_depth=2).fit(*_data()))
    )
    grid = forge.attribute(schema, "estimators_")
    for row in grid["content"]:
        row["content"].append(copy.deepcopy(row["content"][0]))
    grid["shape"]["content"][1] = forge.value(2)
    return forge.pack(schema, members)


def chain_tree(depth: int) -> bytes:
    """A genuine decision tree that is a chain ``depth`` splits deep (each split: a leaf on the
    right, the next split on the left)."""
    from sklearn.tree import DecisionTreeClassifier

    schema, members = forge.unpack(
        forge.dumps(DecisionTreeClassifier(max_depth=2, random_state=0).fit(*_data()))
    )
    state = forge.attribute(schema, "tree_")["content"]["content"]
    proto = _load(members, state["nodes"])
    count = 2 * depth + 1
    nodes = np.zeros(count, dtype=proto.dtype)
    i = np.arange(depth)
    nodes["left_child"] = nodes["right_child"] = -1
    nodes["feature"], nodes["threshold"] = -2, -2.0
    nodes["left_child"][:depth] = np.where(i < depth - 1, i + 1, 2 * depth)
    nodes["right_child"][:depth] = depth + i
    nodes["feature"][:depth] = 0
    nodes["threshold"][:depth] = 1e9
    nodes["impurity"], nodes["n_node_samples"], nodes["weighted_n_node_samples"] = 0.5, 10, 10.0
    _store(members, state["nodes"], nodes)
    _store(members, state["values"], np.full((count, 1, 2), 0.5))
    state["node_count"] = forge.value(count)
    state["max_depth"] = forge.value(depth)
    return forge.pack(schema, members, compression=zipfile.ZIP_DEFLATED)


def one_member_read_by_40_arrays() -> bytes:
    """40 array nodes (distinct ids) all reading one 16 MiB member: skops builds it 40 times."""
    schema, members = forge.unpack(forge.dumps(forge.fitted_model()))
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(2 * 2**20), allow_pickle=False)
    members["big.npy"] = buffer.getvalue()
    nodes = [
        forge.node("NdArrayNode", "numpy.ndarray", type="numpy", file="big.npy") for _ in range(40)
    ]
    schema["content"]["content"]["gadget_"] = forge.node("ListNode", "builtins.list", content=nodes)
    schema["content"]["key_types"]["content"].append(forge.type_node("builtins.str"))
    return forge.pack(schema, members, compression=zipfile.ZIP_DEFLATED)


def knn_kdtree_idx_1e9() -> bytes:
    """KNeighborsClassifier(algorithm="kd_tree") whose KDTree index array holds 10**9."""
    from sklearn.neighbors import KNeighborsClassifier

    schema, members = forge.unpack(
        forge.dumps(KNeighborsClassifier(algorithm="kd_tree").fit(*_data()))
    )
    idx_array = forge.attribute(schema, "_tree")["content"]["content"][1]
    _store(members, idx_array, np.full_like(_load(members, idx_array), 10**9))
    return forge.pack(schema, members)


# name: (builder, width of the model's input, what the refusal says)
FORGED: dict[str, tuple[Callable[[], bytes], int, str]] = {
    "tree-claiming-1e8-features": (tree_claiming_1e8_features, 3, "called with 3"),
    "boosting-stage-claiming-1e8-inputs": (
        boosting_stage_claiming_1e8_inputs,
        3,
        "built for another number of inputs",
    ),
    "predictor-under-a-decoy-owner": (
        predictor_under_a_decoy_owner,
        3,
        "a feature the model does not have",
    ),
    "honest-predictor-also-under-a-decoy": (
        honest_predictor_also_under_a_decoy,
        3,
        "outside the model that predicts with it",
    ),
    "categorical-split-on-a-numeric-feature": (
        categorical_split_on_a_numeric_feature,
        3,
        "no known categories",
    ),
    "svc-precomputed-support-1e9": (svc_precomputed_support_1e9, 20, "leave its kernel"),
    "svc-precomputed-claiming-2e8-vectors": (
        svc_precomputed_claiming_2e8_support_vectors,
        20,
        "class counts",
    ),
    "sparse-coef-indices-1e9": (sparse_coef_indices_1e9, 3, "full format check"),
    "gradient-boosting-two-trees-per-stage": (
        gradient_boosting_two_trees_per_stage,
        3,
        "stages × outputs grid",
    ),
    "tree-200000-levels-deep": (
        lambda: chain_tree(200_000),
        3,
        f"more than {MAX_TREE_DEPTH} levels deep",
    ),
    "one-member-read-by-40-arrays": (one_member_read_by_40_arrays, 3, "more than one object"),
    "knn-kdtree-index-1e9": (knn_kdtree_idx_1e9, 3, "sklearn.neighbors._kd_tree.KDTree"),
}

# --- the files are dangerous to plain scikit-learn ----------------------------------------------

_PLAIN = """
import resource, sys
import numpy as np, skops.io as sio
data = open({path!r}, "rb").read()
model = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
{use}
print("SURVIVED", flush=True)
"""

# How each file is used by its victim: predicting (most), TreeSHAP (the chain).
_USE = {
    "tree-200000-levels-deep": "import shap; shap.TreeExplainer(model)",
    "svc-precomputed-support-1e9": "model.predict(np.ones((8, 20)))",
    "svc-precomputed-claiming-2e8-vectors": "model.predict(np.ones((8, 20)))",
}
# These read or write a few bytes past small arrays (undefined behaviour that needn't crash at
# once) or are refused for being ambiguous; the memory case has its own test.
_NOT_CRASHING = {
    "categorical-split-on-a-numeric-feature",
    "gradient-boosting-two-trees-per-stage",
    "honest-predictor-also-under-a-decoy",
    "one-member-read-by-40-arrays",
}
_CRASHING = sorted(set(FORGED) - _NOT_CRASHING)


# With numpy, scipy and scikit-learn imported, the child's address space may grow by this much
# over the peak the imports reached (``VmPeak``), and no more.
_HEADROOM = """
import resource, sklearn, skops.io, scipy.sparse
peak = next(r for r in open("/proc/self/status") if r.startswith("VmPeak")).split()[1]
limit = int(peak) * 1024 + {headroom}
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
"""


# One interpreter imports numpy, scipy, scikit-learn, skops and shap once and forks a child per
# case (an interpreter start with those imports took 2-5 s of each case on a loaded machine). A
# child runs the case's script with its stdout and stderr in files and exits; the parent reports
# the child's exit code, negative for a signal, as subprocess does. One BLAS thread: a forked
# child has no thread pool to hand work to.
_FORK_SERVER = """
import os, sys, traceback
import numpy, scipy.sparse, sklearn, sklearn.tree, sklearn.svm, sklearn.linear_model
import sklearn.ensemble, sklearn.neighbors, skops.io, shap
print("READY", flush=True)
for line in sys.stdin:
    script = line.strip()
    pid = os.fork()
    if pid == 0:
        for fd, suffix in ((1, ".out"), (2, ".err")):
            os.dup2(os.open(script + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        code = 0
        try:
            exec(compile(open(script).read(), script, "exec"), {"__name__": "__main__"})
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
os._exit(0)  # no slow interpreter teardown of everything imported above
"""


class _Plain:
    """Runs scripts in children forked from :data:`_FORK_SERVER` (``subprocess.run``'s result)."""

    def __init__(self) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.server = subprocess.Popen(
            [sys.executable, "-c", _FORK_SERVER], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert self._line() == "READY"

    def _line(self) -> str:
        assert self.server.stdout is not None
        ready, _, _ = select.select([self.server.stdout], [], [], 300)
        assert ready, "the fork server gave no answer in 300 s"
        return self.server.stdout.readline().strip()

    def run(self, script: str, where: Path) -> subprocess.CompletedProcess[bytes]:
        path = where / "case.py"
        path.write_text(script)
        assert self.server.stdin is not None
        self.server.stdin.write(f"{path}\n")
        self.server.stdin.flush()
        code = int(self._line())
        out, err = (Path(f"{path}{suffix}").read_bytes() for suffix in (".out", ".err"))
        return subprocess.CompletedProcess([str(path)], code, out, err)

    def close(self) -> None:
        assert self.server.stdin is not None
        self.server.stdin.close()
        self.server.wait(timeout=60)


@pytest.fixture(scope="module")
def plain() -> Iterator[_Plain]:
    server = _Plain()
    yield server
    server.close()


def _run_plain(
    plain: _Plain, path: Path, use: str, headroom_bytes: int | None = None
) -> subprocess.CompletedProcess[bytes]:
    script = textwrap.dedent(_PLAIN.format(path=str(path), use=use))
    if headroom_bytes is not None:
        script = _HEADROOM.format(headroom=headroom_bytes) + script
    return plain.run(script, path.parent)


@pytest.mark.parametrize("name", _CRASHING)
def test_the_forged_file_crashes_plain_scikit_learn(
    plain: _Plain, tmp_path: Path, name: str
) -> None:
    builder, width, _ = FORGED[name]
    path = tmp_path / "forged.skops"
    path.write_bytes(builder())
    use = _USE.get(name, f"model.predict(np.full((64, {width}), 0.1))")
    done = _run_plain(plain, path, use)
    assert done.returncode < 0, (done.returncode, done.stdout[-500:], done.stderr[-2000:])


def test_the_shared_member_file_takes_far_more_memory_than_it_declares(
    plain: _Plain, tmp_path: Path
) -> None:
    data = one_member_read_by_40_arrays()
    path = tmp_path / "forged.skops"
    path.write_bytes(data)
    # 40 copies of a 16 MiB array (plus a 16 MiB buffer each) do not fit in 600 MiB over the
    # interpreter with numpy, scipy and scikit-learn imported; one copy does.
    done = _run_plain(plain, path, "pass", headroom_bytes=600 << 20)
    assert done.returncode != 0 and b"MemoryError" in done.stderr, done.stderr[-2000:]


# --- the service refuses them -------------------------------------------------------------------


def _body(data: bytes, width: int) -> dict[str, Any]:
    names = FEATURES if width == 3 else [f"x{i}" for i in range(width)]
    return {
        "artifact_base64": base64.b64encode(data).decode(),
        "format": "skops",
        "task": "classification",
        "feature_names": names,
        "background_sample": [[0.5] * width, [1.0] * width],
    }


@pytest.mark.parametrize("name", sorted(FORGED))
def test_the_forged_file_is_refused_at_registration_and_nothing_is_stored(
    module_http: Http, name: str
) -> None:
    builder, width, says = FORGED[name]
    model_id = model(module_http)
    response = module_http.call("POST", f"/models/{model_id}/versions", _body(builder(), width))
    assert response.status_code == 422, response.data
    assert response.data["error"] == "unsafe_artifact"
    assert says in response.data["message"]
    assert module_http.call("GET", f"/models/{model_id}/versions").data["versions"] == []


@pytest.mark.parametrize("name", sorted(FORGED))
def test_the_forged_file_planted_in_s3_is_refused_by_the_load_path(
    module_http: Http, name: str
) -> None:
    from chalicelib.registry.repository import ModelVersionTable

    builder, width, says = FORGED[name]
    data = builder()
    model_id = model(module_http)
    honest = forge.dumps(forge.fitted_model())
    registered = module_http.call("POST", f"/models/{model_id}/versions", _body(honest, 3))
    assert registered.status_code == 201, registered.data
    digest = hashlib.sha256(data).hexdigest()
    key = f"artifacts/{model_id}/{digest}.skops"
    aws.client("s3").put_object(Bucket=get_settings().models_bucket, Key=key, Body=data)
    ModelVersionTable.get(model_id, 1).update(
        actions=[
            ModelVersionTable.artifact_key.set(key),
            ModelVersionTable.artifact_sha256.set(digest),
            ModelVersionTable.artifact_size.set(len(data)),
        ]
    )
    # The load path itself (not an explanation, which would predict if the check regressed).
    with pytest.raises(UnsafeArtifactError, match=re.escape(says)):
        get_model_registry().load_model(model_id, 1)


@pytest.mark.parametrize("name", ["tree-claiming-1e8-features", "predictor-under-a-decoy-owner"])
def test_the_loaded_model_check_finds_the_owner_from_the_structure_too(name: str) -> None:
    import skops.io as sio

    data = FORGED[name][0]()
    loaded = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    with pytest.raises(UnsafeArtifactError, match="read outside its arrays"):
        check_loaded(loaded)


# --- the depth limit ----------------------------------------------------------------------------


def test_a_tree_one_level_over_the_limit_is_refused() -> None:
    with pytest.raises(UnsafeArtifactError, match=f"more than {MAX_TREE_DEPTH} levels deep"):
        inspect_artifact(chain_tree(MAX_TREE_DEPTH + 1))


def test_a_tree_at_the_depth_limit_is_accepted_and_treeshap_explains_it(
    plain: _Plain, tmp_path: Path
) -> None:
    data = chain_tree(MAX_TREE_DEPTH)
    inspect_artifact(data)
    path = tmp_path / "chain.skops"
    path.write_bytes(data)
    use = (
        "import shap\n"
        "print(shap.TreeExplainer(model).shap_values(np.zeros((2, 3)), check_additivity=False))"
    )
    done = _run_plain(plain, path, use)
    assert done.returncode == 0 and b"SURVIVED" in done.stdout, done.stderr[-2000:]


def test_a_declared_depth_that_is_not_the_trees_depth_is_refused() -> None:
    def lie(schema: dict[str, Any]) -> None:
        state = forge.attribute(schema, "tree_")["content"]["content"]
        state["max_depth"] = forge.value(1)

    data = forge.edit_schema(chain_tree(5), lie)
    with pytest.raises(UnsafeArtifactError, match="declared depth"):
        inspect_artifact(data)


# --- neighbour trees are not on the allow-list --------------------------------------------------


@pytest.mark.parametrize("algorithm", ["auto", "kd_tree", "ball_tree"])
def test_real_neighbour_models_holding_a_tree_are_refused_naming_it(algorithm: str) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    data = forge.dumps(KNeighborsClassifier(algorithm=algorithm).fit(*_data()))
    with pytest.raises(UnsafeArtifactError, match=r"neighbors\._(kd|ball)_tree\.(KD|Ball)Tree"):
        inspect_artifact(data)


def test_a_brute_force_neighbour_model_is_accepted_and_predicts_as_fitted() -> None:
    import skops.io as sio
    from sklearn.neighbors import KNeighborsClassifier

    X, y = _data()
    fitted = KNeighborsClassifier(algorithm="brute").fit(X, y)
    data = forge.dumps(fitted)
    loaded = sio.loads(data, trusted=inspect_artifact(data).types)
    check_loaded(loaded)
    assert (loaded.predict_proba(X[:50]) == fitted.predict_proba(X[:50])).all()
