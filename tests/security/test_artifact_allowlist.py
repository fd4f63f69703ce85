"""The committed allow-list (``chalicelib/registry/trusted_types.json``) is what the pinned
libraries generate, enumerates classes by their defining module only, holds nothing that touches
the host, and accepts every real model of the corpus it was generated from."""

from __future__ import annotations

import importlib
import io
import json
import socket
import subprocess
import tempfile
import threading
import urllib.request
from pathlib import PurePath
from typing import Any

import pytest

from chalicelib.registry.errors import UnsafeArtifactError
from chalicelib.registry.safety import ALLOW_LIST_PATH, inspect_artifact, is_trusted
from infra import trusted_types

CLASS_SETS = ("estimators", "helpers", "dicts", "trees", "losses", "sparse")
# Corpus models the check refuses on purpose, and why (README "Model artifacts" says so too).
REFUSED_IN_CORPUS = {
    # its fitted B-splines hold a numpy function (scipy's array-API alias of asarray)
    "sklearn.preprocessing._polynomial.SplineTransformer",
    # they hold a KDTree or BallTree ("auto" picks one), whose compiled state is not checked
    # (infra/trusted_types.py REFUSED_HELPERS); with algorithm="brute" they are accepted
    "sklearn.neighbors._classification.KNeighborsClassifier",
    "sklearn.neighbors._classification.RadiusNeighborsClassifier",
    "sklearn.neighbors._regression.KNeighborsRegressor",
}


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    return json.loads(ALLOW_LIST_PATH.read_text(encoding="utf-8"))


def test_the_committed_allow_list_is_what_the_installed_libraries_generate(
    committed: dict[str, Any],
) -> None:
    regenerated = json.loads(trusted_types.render(trusted_types.generate()))
    assert regenerated == committed, "run `make trusted-types` and review the diff"


@pytest.mark.parametrize("kind", CLASS_SETS)
def test_every_listed_class_is_named_by_the_module_that_defines_it(
    committed: dict[str, Any], kind: str
) -> None:
    wrong = [n for n in committed[kind] if not trusted_types.resolves_to_itself(n)]
    assert wrong == []


def _classes(committed: dict[str, Any]) -> list[type]:
    found = []
    for kind in CLASS_SETS:
        for name in committed[kind]:
            module, _, attr = name.rpartition(".")
            found.append(getattr(importlib.import_module(module), attr))
    return found


HOST_TYPES = (
    io.IOBase,
    socket.socket,
    subprocess.Popen,
    threading.Thread,
    PurePath,
    urllib.request.Request,
    urllib.request.OpenerDirector,
    tempfile.TemporaryDirectory,
)


def test_no_trusted_class_is_a_file_socket_process_thread_path_or_request(
    committed: dict[str, Any],
) -> None:
    offenders = [c for c in _classes(committed) if issubclass(c, HOST_TYPES)]
    assert offenders == []
    assert not [n for kind in CLASS_SETS for n in committed[kind] if ".tests." in n]
    assert (
        "sklearn.preprocessing._function_transformer.FunctionTransformer"
        not in (committed["estimators"])
    )


def test_names_are_trusted_only_as_listed() -> None:
    assert is_trusted("sklearn.linear_model._logistic.LogisticRegression")
    assert is_trusted("sklearn.tree._tree.Tree")
    for name in (
        "sklearn.linear_model.LogisticRegression",  # a re-export of the same class
        "sklearn.datasets._rcv1.GzipFile",
        "sklearn.utils._testing.TempMemmap",
        "sklearn.preprocessing._function_transformer.FunctionTransformer",
        "numpy.load",
        "builtins.eval",
    ):
        assert not is_trusted(name), name


def _dump(model: Any) -> bytes:
    import skops.io as sio

    return sio.dumps(model)


def test_every_corpus_model_passes_and_loads_with_exactly_the_types_the_check_returns() -> None:
    import skops.io as sio

    refused = set()
    for model in trusted_types.corpus():
        data = _dump(model)
        name = trusted_types.type_name(type(model))
        try:
            report = inspect_artifact(data)
        except UnsafeArtifactError:
            refused.add(name)
            continue
        loaded = sio.loads(data, trusted=report.types)
        assert type(loaded) is type(model)
        assert report.types == sorted(set(report.types))
    assert refused == REFUSED_IN_CORPUS


def test_the_corpus_uses_only_loaders_the_check_knows(committed: dict[str, Any]) -> None:
    # Function and partial nodes are accepted only inside HistGradientBoosting's check_array step.
    assert set(committed["corpus_loaders"]) <= {
        "DTypeNode",
        "DictNode",
        "FunctionNode",
        "JsonNode",
        "ListNode",
        "LossNode",
        "MaskedArrayNode",
        "NdArrayNode",
        "ObjectNode",
        "PartialNode",
        "RandomGeneratorNode",
        "RandomStateNode",
        "SliceNode",
        "TreeNode",
        "TupleNode",
        "TypeNode",
    }
    assert set(committed["corpus_functions"]) == {
        "sklearn.utils.validation.check_array",
        "scipy._lib.array_api_compat.numpy._aliases.asarray",
    }
