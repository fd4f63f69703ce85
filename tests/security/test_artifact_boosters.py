"""Booster files the libraries would trust blindly (second attack round, issue 12).

LightGBM: a text model is read the way LightGBM reads it.

The check used to read each tree's ``key=value`` lines into a dict, so a repeated key kept its
*last* value; LightGBM stops reading a tree at its first blank line, so it keeps the *first*
block. A real model whose first tree holds a block splitting on feature 10^9, then a blank line,
then the genuine lines, passed the check (201) and crashed the process with SIGSEGV on the first
prediction. Each forged file below is a real trained model with one change; the first test shows
plain LightGBM crashes on the blank-line forgery (and on a ``num_tree_per_iteration`` of 10^6)
in a child process, the others that the service
refuses every variant with ``422 unsafe_artifact`` over HTTP, and that a booster whose loaded
trees disagree with the checked file is refused after loading, before any prediction.

XGBoost: ``tree_info`` (the output group each tree adds to) and ``parents`` are used by
XGBoost's compiled code as unchecked indices; a real multiclass model with ``tree_info[0] =
10^9`` or ``-5``, or a ``parents`` entry of 10^9 or -7, passed the check (201) and crashes plain
XGBoost (SIGSEGV or heap corruption) when it predicts.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chalicelib.registry.boosters import BoosterReport, check_booster, load_booster
from chalicelib.registry.errors import UnsafeArtifactError
from tests.conftest import Http
from tests.security.helpers import model

FEATURES = ["x0", "x1", "x2"]
HUGE = 1_000_000_000


def _real() -> str:
    import lightgbm

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = X[:, 0] + X[:, 1] * X[:, 2]
    params = {"objective": "regression", "num_leaves": 4, "verbose": -1, "seed": 0}
    return lightgbm.train(params, lightgbm.Dataset(X, y), 3).model_to_string()


REAL = _real()


def _tree(text: str, index: int) -> str:
    """Tree ``index``'s text, from ``Tree=`` to the blank line that ends it."""
    return re.search(rf"Tree={index}\n.*?\n\n", text, re.S).group(0)  # type: ignore[union-attr]


def _hostile(tree: str) -> str:
    features = re.search(r"split_feature=([\d ]+)\n", tree).group(1).split()  # type: ignore[union-attr]
    features[-1] = str(HUGE)
    return re.sub(r"split_feature=[\d ]+\n", f"split_feature={' '.join(features)}\n", tree)


def _blank_line_block(text: str) -> str:
    """Tree 0 as LightGBM reads it splits on feature 10^9; the genuine lines follow a blank
    line (the check kept those)."""
    tree = _tree(text, 0)
    hostile = _hostile(tree).rstrip("\n") + "\n\n"
    genuine = tree.split("\n", 1)[1]  # its key lines without the Tree= line
    return text.replace(tree, hostile + genuine, 1).replace(_sizes_line(text), "")


def _sizes_line(text: str) -> str:
    return re.search(r"tree_sizes=[\d ]+\n", text).group(0)  # type: ignore[union-attr]


def _repeated_key(text: str) -> str:
    tree = _tree(text, 0)
    line = re.search(r"split_feature=[\d ]+\n", tree).group(0)  # type: ignore[union-attr]
    hostile = re.search(r"split_feature=[\d ]+\n", _hostile(tree)).group(0)  # type: ignore[union-attr]
    return text.replace(line, hostile + line, 1)


def _hidden_tree(text: str) -> str:
    """``tree_sizes`` sends LightGBM to a tree after ``end of trees``, which the check never
    read."""
    hostile = _hostile(_tree(text, 2))
    sizes = [int(s) for s in _sizes_line(text).split("=")[1].split()]
    start = text.index("Tree=0")
    appended = text + "\n" + hostile
    sizes[2] = appended.index(hostile, len(text)) - start - sum(sizes[:2])
    return appended.replace(_sizes_line(text), f"tree_sizes={' '.join(map(str, sizes))}\n")


