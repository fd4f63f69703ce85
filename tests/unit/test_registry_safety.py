"""The artifact allow-list check, without AWS."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

from chalicelib.registry.errors import UnsafeArtifactError
from chalicelib.registry.safety import check_artifact, is_trusted


def _model() -> LogisticRegression:
    X = np.random.default_rng(0).normal(size=(40, 3))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


def test_skops_logistic_regression_is_trusted() -> None:
    types = check_artifact(sio.dumps(_model()))
    assert "sklearn.linear_model._logistic.LogisticRegression" in types


def test_pickle_bytes_are_refused_with_advice() -> None:
    with pytest.raises(UnsafeArtifactError, match="skops"):
        check_artifact(pickle.dumps(_model()))


def test_non_archive_is_refused() -> None:
    with pytest.raises(UnsafeArtifactError, match="not a skops archive"):
        check_artifact(b"hello world")


def test_function_transformer_is_refused_even_with_numpy_function() -> None:
    transformer = FunctionTransformer(np.log1p).fit(np.ones((3, 2)))
    with pytest.raises(UnsafeArtifactError) as caught:
        check_artifact(sio.dumps(transformer))
    assert "FunctionTransformer" in caught.value.message


def test_forged_schema_naming_os_system_is_refused() -> None:
    with zipfile.ZipFile(io.BytesIO(sio.dumps(_model()))) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(files["schema.json"])
    schema["content"]["content"]["C"] = {
        "__class__": "system",
        "__module__": "os",
        "__loader__": "TypeNode",
    }
    files["schema.json"] = json.dumps(schema).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    with pytest.raises(UnsafeArtifactError, match="os.system"):
        check_artifact(buffer.getvalue())


@pytest.mark.parametrize(
    ("name", "trusted"),
    [
        ("sklearn.tree._tree.Tree", True),
        ("numpy.ndarray", True),
        ("builtins.dict", True),
        ("builtins.eval", False),
        ("subprocess.Popen", False),
    ],
)
def test_allow_list(name: str, trusted: bool) -> None:
    assert is_trusted(name) is trusted


def test_an_oversized_schema_is_refused_before_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.registry import safety

    monkeypatch.setattr(safety, "MAX_SCHEMA_BYTES", 100)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("schema.json", json.dumps({"pad": " " * 10_000}))
    assert len(buffer.getvalue()) < 1_000  # small on the wire, large when expanded
    with pytest.raises(UnsafeArtifactError, match="larger than 100 bytes"):
        check_artifact(buffer.getvalue())


def test_the_allow_list_is_the_committed_json_as_frozen_sets() -> None:
    from chalicelib.registry import safety

    committed = json.loads(safety.ALLOW_LIST_PATH.read_text(encoding="utf-8"))
    # The loader's body without its per-process cache (which stays as it was).
    loaded = safety.allow_list.__wrapped__()
    kinds = ("estimators", "helpers", "dicts", "trees", "losses", "numpy_scalars", "sparse",
             "bit_generators")  # fmt: skip
    for kind in kinds:
        assert getattr(loaded, kind) == frozenset(committed[kind]), kind
        assert isinstance(getattr(loaded, kind), frozenset) and committed[kind], kind
    assert loaded.restricted_parameters == committed["restricted_parameters"]
    assert loaded == safety.allow_list()
