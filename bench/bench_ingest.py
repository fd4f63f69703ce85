"""Ingest: version a large file end to end (presigned upload + S3-triggered ingest) against moto.

Setup: moto's ``ThreadedMotoServer`` on 127.0.0.1 (random port), bootstrapped like a deployment
(tables, data bucket, the S3→SQS notifications on ``incoming/`` and ``cas/``). For each size
(256 MiB and 1 GiB; ``--quick``: 64 and 256 MiB) a CSV file is generated on disk and versioned
both ways a client can, each into a fresh dataset with empty storage:

1. **Staged** (no digest declared): the service call behind ``POST /datasets/{id}/uploads``
   (with ``size_bytes``) gives a presigned multipart upload under ``incoming/``; the parts are
   streamed from disk with ``requests``, four at a time, and completed. The ingest streams the
   object once (sha256 + row count + schema sample) and copies it server-side into ``cas/``.
2. **Direct** (``sha256`` declared): the client hashes the file (timed as part of the upload),
   gets one PUT URL straight to the content address with the checksum and ``If-None-Match: *``
   signed in, and PUTs it. The ingest streams it once (row count, schema, a second hash as a
   check) and versions it where it lies: no copy.

   In both, a fresh subprocess runs the local stack's ``S3EventPump`` over the app's
   ``@app.on_s3_event`` handlers and reports its wall time, the time spent hashing/inspecting
   and its peak RSS (``VmHWM``: the worker's own high-water mark).
3. **Raw sha256**, the floor of the hashing row: in the staged run's ingest worker (not the
   direct run's, whose wall time carries the headline), ``hashlib.sha256`` over each chunk the
   ingest observes, timed in the same seconds (before the observer on every
   other chunk, after it on the rest), so ours and the floor hash the same bytes from the same
   download under the same load (moto serves it from the other core for both). The file's own
   sha256 from the page cache (8 MiB chunks, only the ``update`` calls timed) checks both
   digests and is shown for scale.
4. **Peer**: ``dvc add`` + ``dvc push`` of the same file to a bucket on the same moto server,
   with DVC from ``bench/.dvc-venv`` or ``DVC_BIN`` (DVC pins an older botocore than this
   project, so it lives in its own virtualenv; see ``requirements-bench.txt``).

Reported (markdown table + ``bench/results/ingest.json``): end-to-end MB/s (upload + ingest) of
both paths vs DVC (the direct path carries the target), ingest-only MB/s, hashing MB/s during
ingest vs raw sha256, and peak memory at both sizes. MB = 10^6 bytes.
Usage: ``.venv/bin/python bench/bench_ingest.py [--quick]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results_io import machine_meta, report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MIB = 1024 * 1024
CHUNK = 8 * MIB
DVC_BUCKET = "synapse-bench-dvc"
TARGET_RATIO = 2.5
TARGET_HASH_SHARE = 0.5
UPLOAD_THREADS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_env(endpoint: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        SYNAPSE_STAGE="local",
        SYNAPSE_METRICS="off",
        POWERTOOLS_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    return env


def generate_csv(path: Path, size: int) -> None:
    """A CSV of about ``size`` bytes: an 8 MiB block of random rows, repeated."""
    rng = random.Random(7)
    rows = []
    length = 0
    while length < CHUNK:
        row = (
            f"{rng.randint(0, 10**9)},{rng.random():.6f},"
            f"{rng.choice(['a', 'b', 'c'])},{rng.randint(0, 1) == 1}\n"
        )
        rows.append(row)
        length += len(row)
    block = "".join(rows).encode()
    with path.open("wb") as out:
        written = out.write(b"id,score,label,flag\n")
        while written + len(block) <= size:
            written += out.write(block)
        rest = block[: size - written]
        out.write(rest[: rest.rfind(b"\n") + 1])


def raw_sha256(path: Path) -> tuple[float, str]:
    """Seconds spent in ``hashlib.sha256().update`` over the file (page cache warm), and the
    digest."""
    digest = hashlib.sha256()
    spent = 0.0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            started = time.perf_counter()
            digest.update(chunk)
            spent += time.perf_counter() - started
    return spent, digest.hexdigest()


WORKER = r"""
import json, resource, sys, time
queue_url = sys.argv[1]
with_floor = sys.argv[2] == "floor"
import app
from chalicelib.dataversion import content
from synapse_local.pumps import S3EventPump

