"""Decompression bombs and size lies are refused before anything is decompressed.

The issue's file: a ~1 MB skops file whose one array expands to 1 GiB. Its variants: a zip
member whose header understates what its stream expands to, one that overstates it, an ``.npy``
header that declares more (or less) data than its member holds, a bomb inside a sparse matrix's
nested ``.npz``, a zip directory with more members than allowed, and deep nesting. Each is refused
with ``422 unsafe_artifact`` at registration and when planted in S3, and the memory traced while
the request runs stays far below what the bomb would take.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from chalicelib.core import aws
from chalicelib.core.config import get_settings
from chalicelib.registry import safety
from chalicelib.registry.errors import UnsafeArtifactError
from chalicelib.registry.safety import MAX_DEPTH, check_artifact, npy_data_size
from tests.conftest import Http
from tests.security import forge
from tests.security.helpers import model

GIB = 1 << 30
SMALL_MEMBER_LIMIT = 2_000
# A request may trace this much (the artifact, its base64, moto's copy, the check); a bomb that
# were decompressed would trace at least 1 GiB.
TRACED_LIMIT = 64 << 20


def _coef_member(data: bytes) -> str:
    """The member holding the LogisticRegression's ``coef_``."""
    schema, _ = forge.unpack(data)
    return forge.attribute(schema, "coef_")["file"]


def _replace(data: bytes, name: str, entry: forge.Entry) -> bytes:
    entries = [e for e in forge.entries_of(data) if e.name != name]
    return forge.write_zip([*entries, entry])