def _vertical_tab(text: str) -> str:
    """Python's ``splitlines`` breaks a line at ``\\x0b``; LightGBM does not."""
    tree = _tree(text, 0)
    line = re.search(r"split_feature=[\d ]+\n", tree).group(0)  # type: ignore[union-attr]
    return text.replace(line, line.rstrip("\n") + "\x0bsplit_gain=1\n", 1)


def _repeated_header_key(text: str) -> str:
    return text.replace("max_feature_idx=2\n", "max_feature_idx=2\nmax_feature_idx=2\n", 1)


def _in_first_tree(pattern: str, replacement: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        tree = _tree(text, 0)
        changed = re.sub(pattern, replacement, tree, count=1)
        return text.replace(tree, changed, 1).replace(_sizes_line(text), "")

    return change


FORGED: dict[str, Callable[[str], str]] = {
    "num_tree_per_iteration of 10^6": lambda t: t.replace(
        "num_tree_per_iteration=1", "num_tree_per_iteration=1000000"
    ),
    "num_class 5 on a regression": lambda t: t.replace("num_class=1", "num_class=5"),
    "a categorical decision_type": _in_first_tree(r"decision_type=\d+", "decision_type=1"),
    "a decision_type beyond LightGBM's": _in_first_tree(r"decision_type=\d+", "decision_type=77"),
    "a block after a blank line": _blank_line_block,
    "a repeated key in a tree": _repeated_key,
    "tree_sizes pointing past end of trees": _hidden_tree,
    "a vertical tab inside a line": _vertical_tab,
    "a repeated header key": _repeated_header_key,
}


ROWS = np.zeros((8, 3)) + np.arange(8)[:, None] - 4
ANSWER = "PREDICTION "
CHILD_LIMIT = 60
"""Seconds a child may take to answer and then to exit before it counts as hung (a genuine
model's child answers and exits in 2-3 s)."""


@pytest.mark.parametrize("name", ["a block after a blank line", "num_tree_per_iteration of 10^6"])
def test_plain_lightgbm_crashes_on_the_forgery(tmp_path: Path, name: str) -> None:
    import lightgbm

    path, rows = tmp_path / "forged.txt", tmp_path / "rows.npy"
    path.write_text(FORGED[name](REAL))
    np.save(rows, ROWS)
    script = textwrap.dedent(
        f"""
        import json, numpy as np, lightgbm
        try:
            booster = lightgbm.Booster(model_str=open({str(path)!r}).read())
            answer = booster.predict(np.load({str(rows)!r})).tolist()
        except Exception as exc:  # the library failed on the file
            answer = {{"failed": repr(exc)}}
        print({ANSWER!r} + json.dumps(answer), flush=True)
        """
    )
    genuine = lightgbm.Booster(model_str=REAL).predict(ROWS)
    _assert_the_plain_library_does_not_survive(script, genuine)


def _assert_the_plain_library_does_not_survive(script: str, genuine: np.ndarray) -> None:
    """Runs ``script`` (a plain library predicting on a forged file and printing its answer or
    its failure) in a child process, which must not come through: it answers something other
    than the genuine model's prediction (LightGBM with ``num_tree_per_iteration`` of 10^6
    answered zeros or raised ZeroDivisionError, then crashed with SIGSEGV or hung at exit), or
    fails, or it is killed by a signal (SIGSEGV, SIGABRT on heap corruption), or, its memory
    corrupted, hangs (once seen blocked on a lock, once before answering). What it must not do
    is give the genuine answer and exit normally. A wrong answer or a failure settles it at
    once: the child is not waited for."""
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=errors, bufsize=0
        ) as child,
    ):
        try:
            answer = _answer(child)
            if answer is not None and _differs(answer, genuine):
                return  # a garbage prediction or a failure: the library did not come through
            returncode = child.wait(CHILD_LIMIT)
        except subprocess.TimeoutExpired:
            return  # hung, before or after its prediction: it did not exit
        finally:
            child.kill()
        errors.seek(0)
        assert returncode != 0, (returncode, answer, errors.read()[-2000:])


