"""Forged skops files, one per gadget family, are refused at registration and again at load.

Every gadget is one extra node in a real LogisticRegression file (or a real file of a model that
holds a dangerous value). For each one the real route answers 422 ``unsafe_artifact``, nothing
on disk changes, the body names no server detail, and the same bytes planted straight in S3 (with
the version record pointing at them) are refused by the explanation path before skops runs.

The gadgets are real: ``test_the_gadget_works_against_a_loader_that_trusts_its_types`` loads
the file-touching ones with plain skops, trusting what ``skops.io.get_untrusted_types`` reports,
and watches them truncate, delete or create files. So these tests fail if the check goes away.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chalicelib.core import aws
from chalicelib.core.config import get_settings
from chalicelib.registry.errors import UnsafeArtifactError
from chalicelib.registry.safety import check_artifact
from tests.conftest import Http
from tests.security import forge
from tests.security.helpers import model

PRECIOUS = b"precious server data"
FEATURES = ["x0", "x1", "x2"]


@dataclass(frozen=True)
class Target:
    """Where a gadget aims: an existing file and a directory to create things in."""

    victim: Path
    workdir: Path

    def snapshot(self) -> tuple[bytes | None, list[str]]:
        """The victim's bytes and the directory's listing."""
        data = self.victim.read_bytes() if self.victim.exists() else None
        return data, sorted(p.name for p in self.workdir.iterdir())


Build = Callable[[bytes, Target], bytes]


def _attr(node: Callable[[Target], dict[str, Any]]) -> Build:
    return lambda base, target: forge.with_attribute(base, node(target))


def _real(make: Callable[[Target], Any]) -> Build:
    return lambda base, target: forge.dumps(make(target))


def _tfidf(target: Target, **params: Any) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts = ["good plot", "bad acting", "great film", "awful movie"] * 3
    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, [1, 0, 1, 0] * 3)
    pipeline.steps[0][1].set_params(**params)
    return pipeline


def _memory_pipeline(target: Target) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    model = forge.fitted_model()
    pipeline = Pipeline([("scale", StandardScaler()), ("lr", model)], memory=str(target.workdir))
    pipeline.steps[0][1].fit([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]])
    assert isinstance(pipeline.steps[1][1], LogisticRegression)
    return pipeline


def _function_transformer(target: Target) -> Any:
    import numpy as np
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(np.log1p).fit(np.ones((3, 3)))


def _aliased_vectorizer_input(base: bytes, target: Target) -> bytes:
    """A TfidfVectorizer whose ``input`` reads "content" where it stands, but whose JsonNode id
    is first given to a "filename" value: skops builds the first and reuses it."""
    schema, members = forge.unpack(forge.dumps(_tfidf(target)))
    vectorizer = schema["content"]["content"]["steps"]["content"][0]["content"][1]
    shared_id = vectorizer["content"]["content"]["input"]["__id__"]
    lure = forge.value("filename") | {"__id__": shared_id}
    attrs = schema["content"]
    attrs["content"] = {"aaa_first": lure, **attrs["content"]}
    attrs["key_types"]["content"].insert(0, forge.type_node("builtins.str"))
    return forge.pack(schema, members)


def _check_array_with(**kwargs: Any) -> Build:
    """The one accepted FunctionTransformer (HistGradientBoosting's), with other arguments."""

    def build(base: bytes, target: Target) -> bytes:
        import numpy as np
        from sklearn.ensemble import HistGradientBoostingClassifier

        rng = np.random.default_rng(0)
        X = np.c_[rng.integers(0, 3, 60), rng.normal(size=(60, 2))]
        real = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0])
        schema, members = forge.unpack(forge.dumps(real.fit(X, X[:, 1] > 0)))
        preprocessor = schema["content"]["content"]["_preprocessor"]["content"]["content"]
        for key in ("transformers", "transformers_"):
            step = preprocessor[key]["content"][1]["content"][1]
            partial = step["content"]["content"]["func"]
            for name, value in kwargs.items():
                partial["content"]["kwds"]["content"][name] = value
                partial["content"]["kwds"]["key_types"]["content"].append(
                    forge.type_node("builtins.str")
                )
            if "func" in kwargs:
                partial["content"]["func"] = kwargs["func"]
                del partial["content"]["kwds"]["content"]["func"]
                partial["content"]["kwds"]["key_types"]["content"].pop()
        return forge.pack(schema, members)

    return build