import hashlib
# The floor is timed here, over the very chunks the ingest sees, in the same process and the
# same seconds (moto serving the download on the other core for both): hashlib.sha256 of each
# chunk, before the observer on odd chunks and after it on even ones (so neither always finds
# the chunk warm in the cache).
spent = [0.0, 0, 0.0, 0]  # observer seconds, bytes, raw sha256 seconds, chunks
floor = hashlib.sha256()
original = content.ContentObserver.see
def raw(chunk):
    started = time.perf_counter()
    floor.update(chunk)
    spent[2] += time.perf_counter() - started
def timed(self, chunk):
    raw_first = with_floor and spent[3] % 2 == 1
    if raw_first:
        raw(chunk)
    started = time.perf_counter()
    original(self, chunk)
    spent[0] += time.perf_counter() - started
    if with_floor and not raw_first:
        raw(chunk)
    spent[1] += len(chunk)
    spent[3] += 1
content.ContentObserver.see = timed

def peak_rss():
    # VmHWM is this process's own high-water mark; ru_maxrss would also count the parent's RSS
    # inherited through fork/exec (the parent runs the moto server holding the objects).
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

pump = S3EventPump.for_app(app.app, queue_url, wait_seconds=2, retry_delay_seconds=1)
started = time.perf_counter()
delivered = 0
deadline = started + 240
while delivered == 0 and time.perf_counter() < deadline and not pump.failures:
    delivered += pump.poll_once()
