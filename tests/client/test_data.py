"""``push`` and ``pull`` against a local stack: a 200 MB push with progress, interrupted pushes
that resume (multipart: only unacknowledged parts are sent; direct: no re-hash), and pulls that
verify the sha256 and resume a partial download."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chalicelib.dataversion.storage import direct_key
from synapse_client import Client, IntegrityError
from synapse_client.cli import main
from synapse_client.data import ResumeRecord, sha256_file

MB = 1_000_000
BLOCK = "".join(f"{j},{j % 97},{j & 1}\n" for j in range(40_000)).encode()


def csv_file(path: Path, size: int, first_row: str) -> Path:
    """A CSV of at least ``size`` bytes: a header, a unique row, then repeated blocks."""
    with open(path, "wb") as out:
        out.write(f"id,value,label\n{first_row},0,0\n".encode())
        written = 0
        while written < size:
            out.write(BLOCK)
            written += len(BLOCK)
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return csv_file(tmp_path_factory.mktemp("data") / "big.csv", 200 * MB, "big-1")


@pytest.fixture
def env(stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SYNAPSE_URL", stack.url)
    monkeypatch.setenv("SYNAPSE_TOKEN", stack.admin_token)
    monkeypatch.setenv("SYNAPSE_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


class Interrupt:
    """A progress callback that presses Ctrl-C once ``limit`` bytes were uploaded."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.phases: set[str] = set()

    def __call__(self, phase: str, done: int, total: int) -> None:
        self.phases.add(phase)
        if phase == "upload" and done >= self.limit:
            raise KeyboardInterrupt