def _protocol(number: int) -> Build:
    return lambda base, target: forge.edit_schema(base, lambda s: s.update(protocol=number))


def _root(node: Callable[[Target], dict[str, Any]]) -> Build:
    def build(base: bytes, target: Target) -> bytes:
        return forge.pack(
            node(target) | {"protocol": 2, "_skops_version": "0.16.0"}, forge.unpack(base)[1]
        )

    return build


def _bit_generator(name: str) -> Build:
    def build(base: bytes, target: Target) -> bytes:
        import numpy as np

        schema, members = forge.unpack(forge.dumps(np.random.default_rng(0)))
        holder = schema["content"]["bit_generator"]["content"]["bit_generator"]
        holder["content"] = json.dumps(name)
        del schema["protocol"], schema["_skops_version"]
        return forge.with_attribute(base, schema, files=members)

    return build


def _victim_path(target: Target) -> str:
    return str(target.victim)


GADGETS: dict[str, Build] = {
    # The finding: gzip.GzipFile through a scikit-learn module that imports it.
    "gzip-GzipFile-via-sklearn.datasets._rcv1": _attr(
        lambda t: forge.call("sklearn.datasets._rcv1.GzipFile", _victim_path(t), "wb")
    ),
    "gzip-GzipFile-as-an-object-via-sklearn.datasets._rcv1": _attr(
        lambda t: forge.node(
            "ObjectNode", "sklearn.datasets._rcv1.GzipFile", content=forge.dict_of()
        )
    ),
    "os-remove-via-sklearn.datasets._rcv1": _attr(
        lambda t: forge.call("sklearn.datasets._rcv1.remove", _victim_path(t))
    ),
    "builtins-open-truncates": _attr(lambda t: forge.call("builtins.open", _victim_path(t), "w")),
    # Temporary files and directories.
    "tempfile-NamedTemporaryFile-via-sklearn.datasets._base": _attr(
        lambda t: forge.call(
            "sklearn.datasets._base.NamedTemporaryFile",
            "w+b",
            -1,
            None,
            None,
            ".x",
            "gadget",
            str(t.workdir),
            False,
        )
    ),
    "tempfile-TemporaryDirectory-via-sklearn.datasets._openml": _attr(
        lambda t: forge.call(
            "sklearn.datasets._openml.TemporaryDirectory", ".d", "g", str(t.workdir)
        )
    ),
    "tempfile-TemporaryDirectory-as-an-object-via-sklearn.datasets._covtype": _attr(
        lambda t: forge.node(
            "ObjectNode", "sklearn.datasets._covtype.TemporaryDirectory", content=forge.dict_of()
        )
    ),
    "tempfile-mkdtemp-as-a-dict-type": _attr(
        lambda t: forge.node(
            "DictNode",
            "tempfile.mkdtemp",
            content={},
            key_types=forge.list_of(),
        )
    ),
    # Threads, URL requests, paths.
    "threading-Thread-via-sklearn.callback._progressbar": _attr(
        lambda t: forge.node(
            "ObjectNode", "sklearn.callback._progressbar.Thread", content=forge.dict_of()
        )
    ),
    "urllib-Request-via-sklearn.datasets._openml": _attr(
        lambda t: forge.call("sklearn.datasets._openml.Request", "http://169.254.169.254/latest/")
    ),
    "urllib-Request-as-an-object-via-sklearn.datasets._openml": _attr(
        lambda t: forge.node(
            "ObjectNode", "sklearn.datasets._openml.Request", content=forge.dict_of()
        )
    ),
    "urllib-urlretrieve-via-sklearn.datasets._base": _attr(
        lambda t: forge.call(
            "sklearn.datasets._base.urlretrieve",
            t.victim.as_uri(),
            str(t.workdir / "copied"),
        )
    ),
    "urllib-urlopen-function": _attr(
        lambda t: forge.node("FunctionNode", "sklearn.datasets._openml.urlopen")
    ),
    "pathlib-Path-via-sklearn.utils.discovery": _attr(
        lambda t: forge.call("sklearn.utils.discovery.Path", _victim_path(t))
    ),
    "pathlib-Path-as-an-object-via-sklearn.datasets._base": _attr(
        lambda t: forge.node("ObjectNode", "sklearn.datasets._base.Path", content=forge.dict_of())
    ),
    # Processes.
    "subprocess-check_call-as-a-list-type": _attr(
        lambda t: forge.call(
            "subprocess.check_call", "touch", str(t.workdir / "touched"), loader="ListNode"
        )
    ),
    "subprocess-Popen": _attr(
        lambda t: forge.call("subprocess.Popen", ["touch", str(t.workdir / "touched")])
    ),
    "os-system-as-a-loss": _attr(
        lambda t: forge.call("os.system", f"touch {t.workdir / 'touched'}", loader="LossNode")
    ),
    "posix-system-type": _attr(lambda t: forge.type_node("posix.system")),
    # Builtins.
    "builtins-exec-as-a-loss": _attr(
        lambda t: forge.call(
            "builtins.exec", f"open({str(t.victim)!r}, 'w').close()", loader="LossNode"
        )
    ),
    "builtins-eval-as-a-loss": _attr(
        lambda t: forge.call("builtins.eval", "__import__('os').getcwd()", loader="LossNode")
    ),
    "builtins-getattr-function": _attr(lambda t: forge.node("FunctionNode", "builtins.getattr")),
    "builtins-__import__-type": _attr(lambda t: forge.type_node("builtins.__import__")),
    # operator and functools.
    "operator-methodcaller": _attr(
        lambda t: forge.node(
            "OperatorFuncNode",
            "operator.methodcaller",
            attrs=forge.tuple_of(forge.value("system"), forge.value("touch x")),
        )
    ),
    "operator-attrgetter": _attr(
        lambda t: forge.node(
            "OperatorFuncNode",
            "operator.attrgetter",
            attrs=forge.tuple_of(forge.value("__class__")),
        )
    ),
    "functools-partial-of-os.system": _attr(
        lambda t: forge.node(
            "PartialNode",
            "functools.partial",
            content={
                "func": forge.node("FunctionNode", "os.system"),
                "args": forge.tuple_of(forge.value("touch x")),
                "kwds": forge.dict_of(),
                "namespace": forge.value(None),
            },
        )
    ),
    "FunctionTransformer-real-numpy-function": _real(_function_transformer),
    "FunctionTransformer-check_array-with-another-argument": _check_array_with(
        accept_sparse=forge.value(True)
    ),
    "FunctionTransformer-partial-of-os.system": _check_array_with(
        func=forge.node("FunctionNode", "os.system")
    ),
    # numpy functions.
    "numpy-load-function": _attr(lambda t: forge.node("FunctionNode", "numpy.load")),
    "numpy-memmap-creates-a-file": _attr(
        lambda t: forge.call("numpy.memmap", _victim_path(t), "uint8", "w+", 0, [16])
    ),
    "numpy-fromfile-as-a-loss": _attr(
        lambda t: forge.call("numpy.fromfile", _victim_path(t), loader="LossNode")
    ),
    "numpy-array-class-memmap": _attr(
        lambda t: forge.node(
            "NdArrayNode", "numpy.memmap", type="json", content=[], shape=forge.tuple_of()
        )
    ),
    # scikit-learn's tests and testing helpers.
    "sklearn-testing-runs-python-source": _attr(
        lambda t: forge.call(
            "sklearn.utils._testing.assert_run_python_script_without_output",
            f"open({str(t.victim)!r}, 'w').close()",
            loader="LossNode",
        )
    ),
    "sklearn-tests-module-class": _attr(
        lambda t: forge.node("ObjectNode", "sklearn.tests.test_base.T", content=forge.dict_of())
    ),
    # Loaders that call functions or methods, and loaders skops does not have.
    "MethodNode-gadget": _attr(
        lambda t: forge.node(
            "MethodNode",
            "sklearn.linear_model._logistic.LogisticRegression",
            content={
                "obj": forge.node(
                    "ObjectNode",
                    "sklearn.linear_model._logistic.LogisticRegression",
                    content=forge.dict_of(),
                ),
                "func": "__init__",
            },
        )
    ),
    "FunctionNode-os.system": _attr(lambda t: forge.node("FunctionNode", "os.system")),
    "TypeNode-subprocess.Popen": _attr(lambda t: forge.type_node("subprocess.Popen")),
    "TypeNode-of-an-estimator-class": _attr(
        lambda t: forge.type_node("sklearn.linear_model._logistic.LogisticRegression")
    ),
    "unknown-loader": _attr(lambda t: forge.node("EvilNode", "builtins.dict")),
    "CachedNode": _attr(lambda t: forge.node("CachedNode", "builtins.dict")),
    "DefaultDictNode-factory": _attr(
        lambda t: forge.node(
            "DefaultDictNode",
            "collections.defaultdict",
            content={"main": forge.dict_of(), "default_factory": forge.type_node("builtins.list")},
        )
    ),
    "BytesNode": _attr(lambda t: forge.node("BytesNode", "builtins.bytes", file="x.bin")),
    "re-exported-estimator-path": _attr(
        lambda t: forge.node(
            "ObjectNode", "sklearn.linear_model.LogisticRegression", content=forge.dict_of()
        )
    ),
    "helper-type-in-the-wrong-loader": _attr(
        lambda t: forge.call("sklearn.gaussian_process.kernels.RBF", 1.0)
    ),
    "bit-generator-name-not-a-bit-generator": _bit_generator("seed"),
    # Shapes and parameters.
    "old-skops-protocol": _protocol(0),
    "top-level-object-not-an-estimator": _root(lambda t: forge.dict_of(a=forge.value(1))),
    "top-level-estimator-helper": _root(
        lambda t: forge.node(
            "ObjectNode", "sklearn.gaussian_process.kernels.RBF", content=forge.dict_of()
        )
    ),
    "text-vectorizer-reads-inputs-as-file-names": _real(lambda t: _tfidf(t, input="filename")),
    "text-vectorizer-input-aliased-through-an-object-id": _aliased_vectorizer_input,
    "pipeline-memory-caches-to-a-directory": _real(_memory_pipeline),
}

