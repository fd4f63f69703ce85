"""A file of trusted types can still hold trees whose indices leave their arrays: scikit-learn's
compiled prediction would read arbitrary memory (it crashes the process, as the first test shows
with plain skops). The load path refuses such trees before anything predicts, and resets
``n_jobs`` so a file cannot make one prediction start thousands of threads."""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chalicelib.core import aws
from chalicelib.core.config import get_settings
from chalicelib.registry.errors import UnsafeArtifactError
from chalicelib.registry.integrity import check_loaded
from tests.conftest import Http
from tests.security import forge
from tests.security.helpers import model

FEATURES = ["x0", "x1", "x2"]


def _data() -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(0).normal(size=(300, 3))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def _forest() -> bytes:
    from sklearn.ensemble import RandomForestClassifier

    return forge.dumps(RandomForestClassifier(n_estimators=3, random_state=0).fit(*_data()))


def _boosting() -> bytes:
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = _data()
    X[:, 2] = np.arange(300) % 4
    return forge.dumps(
        HistGradientBoostingClassifier(max_iter=3, categorical_features=[2]).fit(X, y)
    )


def _edit_array(data: bytes, path: Callable[[dict[str, Any]], dict[str, Any]], edit: Any) -> bytes:
    """``data`` with the array at ``path(schema)`` changed by ``edit(array)`` (in place)."""
    schema, members = forge.unpack(data)
    name = path(schema)["file"]
    array = np.load(io.BytesIO(members[name]), allow_pickle=False)
    edit(array)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    members[name] = buffer.getvalue()
    return forge.pack(schema, members)


def _tree_nodes(schema: dict[str, Any]) -> dict[str, Any]:
    first = forge.attribute(schema, "estimators_")["content"][0]
    return first["content"]["content"]["tree_"]["content"]["content"]["nodes"]


def _predictor_nodes(schema: dict[str, Any]) -> dict[str, Any]:
    first = forge.attribute(schema, "_predictors")["content"][0]["content"][0]
    return first["content"]["content"]["nodes"]


def _root_split(field: str, value: int) -> Callable[[Any], None]:
    def edit(nodes: Any) -> None:
        nodes[field][0] = value

    return edit


FORGED: dict[str, Callable[[], bytes]] = {
    "decision-tree-split-on-feature-1000000": lambda: _edit_array(
        _forest(), _tree_nodes, _root_split("feature", 1_000_000)
    ),
    "decision-tree-children-outside-the-array": lambda: _edit_array(
        _forest(),
        _tree_nodes,
        lambda n: n[["left_child", "right_child"]].__setitem__(0, (10**9, 10**9)),
    ),
    "decision-tree-child-pointing-back-at-its-parent": lambda: _edit_array(
        _forest(), _tree_nodes, _root_split("left_child", 0)
    ),
    "boosting-tree-split-on-feature-1000000": lambda: _edit_array(
        _boosting(), _predictor_nodes, _root_split("feature_idx", 1_000_000)
    ),
    "boosting-tree-children-outside-the-array": lambda: _edit_array(
        _boosting(), _predictor_nodes, _root_split("right", 4_000_000)
    ),
    "boosting-tree-category-set-it-does-not-hold": lambda: _edit_array(
        _boosting(),
        _predictor_nodes,
        lambda n: (n["is_categorical"].__setitem__(0, 1), n["bitset_idx"].__setitem__(0, 10**6)),
    ),
}


def test_a_split_on_a_feature_outside_the_input_crashes_plain_scikit_learn(tmp_path: Path) -> None:
    forged = tmp_path / "forged.skops"
    forged.write_bytes(FORGED["decision-tree-split-on-feature-1000000"]())
    script = textwrap.dedent(
        f"""
        import numpy as np, skops.io as sio
        data = open({str(forged)!r}, "rb").read()
        model = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
        model.predict(np.zeros((64, 3)))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode < 0, done  # killed by a signal (SIGSEGV), not an exception


@pytest.mark.parametrize("name", sorted(FORGED))
def test_a_forged_tree_is_refused_by_the_load_path(name: str) -> None:
    import skops.io as sio

    data = FORGED[name]()
    loaded = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    with pytest.raises(UnsafeArtifactError, match="read outside its arrays"):
        check_loaded(loaded)


@pytest.mark.parametrize("name", sorted(FORGED))
def test_a_forged_tree_planted_in_s3_gets_a_422_and_the_process_lives(
    module_http: Http, name: str
) -> None:
    from chalicelib.registry.repository import ModelVersionTable

    data = FORGED[name]()
    model_id = model(module_http)
    body = {
        "artifact_base64": base64.b64encode(_forest()).decode(),
        "format": "skops",
        "task": "classification",
        "feature_names": FEATURES,
        "background_sample": [[0.0, 0.5, 1.0], [1.0, 0.0, -1.0]],
    }
    registered = module_http.call("POST", f"/models/{model_id}/versions", body)
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
    request = {"model_id": model_id, "model_version": 1, "input_data": dict.fromkeys(FEATURES, 0)}
    response = module_http.call("POST", "/explanations", request)
    assert response.status_code == 422, response.data
    assert response.data["error"] == "unsafe_artifact"
    assert "read outside its arrays" in response.data["message"]


def test_real_tree_models_pass_the_tree_check() -> None:
    import skops.io as sio

    for data in (_forest(), _boosting()):
        loaded = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
        check_loaded(loaded)
        loaded.predict(np.zeros((4, 3)))


def test_a_file_cannot_make_one_prediction_start_thousands_of_threads() -> None:
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=200, random_state=0).fit(*_data())
    forest.n_jobs = 5000
    data = forge.dumps(forest)
    loaded = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    check_loaded(loaded)
    assert loaded.n_jobs is None
    peak = threading.active_count()
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, threading.active_count())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        loaded.predict_proba(np.zeros((8, 3)))
    finally:
        stop.set()
        watcher.join()
    assert peak <= threading.active_count() + 2
