"""``pull`` against storage that misbehaves (no local stack: the storage answer is scripted): a
download longer than the version's size is cut at the size and refused, so a hostile or broken
storage URL cannot fill the disk."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from synapse_client import IntegrityError
from synapse_client import data as data_module

MB = 1024 * 1024


class EndlessAnswer:
    """A 200 answer streaming 1 MiB chunks until ``limit`` chunks were read."""

    status_code = 200
    text = ""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.read = 0

    def __enter__(self) -> EndlessAnswer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def iter_content(self, size: int) -> Any:
        while self.read < self.limit:
            self.read += 1
            yield b"x" * MB


class OneVersion:
    url = "http://api.test"

    def content_url(self, dataset_id: str, ref: str) -> dict[str, Any]:
        return {"url": "http://storage.test/object", "size_bytes": MB,
                "sha256": hashlib.sha256(b"x" * MB).hexdigest(), "version_id": "dv-1"}  # fmt: skip


def test_a_download_longer_than_the_version_is_cut_at_its_size_and_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = EndlessAnswer(limit=64)
    monkeypatch.setattr(data_module.requests, "get", lambda *args, **kwargs: answer)
    target = tmp_path / "data.bin"
    with pytest.raises(IntegrityError, match="more bytes"):
        data_module.pull(OneVersion(), "ds-1", 1, target)
    assert answer.read <= 2  # stopped one chunk past the size, not at the end of the stream
    assert not target.exists() and not target.with_name("data.bin.part").exists()