# Gadgets whose effect on the target shows when plain skops loads them with their types trusted.
LIVE: dict[str, Callable[[Target], bool]] = {
    "gzip-GzipFile-via-sklearn.datasets._rcv1": lambda t: t.victim.read_bytes() == b"",
    "os-remove-via-sklearn.datasets._rcv1": lambda t: not t.victim.exists(),
    "builtins-open-truncates": lambda t: t.victim.read_bytes() == b"",
    "tempfile-NamedTemporaryFile-via-sklearn.datasets._base": lambda t: any(
        p.name.startswith("gadget") for p in t.workdir.iterdir()
    ),
    "urllib-urlretrieve-via-sklearn.datasets._base": lambda t: (
        (t.workdir / "copied").read_bytes() == PRECIOUS
    ),
    "subprocess-check_call-as-a-list-type": lambda t: (t.workdir / "touched").exists(),
    "os-system-as-a-loss": lambda t: (t.workdir / "touched").exists(),
    "builtins-exec-as-a-loss": lambda t: t.victim.read_bytes() == b"",
    "numpy-memmap-creates-a-file": lambda t: t.victim.read_bytes() == bytes(16),
    "sklearn-testing-runs-python-source": lambda t: t.victim.read_bytes() == b"",
    "text-vectorizer-input-aliased-through-an-object-id": lambda t: True,
}


