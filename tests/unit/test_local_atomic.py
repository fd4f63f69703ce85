"""The local stack's files are replaced whole or not at all (the state and the admin token)."""

from __future__ import annotations

from pathlib import Path

import pytest

from synapse_local import persistence


def test_a_write_killed_before_the_rename_keeps_the_old_file_and_leaves_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "admin-token"
    persistence.write_atomically(target, b"snk_old")
    assert target.stat().st_mode & 0o777 == 0o600

    def killed(*args: object) -> None:
        raise OSError("killed before the rename")

    monkeypatch.setattr(persistence.os, "replace", killed)
    with pytest.raises(OSError, match="killed"):
        persistence.write_atomically(target, b"snk_new")
    assert target.read_bytes() == b"snk_old"
    assert list(tmp_path.iterdir()) == [target]


def test_the_stack_writes_its_admin_token_through_the_atomic_writer() -> None:
    source = (Path(persistence.__file__).parent / "stack.py").read_text(encoding="utf-8")
    assert "write_atomically(token_file" in source and "O_TRUNC" not in source
