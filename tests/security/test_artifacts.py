"""Untrusted model artifacts are refused, including forged skops schemas that name dangerous
callables through another import path than the one the allow-list blocks."""

from __future__ import annotations

import io
import pickle
import zipfile
from typing import Any

import pytest

from chalicelib.registry.errors import UnsafeArtifactError
from chalicelib.registry.safety import check_artifact
from tests.conftest import Http
from tests.security import forge
from tests.security.helpers import b64, model


def _forged(*names: str) -> bytes:
    """A real LogisticRegression file with one extra attribute naming each of ``names``."""
    data = forge.dumps(forge.fitted_model())
    for index, name in enumerate(names):
        data = forge.with_attribute(data, forge.type_node(name), attr=f"forged_{index}_")
    return data


REFUSED_NAMES = [
    "os.system",
    "posix.system",
    "subprocess.Popen",
    "builtins.eval",
    "builtins.exec",
    "builtins.getattr",
    "builtins.__import__",
    "importlib.import_module",
    "pickle.loads",
    "joblib.load",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "numpy.load",
    # Names a prefix-based allow-list would have trusted:
    "sklearn.preprocessing.FunctionTransformer",  # same class, public re-export path
    "numpy.lib._npyio_impl.load",  # numpy.load with allow_pickle
    "numpy.testing._private.utils.runstring",  # exec(astr, dict)
    "numpy.ctypeslib.load_library",  # loads a shared library
    "sklearn.utils._testing.assert_run_python_script_without_output",  # runs Python source
    "numpyevil.Thing",  # prefix match without a dot
]


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_forged_schemas_naming_dangerous_callables_are_refused(name: str) -> None:
    with pytest.raises(UnsafeArtifactError, match="not on the allow-list") as caught:
        check_artifact(_forged("builtins.str", name))
    assert caught.value.details["untrusted_types"] == [name]


def _archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return buffer.getvalue()


HOSTILE_BYTES: dict[str, bytes] = {
    "pickle-protocol-0": pickle.dumps({"a": 1}, protocol=0),
    "pickle-protocol-1": pickle.dumps({"a": 1}, protocol=1),
    "pickle-protocol-5": pickle.dumps({"a": 1}, protocol=5),
    "zip-with-only-a-pickle": _archive({"data.pkl": pickle.dumps({"a": 1})}),
    "zip-with-non-json-schema": _archive({"schema.json": b"\x80\x04not json"}),
    "zip-with-empty-schema-name": _archive({"schema.json/": b""}),
    "empty-zip": _archive({}),
    "truncated-zip": _archive({"schema.json": b"{}"})[:30],
    "random-bytes": bytes(range(256)) * 4,
    "gzip-joblib-like": b"\x1f\x8b\x08\x00" + b"\x00" * 64,
}


@pytest.mark.parametrize("label", sorted(HOSTILE_BYTES))
def test_hostile_artifact_bytes_are_refused_over_http(module_http: Http, label: str) -> None:
    model_id = model(module_http)
    body: dict[str, Any] = {
        "artifact_base64": b64(HOSTILE_BYTES[label]),
        "format": "skops",
        "task": "classification",
        "feature_names": ["a"],
    }
    response = module_http.call("POST", f"/models/{model_id}/versions", body)
    assert response.status_code == 422, response.data
    versions = module_http.call("GET", f"/models/{model_id}/versions").data["versions"]
    assert versions == []


@pytest.mark.parametrize(
    "fmt", ["pickle", "PICKLE", "joblib", "pkl", "cloudpickle", "dill", "onnx"]
)
def test_formats_other_than_skops_are_refused(module_http: Http, fmt: str) -> None:
    model_id = model(module_http)
    body = {
        "artifact_base64": b64(_forged("builtins.dict")),
        "format": fmt,
        "task": "classification",
        "feature_names": ["a"],
    }
    response = module_http.call("POST", f"/models/{model_id}/versions", body)
    assert response.status_code == 422, response.data


def test_a_function_transformer_renamed_to_its_public_path_is_refused() -> None:
    import numpy as np
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    real = sio.dumps(FunctionTransformer(np.log1p).fit(np.ones((3, 2))))
    with zipfile.ZipFile(io.BytesIO(real)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    files["schema.json"] = files["schema.json"].replace(
        b'"sklearn.preprocessing._function_transformer"', b'"sklearn.preprocessing"'
    )
    with pytest.raises(UnsafeArtifactError):
        check_artifact(_archive(files))