def test_a_200_mb_push_shows_progress_and_makes_a_verified_version(
    env: Path, admin: Client, big: Path, tmp_path: Path
) -> None:
    dataset_id = admin.create_dataset("big-direct")["dataset_id"]
    result = CliRunner().invoke(main, ["--json", "data", "push", str(big), dataset_id])
    assert result.exit_code == 0, (result.stderr, result.exception)
    pushed = json.loads(result.stdout)
    expected = hashlib.sha256(big.read_bytes()).hexdigest()
    assert pushed["mode"] == "direct" and pushed["sha256"] == expected
    assert pushed["sent_bytes"] == big.stat().st_size
    version = pushed["version"]
    assert version["sha256"] == expected and version["size_bytes"] == big.stat().st_size
    assert version["row_count"] == 1 + 40_000 * -(-200 * MB // len(BLOCK))
    for phase in ("hash", "upload"):
        steps = [line for line in result.stderr.splitlines() if line.startswith(f"{phase}:")]
        assert steps[0].startswith(f"{phase}:   0%") and steps[-1].startswith(f"{phase}: 100%")
        assert len(steps) == 11
    target = tmp_path / "back.csv"
    pulled = CliRunner().invoke(main, ["-q", "data", "pull", dataset_id, "1", "-o", str(target)])
    assert pulled.exit_code == 0, pulled.stderr
    assert sha256_file(target) == expected


def test_an_interrupted_multipart_push_resumes_with_only_the_missing_parts(
    env: Path, admin: Client, tmp_path: Path
) -> None:
    # Over 64 MiB, so 16 MiB parts: five, two of them sent before the interruption. (The
    # 200 MB file took 12 parts and a 200 MB ingest to show the same.)
    big = csv_file(tmp_path / "multipart.csv", 70 * MB, "multipart-1")
    dataset_id = admin.create_dataset("big-multipart")["dataset_id"]
    stop = Interrupt(limit=40 * MB)
    with pytest.raises(KeyboardInterrupt):
        admin.push(str(big), dataset_id, mode="multipart", progress=stop)
    record = ResumeRecord(big, dataset_id, admin.url, env)
    acknowledged = len(record.data["parts"])
    total_parts = len(record.data["upload"]["part_urls"])
    assert 1 <= acknowledged < total_parts
    assert admin.list_versions(dataset_id)["total"] == 0

    result = CliRunner().invoke(main, ["--json", "data", "push", "--multipart", str(big),
                                       dataset_id])  # fmt: skip
    assert result.exit_code == 0, (result.stderr, result.exception)
    resumed = json.loads(result.stdout)
    assert resumed["resumed"] is True and resumed["mode"] == "multipart"
    assert resumed["sent_parts"] == total_parts - acknowledged
    assert resumed["sent_bytes"] < big.stat().st_size
    assert resumed["sha256"] == sha256_file(big)  # hashed while reading, across both runs
    assert resumed["version"]["sha256"] == resumed["sha256"]
    assert not record.file.exists()


def test_an_interrupted_direct_push_resumes_without_hashing_again(
    env: Path, admin: Client, tmp_path: Path
) -> None:
    path = csv_file(tmp_path / "mid.csv", 20 * MB, "mid-1")
    dataset_id = admin.create_dataset("mid-direct")["dataset_id"]
    stop = Interrupt(limit=5 * MB)
    with pytest.raises(KeyboardInterrupt):
        admin.push(str(path), dataset_id, progress=stop)
    assert stop.phases == {"hash", "upload"}
    again = Interrupt(limit=10**12)
    found = admin.push(str(path), dataset_id, progress=again)
    assert "hash" not in again.phases and found["resumed"] is True
    assert found["mode"] == "direct" and found["version"]["version_number"] == 1
    assert admin.list_versions(dataset_id)["total"] == 1


def test_a_resumed_push_of_a_different_file_with_the_same_name_size_and_mtime_starts_over(
    env: Path, admin: Client, tmp_path: Path
) -> None:
    mode = "multipart"
    path = csv_file(tmp_path / "same.csv", 70 * MB, "first-1")  # over 64 MiB: 16 MiB parts
    dataset_id = admin.create_dataset(f"replaced-{mode}")["dataset_id"]
    with pytest.raises(KeyboardInterrupt):
        admin.push(str(path), dataset_id, mode=mode, progress=Interrupt(limit=20 * MB))
    assert len(ResumeRecord(path, dataset_id, admin.url, env).data["parts"]) >= 1
    before = path.stat()
    with open(path, "r+b") as out:  # another file: same name, size and mtime, new first part
        out.seek(len(b"id,value,label\n"))
        out.write(b"other-1")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    found = admin.push(str(path), dataset_id, mode=mode, timeout=60)
    assert found["sha256"] == sha256_file(path)
    assert found["version"]["sha256"] == sha256_file(path)
    versions = admin.list_versions(dataset_id)
    assert versions["total"] == 1, versions  # no version of the two files' parts mixed


def test_pull_refuses_bytes_that_do_not_match_and_resumes_a_partial_download(
    env: Path, admin: Client, stack: Any, tmp_path: Path
) -> None:
    import boto3

    path = csv_file(tmp_path / "small.csv", 3 * MB, "small-1")
    dataset_id = admin.create_dataset("pull-checks")["dataset_id"]
    version = admin.push(str(path), dataset_id)["version"]
    target = tmp_path / "copy.csv"
    partial = target.with_name("copy.csv.part")
    partial.write_bytes(path.read_bytes()[: 1 * MB])
    found = admin.pull(dataset_id, version["version_id"], str(target))
    assert found["resumed_from"] == 1 * MB and target.read_bytes() == path.read_bytes()
    assert not partial.exists()

    s3 = boto3.client("s3", endpoint_url=stack.endpoint_url, region_name="us-east-1")
    bucket = stack.resources.buckets[0]
    key = direct_key(version["sha256"], dataset_id)  # a push declares the sha256: direct
    s3.put_object(Bucket=bucket, Key=key, Body=b"tampered")
    other = tmp_path / "other.csv"
    with pytest.raises(IntegrityError):
        admin.pull(dataset_id, 1, str(other))
    assert not other.exists() and not other.with_name("other.csv.part").exists()
    result = CliRunner().invoke(main, ["data", "pull", dataset_id, "1", "-o", str(other)])
    assert result.exit_code == 7 and "sha256" in result.stderr


def test_an_interrupted_cli_push_exits_130_and_the_next_run_resumes(
    env: Path, admin: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synapse_client import output

    path = csv_file(tmp_path / "cli.csv", 70 * MB, "cli-1")
    dataset_id = admin.create_dataset("cli-resume")["dataset_id"]
    original = output.ProgressBar.__call__

    def press_ctrl_c(self: Any, phase: str, done: int, total: int) -> None:
        original(self, phase, done, total)
        if phase == "upload" and done > 20 * MB:
            raise KeyboardInterrupt

    monkeypatch.setattr(output.ProgressBar, "__call__", press_ctrl_c)
    first = CliRunner().invoke(main, ["data", "push", "--multipart", str(path), dataset_id])
    assert first.exit_code == 130 and "resume" in first.stderr
    monkeypatch.setattr(output.ProgressBar, "__call__", original)
    second = CliRunner().invoke(main, ["data", "push", "--multipart", str(path), dataset_id])
    assert second.exit_code == 0, second.stderr
    assert "(resumed)" in second.stdout and "version 1" in second.stdout


def test_an_interrupted_pull_of_one_version_does_not_spoil_a_pull_of_another_to_the_same_path(
    env: Path, admin: Client, tmp_path: Path
) -> None:
    first = csv_file(tmp_path / "v1.csv", 3 * MB, "v1-1")
    second = csv_file(tmp_path / "v2.csv", 3 * MB, "v2-2")
    dataset_id = admin.create_dataset("pull-two-versions")["dataset_id"]
    admin.push(str(first), dataset_id)
    admin.push(str(second), dataset_id)
    target = tmp_path / "data.csv"

    def stop(phase: str, done: int, total: int) -> None:
        if phase == "download" and done >= 1 * MB:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        admin.pull(dataset_id, 1, str(target), progress=stop)
    assert target.with_name("data.csv.part").stat().st_size >= 1 * MB
    found = admin.pull(dataset_id, 2, str(target))
    assert found["resumed_from"] == 0 and target.read_bytes() == second.read_bytes()
    assert not target.with_name("data.csv.part").exists()