seconds = time.perf_counter() - started
print(json.dumps({
    "delivered": delivered,
    "failures": pump.failures,
    "seconds": seconds,
    "inspect_seconds": spent[0],
    "inspected_bytes": spent[1],
    "raw_sha256_seconds": spent[2],
    "raw_sha256": floor.hexdigest() if with_floor else None,
    "maxrss_bytes": peak_rss(),
}))
"""


def run_worker(env: dict[str, str], queue_url: str, floor: bool) -> dict[str, Any]:
    """Runs the triggered ingest in a fresh process; with ``floor`` it also hashes every chunk
    with raw ``hashlib.sha256`` (the hashing row's floor), work that is not the product's and
    that then sits inside the worker's wall time."""
    done = subprocess.run(
        [sys.executable, "-c", WORKER, queue_url, "floor" if floor else "plain"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ingest worker failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def dvc_binary() -> str | None:
    for candidate in (os.environ.get("DVC_BIN"), str(ROOT / "bench" / ".dvc-venv" / "bin" / "dvc")):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("dvc")


def run_dvc(dvc: str, env: dict[str, str], endpoint: str, path: Path, tag: str) -> float:
    """Seconds for ``dvc add`` + ``dvc push`` of ``path`` into the moto bucket."""
    work = Path(tempfile.mkdtemp(prefix="bench-dvc-", dir=path.parent))
    try:
        target = work / path.name
        os.link(path, target)
        clean = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        clean["DVC_NO_ANALYTICS"] = "1"

        def dvc_run(*args: str) -> None:
            subprocess.run([dvc, *args], cwd=work, env=clean, check=True, capture_output=True)

        dvc_run("init", "--no-scm", "-q")
        dvc_run("remote", "add", "-d", "bench", f"s3://{DVC_BUCKET}/{tag}")
        dvc_run("remote", "modify", "bench", "endpointurl", endpoint)
        dvc_run("config", "cache.type", "copy")
        started = time.perf_counter()
        dvc_run("add", "-q", target.name)
        dvc_run("push", "-q")
        return time.perf_counter() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)


def upload_session() -> Any:
    """A requests session that sends file bodies in 1 MiB blocks (http.client's default: 8 KiB)."""
    import requests
    import requests.adapters

    class LargeBlocks(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["blocksize"] = MIB
            super().init_poolmanager(*args, **kwargs)

    session = requests.Session()
    session.mount("http://", LargeBlocks())
    return session


def file_sha256(path: Path) -> str:
    """The client's side of a direct upload: the file's digest, read from disk into one reused
    buffer (``hashlib.file_digest``), not a fresh 8 MiB ``bytes`` per read."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def upload_file(service: Any, admin: Any, dataset_id: str, path: Path, declare: bool) -> str:
    """Uploads ``path`` the way a client would and returns the upload mode.

    ``declare``: hash the file, declare the digest and PUT it once with the signed headers
    (a direct upload). Otherwise presigned multipart, parts streamed from disk in parallel
    (single PUT below the multipart threshold), then complete the upload.
    """
    from concurrent.futures import ThreadPoolExecutor

    size = path.stat().st_size
    digest = file_sha256(path) if declare else None
    upload = service.create_upload(admin, dataset_id, path.name, size, digest)
    session = upload_session()
    if upload.url is not None:
        with path.open("rb") as handle:
            response = session.put(upload.url, data=handle, headers=upload.headers, timeout=600)
        response.raise_for_status()
        return upload.mode

    def put_part(numbered: tuple[int, str]) -> tuple[int, str]:
        number, url = numbered
        with path.open("rb") as handle:
            handle.seek((number - 1) * upload.part_size)
            body = PartReader(handle, min(upload.part_size, size - (number - 1) * upload.part_size))
            response = session.put(url, data=body, timeout=600)
        response.raise_for_status()
        return number, response.headers["ETag"]

    with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
        etags = list(pool.map(put_part, enumerate(upload.part_urls, start=1)))
    service.complete_upload(admin, dataset_id, upload.key, upload.upload_id, etags)
    return upload.mode


class PartReader:
    """A file window of ``length`` bytes that requests streams (it has ``read`` and ``len``)."""

    def __init__(self, handle: Any, length: int) -> None:
        self.handle = handle
        self.remaining = length
        self.len = length

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        wanted = self.remaining if size < 0 else min(size, self.remaining)
        data = self.handle.read(wanted)
        self.remaining -= len(data)
        return data


def mb_per_s(size: int, seconds: float) -> float:
    return size / 1e6 / seconds if seconds > 0 else float("inf")


def version_once(
    service: Any, admin: Any, path: Path, env: dict[str, str], queue_url: str, declare: bool
) -> dict[str, Any]:
    """Uploads ``path`` into a new dataset, runs the triggered ingest in a fresh worker and
    removes the stored bytes again (so the next path starts with empty storage)."""
    dataset = service.create_dataset(
        admin, f"bench-{path.stem}-{time.time_ns()}", [], "csv", "backward", "", None
    )
    started = time.perf_counter()
    mode = upload_file(service, admin, dataset.dataset_id, path, declare)
    upload_seconds = time.perf_counter() - started
    # The floor's extra sha256 rides along the staged ingest only: the direct run carries the
    # headline figure, so its wall time holds the product's work and nothing else.
    worker = run_worker(env, queue_url, floor=not declare)
    if not worker["delivered"] or worker["failures"]:
        raise RuntimeError(f"ingest did not complete: {worker}")
    version = service.engine.get_version(dataset.dataset_id)
    service.engine.store.delete(version.storage_key)
    return {"mode": mode, "upload_seconds": upload_seconds, "version": version, **worker}


def measure_size(
    size: int, tmp: Path, env: dict[str, str], resources: Any, dvc: str | None, endpoint: str
) -> dict[str, Any]:
    from chalicelib.core.principal import Principal
    from chalicelib.dataversion.service import get_dataset_service

    path = tmp / f"data-{size // MIB}mib.csv"
    generate_csv(path, size)
    actual = path.stat().st_size
    admin = Principal("bench", "k", frozenset({"admin"}))
    service = get_dataset_service()
    queue = resources.s3_events_queue_url
    staged = version_once(service, admin, path, env, queue, declare=False)
    direct = version_once(service, admin, path, env, queue, declare=True)
    if direct["mode"] != "direct":
        raise RuntimeError(f"expected a direct upload, got {direct['mode']}")
    sha_seconds, expected = raw_sha256(path)
    for run in (staged, direct):
        if run.pop("version").sha256 != expected or run["raw_sha256"] not in (None, expected):
            raise RuntimeError("ingested (or floor) hash differs from the file's sha256")
    dvc_seconds, dvc_error = None, None
    if dvc:
        try:
            dvc_seconds = run_dvc(dvc, env, endpoint, path, str(size))
        except subprocess.CalledProcessError as exc:
            dvc_error = (exc.stderr or b"").decode(errors="replace")[-300:]
    path.unlink()
    return {
        "bytes": actual,
        "staged": staged,
        "direct": direct,
        "raw_sha256_seconds": sha_seconds,
        "maxrss_bytes": max(staged["maxrss_bytes"], direct["maxrss_bytes"]),
        "dvc_seconds": dvc_seconds,
        "dvc_error": dvc_error,
    }


def peer_name(result: dict[str, Any], dvc: str | None) -> str:
    if not dvc:
        return "dvc not installed"
    if result["dvc_seconds"] is None:
        return f"dvc add + push failed against moto: {result['dvc_error']}"
    return "dvc add + dvc push (same moto S3)"


def end_to_end_row(result: dict[str, Any], path: str, dvc: str | None, headline: bool) -> dict:
    run = result[path]
    size = result["bytes"]
    ours = mb_per_s(size, run["upload_seconds"] + run["seconds"])
    peer = mb_per_s(size, result["dvc_seconds"]) if result["dvc_seconds"] else None
    ratio = None if peer is None else ours / peer
    described = {
        "direct": "declared SHA-256: client hash + one verified PUT + ingest in place",
        "staged": "no digest: presigned multipart + ingest + copy into cas/",
    }[path]
    return {
        "figure": f"Version a {size / MIB:.0f} MiB CSV end to end ({described}), MB/s",
        "ours": round(ours, 1),
        "peer": None if peer is None else round(peer, 1),
        "peer_name": peer_name(result, dvc),
        "ratio": None if ratio is None else round(ratio, 2),
        "unit": "MB/s",
        "target": f">= {TARGET_RATIO}x DVC" if headline else "informational",
        "met": None if ratio is None or not headline else ratio >= TARGET_RATIO,
        "note": f"upload {run['upload_seconds']:.1f} s + ingest {run['seconds']:.1f} s"
        + floor_note(run),
    }


def floor_note(run: dict[str, Any]) -> str:
    """Names the bench's own floor hashing inside a run's ingest time, if it ran there."""
    if run["raw_sha256"] is None:
        return ""
    seconds = run["raw_sha256_seconds"]
    return f" (the ingest includes the floor's raw sha256 of every chunk, {seconds:.1f} s)"


def rows_for(results: dict[int, dict[str, Any]], dvc: str | None) -> list[dict[str, Any]]:
    largest = results[max(results)]
    smallest = results[min(results)]
    size = largest["bytes"]
    label = f"{size / MIB:.0f} MiB"
    staged, direct = largest["staged"], largest["direct"]
    hashing = mb_per_s(staged["inspected_bytes"], staged["inspect_seconds"])
    raw = mb_per_s(staged["inspected_bytes"], staged["raw_sha256_seconds"])
    direct_hashing = mb_per_s(direct["inspected_bytes"], direct["inspect_seconds"])
    page_cache = mb_per_s(size, largest["raw_sha256_seconds"])
    return [
        end_to_end_row(largest, "direct", dvc, headline=True),
        end_to_end_row(largest, "staged", dvc, headline=False),
        {
            "figure": f"S3-triggered ingest alone ({label}, direct: stream, hash, count), MB/s",
            "ours": round(mb_per_s(size, largest["direct"]["seconds"]), 1),
            "peer": None,
            "ratio": None,
            "unit": "MB/s",
            "target": "informational",
            "met": None,
        },
        {
            "figure": "Hashing + row counting during ingest vs raw hashlib.sha256, MB/s",
            "ours": round(hashing, 1),
            "peer": round(raw, 1),
            "peer_name": "hashlib.sha256 over the same chunks, same worker, same seconds",
            "ratio": round(hashing / raw, 2),
            "unit": "MB/s",
            "target": f">= {TARGET_HASH_SHARE:.0%} of raw",
            "met": hashing / raw >= TARGET_HASH_SHARE,
            "note": f"staged ingest ({label}, profiles on); the direct ingest (no floor beside "
            f"it) {direct_hashing:.0f} MB/s; sha256 of the file from the page cache, alone, "
            f"{page_cache:.0f} MB/s",
        },
        {
            "figure": f"Peak RSS of ingest, {smallest['bytes'] / MIB:.0f} MiB vs {label}",
            "ours": round(largest["maxrss_bytes"] / MIB, 1),
            "peer": round(smallest["maxrss_bytes"] / MIB, 1),
            "peer_name": f"{smallest['bytes'] / MIB:.0f} MiB file",
            "ratio": round(largest["maxrss_bytes"] / smallest["maxrss_bytes"], 2),
            "unit": "MiB",
            "target": "the same (streaming)",
            "met": largest["maxrss_bytes"] <= smallest["maxrss_bytes"] * 1.1,
            "note": "includes the interpreter and imports",
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB and 256 MiB instead")
    args = parser.parse_args()
    sizes = [64 * MIB, 256 * MIB] if args.quick else [256 * MIB, 1024 * MIB]

    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = bench_env(endpoint)
    os.environ.update({k: env[k] for k in env if k.startswith(("AWS_", "SYNAPSE_", "POWERTOOLS_"))})
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    dvc = dvc_binary()
    results: dict[int, dict[str, Any]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        from chalicelib.core import aws
        from synapse_local.bootstrap import bootstrap

        resources = bootstrap()
        aws.client("s3").create_bucket(Bucket=DVC_BUCKET)
        for size in sizes:
            results[size] = measure_size(size, tmp, env, resources, dvc, endpoint)
            print(f"{size // MIB} MiB: {json.dumps(results[size])}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        server.stop()
    rows = rows_for(results, dvc)
    meta = {
        **machine_meta(),
        "sizes_bytes": [results[s]["bytes"] for s in sizes],
        "dvc": dvc,
        "raw": {str(k): v for k, v in results.items()},
    }
    report("ingest", rows, meta)


if __name__ == "__main__":
    main()