@pytest.fixture
def target(tmp_path: Path) -> Target:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS)
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Target(victim, workdir)


@pytest.fixture(scope="module")
def base() -> bytes:
    return forge.dumps(forge.fitted_model())


def _register_body(data: bytes) -> dict[str, Any]:
    return {
        "artifact_base64": base64.b64encode(data).decode(),
        "format": "skops",
        "task": "classification",
        "feature_names": FEATURES,
        "background_sample": [[0.0, 0.5, 1.0], [1.0, 0.0, -1.0]],
    }


def _refusal(data: bytes) -> str:
    """The check's own message for ``data`` (so a refusal is the check's, not a failed load)."""
    with pytest.raises(UnsafeArtifactError) as caught:
        check_artifact(data)
    return caught.value.message


def _assert_refused(
    response: Any, target: Target, before: tuple[bytes | None, list[str]], message: str
) -> None:
    assert response.status_code == 422, response.data
    assert response.data["error"] == "unsafe_artifact", response.data
    assert response.data["message"] == message
    assert target.snapshot() == before
    text = json.dumps(response.data)
    assert set(response.data) <= {"error", "message", "details"}
    for secret in (str(target.victim), str(target.workdir), "Traceback", "site-packages", "/work/"):
        assert secret not in text, text


@pytest.mark.parametrize("name", sorted(GADGETS))
def test_a_gadget_is_refused_at_registration_and_leaves_the_host_alone(
    module_http: Http, base: bytes, target: Target, name: str
) -> None:
    forged = GADGETS[name](base, target)
    before = target.snapshot()
    model_id = model(module_http)
    response = module_http.call("POST", f"/models/{model_id}/versions", _register_body(forged))
    _assert_refused(response, target, before, _refusal(forged))
    assert module_http.call("GET", f"/models/{model_id}/versions").data["versions"] == []


