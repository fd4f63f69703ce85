"""Leftovers of killed builds in the shared build cache (infra/cache_files.py) are swept by the
next build, and nothing a finished or running build owns is."""

from __future__ import annotations

import os
import time
from pathlib import Path

from infra import package
from infra.cache_files import STALE_SECONDS, sweep_stale
from infra.chalice_build import zip_dependencies


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_only_old_entries_matching_the_pattern_are_swept(tmp_path: Path) -> None:
    old_file, old_dir = tmp_path / "a.zip.x1.tmp", tmp_path / "a.zip.x2.tmp"
    young, other = tmp_path / "a.zip.x3.tmp", tmp_path / "a.zip"
    old_file.write_bytes(b"partial")
    old_dir.mkdir()
    (old_dir / "inside").write_bytes(b"x")
    young.write_bytes(b"still being written")
    other.write_bytes(b"finished")
    for path in (old_file, old_dir, other):
        _age(path, STALE_SECONDS + 60)
    assert sorted(sweep_stale(tmp_path, "*.zip.*.tmp")) == sorted([old_file, old_dir])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "a.zip.x3.tmp"]
    assert sweep_stale(tmp_path / "missing", "*") == []


def test_a_dependencies_zip_build_sweeps_what_a_killed_one_left(tmp_path: Path) -> None:
    vendor, cache = tmp_path / "vendor", tmp_path / "cache"
    (vendor / "dep").mkdir(parents=True)
    (vendor / "dep" / "__init__.py").write_text("x = 1\n")
    cache.mkdir()
    killed = cache / "vendor-0123456789abcdef.zip.k1ll3d.tmp"
    running = cache / "vendor-0123456789abcdef.zip.runn1n.tmp"
    killed.write_bytes(b"PK half")
    running.write_bytes(b"PK half")
    _age(killed, STALE_SECONDS + 1)
    target = zip_dependencies(vendor, cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted([target.name, running.name])


def test_an_install_sweeps_killed_installs_temporary_directories_only(
    tmp_path: Path, monkeypatch
) -> None:
    cache, key = tmp_path / "cache", "0123456789abcdef"
    killed = cache / f"light-{package.RUNTIME}-{key}.ab12cd"
    finished = cache / f"light-{package.RUNTIME}-fedcba9876543210"
    other_label = cache / f"explainer-{package.RUNTIME}-{key}.ef34gh"
    for directory in (killed, finished, other_label):
        (directory / "pkg").mkdir(parents=True)
        _age(directory, STALE_SECONDS + 1)
    installed: list[Path] = []
    monkeypatch.setattr(
        package, "install_for_lambda", lambda reqs, target, *args: installed.append(target)
    )
    target = package.cached_install([package.LIGHT_REQUIREMENTS], cache, "light")
    assert installed == [target]
    assert not killed.exists() and finished.is_dir() and other_label.is_dir()