def issue_bomb(base: bytes) -> bytes:
    """The LogisticRegression with ``coef_`` replaced by a deflated 1 GiB array (~1 MB file)."""
    header = forge.npy_header((GIB // 8,))
    stream, crc, size = forge.deflate_zeros(header, GIB)
    name = _coef_member(base)
    return _replace(base, name, forge.Entry(name, stream, crc, size, method=8))


def understated_member(base: bytes) -> bytes:
    """A member whose headers say 48 bytes (a consistent 3-float array) but whose stream expands
    to 1 GiB: zipfile stops at the declared size and the CRC fails."""
    header = forge.npy_header((3,))
    stream, crc, _ = forge.deflate_zeros(header, GIB)
    name = _coef_member(base)
    return _replace(base, name, forge.Entry(name, stream, crc, len(header) + 24, method=8))


def overstated_member(base: bytes) -> bytes:
    """A member whose headers claim 4 GiB - 1 bytes once expanded."""
    name = _coef_member(base)
    real = forge.npy_header((3,)) + bytes(24)
    entry = forge.stored(name, real)
    return _replace(base, name, forge.Entry(name, real, entry.crc, 0xFFFFFFFF))


def npy_claims_more(base: bytes) -> bytes:
    """An ``.npy`` header declaring 10^12 floats in a 24-byte member (numpy would allocate)."""
    name = _coef_member(base)
    return _replace(base, name, forge.stored(name, forge.npy_header((10**12,)) + bytes(24)))


def npy_claims_less(base: bytes) -> bytes:
    """An ``.npy`` header declaring 3 floats in a member 100 MB long."""
    name = _coef_member(base)
    header = forge.npy_header((3,))
    stream, crc, size = forge.deflate_zeros(header, 100 << 20)
    return _replace(base, name, forge.Entry(name, stream, crc, size, method=8))


def sparse_bomb(base: bytes) -> bytes:
    """An SVC fitted on sparse data, its support vectors' ``.npz`` holding a 1 GiB data array."""
    import scipy.sparse as sp
    from sklearn.svm import SVC

    X = sp.csr_matrix(np.random.default_rng(0).normal(size=(40, 3)))
    real = forge.dumps(SVC().fit(X, np.arange(40) % 2))
    schema, members = forge.unpack(real)
    name = forge.attribute(schema, "support_vectors_")["file"]
    header = forge.npy_header((GIB // 8,))
    stream, crc, size = forge.deflate_zeros(header, GIB)
    inner = forge.entries_of_zip(members[name])
    inner = [e for e in inner if e.name != "data.npy"]
    npz = forge.write_zip([*inner, forge.Entry("data.npy", stream, crc, size, method=8)])
    return _replace(real, name, forge.stored(name, npz))


def many_members(base: bytes, count: int = SMALL_MEMBER_LIMIT + 1) -> bytes:
    """A zip whose directory holds more members than the limit (the test lowers the limit so the
    file fits in a request body; ``test_a_zip_over_the_default_member_limit_...`` uses 100,001)."""
    return forge.write_zip(
        forge.entries_of(base) + [forge.stored(f"{i}", b"") for i in range(count)]
    )


def deep_json(base: bytes) -> bytes:
    """A schema nested 100,000 lists deep (json.loads alone would overflow the stack)."""
    text = b'{"protocol": 2, "gadget": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return forge.write_zip([forge.stored("schema.json", text)])


def deep_nodes(base: bytes) -> bytes:
    """Valid nodes nested deeper than the check follows."""
    nested = forge.list_of()
    for _ in range(MAX_DEPTH + 5):
        nested = forge.list_of(nested)
    return forge.with_attribute(base, nested)


def many_types(base: bytes) -> bytes:
    """Thousands of distinct untrusted type names (the message stays short)."""
    names = [forge.type_node(f"evil.module{i}.Thing") for i in range(5_000)]
    return forge.with_attribute(base, forge.list_of(*names))


BOMBS: dict[str, Callable[[bytes], bytes]] = {
    "issue-1-GiB-array-in-a-1-MB-file": issue_bomb,
    "zip-member-understates-its-expansion": understated_member,
    "zip-member-overstates-its-size": overstated_member,
    "npy-header-claims-more-than-the-member-holds": npy_claims_more,
    "npy-header-claims-less-than-the-member-holds": npy_claims_less,
    "sparse-matrix-npz-holds-a-1-GiB-array": sparse_bomb,
    "zip-directory-holds-more-members-than-the-limit": many_members,
    "schema-json-nested-100000-deep": deep_json,
    "nodes-nested-past-the-depth-limit": deep_nodes,
    "five-thousand-untrusted-types": many_types,
}


@pytest.fixture(autouse=True)
def small_member_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safety, "MAX_MEMBERS", SMALL_MEMBER_LIMIT)


@pytest.fixture(scope="module")
def base() -> bytes:
    return forge.dumps(forge.fitted_model())


@pytest.fixture(scope="module")
def bombs(base: bytes) -> dict[str, bytes]:
    return {name: build(base) for name, build in BOMBS.items()}


def test_the_issue_bomb_is_a_one_megabyte_file_that_declares_a_gibibyte(
    bombs: dict[str, bytes],
) -> None:
    bomb = bombs["issue-1-GiB-array-in-a-1-MB-file"]
    assert len(bomb) < 1_100_000
    header = forge.npy_header((GIB // 8,))
    assert npy_data_size(header + bytes(8)) == (len(header), GIB)
    message = _message(bomb)
    assert "SYNAPSE_MAX_MODEL_BYTES" in message and str(get_settings().max_model_bytes) in message


def test_a_zip_over_the_default_member_limit_is_refused_before_its_directory_is_parsed(
    base: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # the shipped limit
    data = many_members(base, count=safety.MAX_MEMBERS)
    (_, peak) = _traced(lambda: pytest.raises(UnsafeArtifactError, check_artifact, data))
    assert f"the limit is {safety.MAX_MEMBERS} files" in _message(data)
    assert peak < 8 << 20  # no ZipInfo per entry was built


def _traced(call: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak


def _body(data: bytes) -> dict[str, Any]:
    return {
        "artifact_base64": base64.b64encode(data).decode(),
        "format": "skops",
        "task": "classification",
        "feature_names": ["x0", "x1", "x2"],
        "background_sample": [[0.0, 0.5, 1.0], [1.0, 0.0, -1.0]],
    }


def _message(data: bytes) -> str:
    with pytest.raises(UnsafeArtifactError) as caught:
        check_artifact(data)
    return caught.value.message


def _assert_refused(response: Any, message: str, peak: int) -> None:
    assert response.status_code == 422, response.data
    assert response.data["error"] == "unsafe_artifact"
    assert response.data["message"] == message
    assert len(json.dumps(response.data)) < 4_000
    assert peak < TRACED_LIMIT, f"{peak} bytes traced"


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_bomb_is_refused_at_registration_without_expanding(
    module_http: Http, bombs: dict[str, bytes], name: str
) -> None:
    data = bombs[name]
    model_id = model(module_http)
    response, peak = _traced(
        lambda: module_http.call("POST", f"/models/{model_id}/versions", _body(data))
    )
    _assert_refused(response, _message(data), peak)
    assert module_http.call("GET", f"/models/{model_id}/versions").data["versions"] == []


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_bomb_planted_in_s3_is_refused_by_the_load_path_without_expanding(
    module_http: Http, base: bytes, bombs: dict[str, bytes], name: str
) -> None:
    from chalicelib.registry.repository import ModelVersionTable

    model_id = model(module_http)
    registered = module_http.call("POST", f"/models/{model_id}/versions", _body(base))
    assert registered.status_code == 201, registered.data
    data = bombs[name]
    digest = hashlib.sha256(data).hexdigest()
    key = f"artifacts/{model_id}/{digest}.skops"
    aws.client("s3").put_object(Bucket=get_settings().models_bucket, Key=key, Body=data)
    item = ModelVersionTable.get(model_id, registered.data["version"])
    item.update(
        actions=[
            ModelVersionTable.artifact_key.set(key),
            ModelVersionTable.artifact_sha256.set(digest),
            ModelVersionTable.artifact_size.set(len(data)),
        ]
    )
    body = {"model_id": model_id, "model_version": 1, "input_data": {"x0": 0, "x1": 0, "x2": 0}}
    response, peak = _traced(lambda: module_http.call("POST", "/explanations", body))
    _assert_refused(response, _message(data), peak)