def _plant(model_id: str, version: int, data: bytes, record_hash: bool) -> None:
    """Writes ``data`` where the version's artifact is, as someone with bucket access could."""
    from chalicelib.registry.repository import ModelVersionTable

    item = ModelVersionTable.get(model_id, version)
    digest = hashlib.sha256(data).hexdigest()
    key = item.artifact_key
    if record_hash:  # also rewrite the record, so only the check on the bytes stands
        key = f"artifacts/{model_id}/{digest}.skops"
        item.update(
            actions=[
                ModelVersionTable.artifact_key.set(key),
                ModelVersionTable.artifact_sha256.set(digest),
            ]
        )
    aws.client("s3").put_object(Bucket=get_settings().models_bucket, Key=key, Body=data)


def _explain(http: Http, model_id: str, version: int) -> Any:
    body = {
        "model_id": model_id,
        "model_version": version,
        "input_data": {"x0": 0.1, "x1": 0.2, "x2": 0.3},
    }
    return http.call("POST", "/explanations", body)


@pytest.mark.parametrize("name", sorted(GADGETS))
def test_the_same_bytes_planted_in_s3_are_refused_by_the_load_path(
    module_http: Http, base: bytes, target: Target, name: str
) -> None:
    model_id = model(module_http)
    registered = module_http.call("POST", f"/models/{model_id}/versions", _register_body(base))
    assert registered.status_code == 201, registered.data
    forged = GADGETS[name](base, target)
    _plant(model_id, registered.data["version"], forged, record_hash=True)
    before = target.snapshot()
    response = _explain(module_http, model_id, registered.data["version"])
    _assert_refused(response, target, before, _refusal(forged))


def test_bytes_changed_in_s3_after_registration_are_refused_by_their_hash(
    module_http: Http, base: bytes, target: Target
) -> None:
    model_id = model(module_http)
    registered = module_http.call("POST", f"/models/{model_id}/versions", _register_body(base))
    assert registered.status_code == 201, registered.data
    forged = GADGETS["gzip-GzipFile-via-sklearn.datasets._rcv1"](base, target)
    _plant(model_id, registered.data["version"], forged, record_hash=False)
    before = target.snapshot()
    response = _explain(module_http, model_id, registered.data["version"])
    message = "the stored artifact is not the one registered (its sha256 differs); it is refused"
    _assert_refused(response, target, before, message)


@pytest.mark.parametrize("name", sorted(LIVE))
def test_the_gadget_works_against_a_loader_that_trusts_its_types(
    base: bytes, target: Target, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import skops.io as sio

    monkeypatch.setattr(tempfile, "tempdir", str(target.workdir))
    forged = GADGETS[name](base, target)
    with pytest.raises(UnsafeArtifactError):
        check_artifact(forged)
    try:
        loaded = sio.loads(forged, trusted=forge.skops_types(forged))
    except Exception:  # many gadgets fail after their effect; the effect is what counts
        loaded = None
    if name == "text-vectorizer-input-aliased-through-an-object-id":
        assert loaded.steps[0][1].input == "filename"  # the checked "content" was never used
    assert LIVE[name](target), f"{name} had no effect; it would not prove the check matters"