def _answer(child: subprocess.Popen[bytes]) -> str | None:
    """The child's printed prediction (``None``: it closed its output without one).

    Its output is read as it comes (unbuffered), so a line that arrived together with an
    earlier one (a library's warning) is never left in a buffer while ``select`` waits.

    Raises:
        subprocess.TimeoutExpired: Nothing came for ``CHILD_LIMIT`` seconds.
    """
    assert child.stdout is not None
    output = child.stdout.fileno()
    pending = b""
    while True:
        ready, _, _ = select.select([output], [], [], CHILD_LIMIT)
        if not ready:
            raise subprocess.TimeoutExpired(child.args, CHILD_LIMIT)
        chunk = os.read(output, 1 << 16)
        if not chunk:
            return None
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            if line.startswith(ANSWER.encode()):
                return line[len(ANSWER) :].decode()


def _differs(answer: str, genuine: np.ndarray) -> bool:
    """Whether the child's answer is not the genuine prediction (a failure is not)."""
    printed = json.loads(answer)
    if isinstance(printed, dict):
        return True
    found = np.asarray(printed, dtype=float)
    return found.shape != genuine.shape or not np.allclose(found, genuine, rtol=1e-9, atol=0)


def test_the_genuine_model_passes_the_check() -> None:
    report = check_booster("lightgbm_text", REAL.encode(), 3, 1 << 28)
    assert (report.n_features, report.trees) == (3, 3)


@pytest.mark.parametrize("name", sorted(FORGED))
def test_a_forged_lightgbm_file_is_refused_by_the_check(name: str) -> None:
    forged = FORGED[name](REAL)
    assert forged != REAL
    with pytest.raises(UnsafeArtifactError):
        check_booster("lightgbm_text", forged.encode(), 3, 1 << 28)


@pytest.mark.parametrize("name", sorted(FORGED))
def test_a_forged_lightgbm_file_is_refused_at_registration(module_http: Http, name: str) -> None:
    model_id = model(module_http)
    body = {
        "format": "lightgbm_text",
        "artifact_base64": base64.b64encode(FORGED[name](REAL).encode()).decode(),
        "task": "regression",
        "feature_names": FEATURES,
    }
    refused = module_http.call("POST", f"/models/{model_id}/versions", body)
    assert refused.status_code == 422, refused.data
    assert refused.data["error"] == "unsafe_artifact"
    assert module_http.call("GET", f"/models/{model_id}").data["latest_version"] == 0


def test_a_booster_whose_loaded_trees_disagree_with_the_check_is_refused_after_loading() -> None:
    """Whatever the text check missed, the trees LightGBM actually loaded are walked before any
    prediction: a split beyond the inputs the check counted is refused."""
    genuine = check_booster("lightgbm_text", REAL.encode(), 3, 1 << 28)
    assert load_booster("lightgbm_text", REAL.encode(), genuine).predict(np.zeros((2, 3))).shape
    fewer: Any = BoosterReport(**{**genuine.__dict__, "n_features": 1})
    with pytest.raises(UnsafeArtifactError, match="loaded"):
        load_booster("lightgbm_text", REAL.encode(), fewer)
    more_trees: Any = BoosterReport(**{**genuine.__dict__, "trees": genuine.trees + 1})
    with pytest.raises(UnsafeArtifactError, match="loaded"):
        load_booster("lightgbm_text", REAL.encode(), more_trees)


# ---- XGBoost ------------------------------------------------------------------------------


def _xgb_document() -> dict[str, Any]:
    import xgboost

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = np.digitize(X[:, 0] - X[:, 2], [-0.5, 0.5])
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 2, "seed": 0}
    booster = xgboost.train(params, xgboost.DMatrix(X, label=y), num_boost_round=2)
    return json.loads(booster.save_raw("json"))


XGB = _xgb_document()
XGB_ROWS = np.random.default_rng(1).normal(size=(50, 3))


def _xgb_forged(change: Callable[[dict[str, Any]], None]) -> bytes:
    document = copy.deepcopy(XGB)
    change(document["learner"]["gradient_booster"]["model"])
    return json.dumps(document).encode()


XGB_FORGED: dict[str, Callable[[dict[str, Any]], None]] = {
    "tree_info beyond the classes": lambda m: m["tree_info"].__setitem__(0, HUGE),
    "a negative tree_info": lambda m: m["tree_info"].__setitem__(0, -5),
    "tree_info shorter than the trees": lambda m: m["tree_info"].pop(),
    "a parent beyond the nodes": lambda m: m["trees"][0]["parents"].__setitem__(1, HUGE),
    "a negative parent": lambda m: m["trees"][0]["parents"].__setitem__(1, -7),
    "a parent that is not the node's": lambda m: m["trees"][0]["parents"].__setitem__(3, 2),
    "a node array shorter than the tree": lambda m: m["trees"][0].__setitem__("base_weights", [0]),
    "num_trees other than the trees": lambda m: m["gbtree_model_param"].__setitem__(
        "num_trees", str(HUGE)
    ),
    "iteration_indptr past the trees": lambda m: m["iteration_indptr"].__setitem__(-1, HUGE),
}


@pytest.mark.parametrize("name", ["tree_info beyond the classes", "a parent beyond the nodes"])
def test_plain_xgboost_crashes_on_the_forged_indices(tmp_path: Path, name: str) -> None:
    import xgboost

    path, rows = tmp_path / "forged.json", tmp_path / "rows.npy"
    path.write_bytes(_xgb_forged(XGB_FORGED[name]))
    np.save(rows, XGB_ROWS)
    script = textwrap.dedent(
        f"""
        import json, numpy as np, xgboost
        try:
            booster = xgboost.Booster()
            booster.load_model(bytearray(open({str(path)!r}, "rb").read()))
            answer = booster.predict(xgboost.DMatrix(np.load({str(rows)!r}))).tolist()
        except Exception as exc:  # the library failed on the file
            answer = {{"failed": repr(exc)}}
        print({ANSWER!r} + json.dumps(answer), flush=True)
        """
    )
    booster = xgboost.Booster()
    booster.load_model(bytearray(json.dumps(XGB).encode()))
    genuine = booster.predict(xgboost.DMatrix(XGB_ROWS))
    _assert_the_plain_library_does_not_survive(script, genuine)


def test_the_genuine_xgboost_model_passes_the_check() -> None:
    report = check_booster("xgboost_json", json.dumps(XGB).encode(), 3, 1 << 28)
    assert (report.n_features, report.n_classes, report.trees) == (3, 3, 6)


@pytest.mark.parametrize("name", sorted(XGB_FORGED))
def test_a_forged_xgboost_file_is_refused_by_the_check(name: str) -> None:
    with pytest.raises(UnsafeArtifactError):
        check_booster("xgboost_json", _xgb_forged(XGB_FORGED[name]), 3, 1 << 28)


@pytest.mark.parametrize("name", ["tree_info beyond the classes", "a negative parent"])
def test_a_forged_xgboost_file_is_refused_at_registration(module_http: Http, name: str) -> None:
    model_id = model(module_http)
    body = {
        "format": "xgboost_json",
        "artifact_base64": base64.b64encode(_xgb_forged(XGB_FORGED[name])).decode(),
        "task": "classification",
        "feature_names": FEATURES,
        "class_names": ["a", "b", "c"],
    }
    refused = module_http.call("POST", f"/models/{model_id}/versions", body)
    assert refused.status_code == 422, refused.data
    assert refused.data["error"] == "unsafe_artifact"
    assert module_http.call("GET", f"/models/{model_id}").data["latest_version"] == 0
