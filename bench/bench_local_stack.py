"""The local stack under a long run: memory and batch-post latency as outcomes accumulate, and
memory per 1,000 dataset, version and explanation operations.

The stack runs as ``make run`` runs it: a child ``python -m synapse_local`` keeping its state on
disk (a temporary ``SYNAPSE_LOCAL_DIR``), schedules on their own rates. One experiment gets
outcomes in batches of 200 (100 per arm) over one keep-alive session, as in issue 17's
measurement; at each checkpoint the bench records the child's RSS (``/proc/<pid>/status``) and
the median time of the last 25 posts. Before the fix RSS went 187 → 2,550 MiB and a post
435 → 1,537 ms from 0 to 20,000 outcomes.

What an outcome legitimately adds is its dedup record (kept 7 days, as deployed); the local stack
keeps those in SQLite (:mod:`synapse_local.diskitems`), not in moto's memory, so RSS stays flat.
The rows report RSS itself (at the last checkpoint vs the first) and the growth per 1,000
outcomes (late vs early), which is what a leak makes grow.

Then, on the same stack, rounds of dataset creations, inline CSV versions and TreeSHAP
explanations (distinct inputs, so each is computed and cached): the memory retained per 1,000
operations, last round vs first, counted by the stack itself with tracemalloc after a garbage
collection (``synapse_local.memreport``, started when the rounds start). RSS growth per round is
noted beside it but not judged: over a round of 100-150 operations it moves in the allocator's
steps of megabytes (an earlier run read 26 → 51 MiB per 1,000 dataset creations from two rounds
of 100, while the traced memory per operation stayed the same).

Usage: ``.venv/bin/python bench/bench_local_stack.py [--quick] [--outcomes N] [--seconds S]
[--rounds R] [--operations K]``; ``--quick`` keeps issue 17's span (200,000 outcomes) and makes
the other rounds shorter (2 of 100 operations). Writes
``bench/results/local_stack.json``.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from results_io import machine_meta, report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.stack import local_stack  # noqa: E402
from synapse_local import memreport  # noqa: E402

BATCH = 200
LATENCY_WINDOW = 25
TARGET_RATIO = 1.2
ROUND_OPERATIONS = 150
WARM_OPERATIONS = 20


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Client:
    """A keep-alive session with the admin token."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None, status: int | None = None) -> Any:
        response = self.session.request(method, f"{self.url}{path}", json=body, timeout=120)
        if response.status_code >= 400 or (status is not None and response.status_code != status):
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None


def _model(client: Client) -> tuple[str, Any]:
    """A registered tree model (2 versions) and the model object (for explanation inputs)."""
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from skops.io import dumps

    rng = np.random.default_rng(3)
    features = rng.normal(size=(400, 6))
    labels = (features[:, 0] + features[:, 1] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0)
    model.fit(features, labels)
    model_id = client.call("POST", "/models", {"name": f"bench-local-{uuid.uuid4().hex[:8]}"})[
        "model_id"
    ]
    body = {
        "artifact_base64": base64.b64encode(dumps(model)).decode(),
        "format": "skops",
        "task": "classification",
        "feature_names": [f"f{i}" for i in range(6)],
        "class_names": ["0", "1"],
        "background_sample": features[:50].round(4).tolist(),
    }
    for _ in range(2):
        client.call("POST", f"/models/{model_id}/versions", body)
    return model_id, model


def _experiment(client: Client, model_id: str) -> str:
    variants = [
        {"variant_id": "control", "model_id": model_id, "model_version": 1,
         "traffic_weight": "0.5", "is_control": True},
        {"variant_id": "treatment", "model_id": model_id, "model_version": 2,
         "traffic_weight": "0.5"},
    ]  # fmt: skip
    experiment_id = client.call("POST", "/experiments", {"name": "soak", "variants": variants})[
        "experiment_id"
    ]
    client.call("POST", f"/experiments/{experiment_id}/start")
    return experiment_id


def post_outcomes(
    client: Client, pid: int, experiment_id: str, checkpoints: list[int], seconds: float
) -> list[dict[str, Any]]:
    """Posts batches until the last checkpoint, or the first checkpoint after ``seconds``;
    RSS and recent post latency at each."""
    found, posted, recent = [], 0, []
    path = f"/experiments/{experiment_id}/outcomes"
    deadline = time.monotonic() + seconds
    for checkpoint in checkpoints:
        if found and time.monotonic() > deadline:
            print(f"  time bound reached at {posted:,} outcomes", flush=True)
            break
        while posted < checkpoint:
            outcomes = [
                {"variant_id": "control" if i % 2 else "treatment", "request_id": f"r{posted + i}",
                 "success": (posted + i) % 23 != 0, "latency_ms": 10.0 + (posted + i) % 90,
                 "converted": (posted + i) % 9 == 0}
                for i in range(BATCH)
            ]  # fmt: skip
            started = time.perf_counter()
            receipt = client.call("POST", path, {"outcomes": outcomes})
            recent = [*recent[-(LATENCY_WINDOW - 1) :], time.perf_counter() - started]
            if receipt["accepted"] != BATCH:
                raise RuntimeError(f"batch at {posted}: {receipt}")
            posted += BATCH
        found.append(
            {
                "outcomes": posted,
                "rss_mib": round(rss_mib(pid), 1),
                "post_ms": round(statistics.median(recent) * 1000, 1),
            }
        )
        print(f"  {found[-1]}", flush=True)
    metrics = client.call("GET", f"/experiments/{experiment_id}/metrics")
    counted = sum(v["request_count"] for v in metrics["variants"].values())
    if counted != posted:
        raise RuntimeError(f"{counted} outcomes counted, {posted} posted")
    return found


def traced_mib(pid: int, memory_file: str) -> float:
    """The Python memory (MiB) the stack holds after a garbage collection, traced since the
    first call (``synapse_local.memreport``: SIGUSR1, then the stack writes the figure)."""
    last = memreport.read(memory_file)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = memreport.read(memory_file)
        if found is not None and (last is None or found[0] > last[0]):
            return found[1] / 2**20
        time.sleep(0.02)
    raise RuntimeError("the stack did not report its memory")


def _rounds(
    pid: int, memory_file: str, rounds: int, operations: int, operation: Callable[[int], None]
) -> dict[str, list[float]]:
    """Growth per 1,000 operations in each round, of the Python memory retained (traced) and
    of RSS, after a few unmeasured operations (the first explanation imports shap: a one-off,
    not a growth)."""
    for number in range(WARM_OPERATIONS):
        operation(-1 - number)
    traced, rss, number = [], [], 0
    held, resident = traced_mib(pid, memory_file), rss_mib(pid)
    for _ in range(rounds):
        for _ in range(operations):
            operation(number)
            number += 1
        now_held, now_resident = traced_mib(pid, memory_file), rss_mib(pid)
        print(f"    grew {now_held - held:+.2f} MiB traced:", memreport.growth(memory_file))
        traced.append(round((now_held - held) * 1000 / operations, 3))
        rss.append(round((now_resident - resident) * 1000 / operations, 2))
        held, resident = now_held, now_resident
    return {"traced": traced, "rss": rss}


def other_operations(
    client: Client, pid: int, memory_file: str, model_id: str, rounds: int, operations: int
) -> dict[str, dict[str, list[float]]]:
    """Memory growth per 1,000 dataset creations, inline versions and explanations."""
    dataset_id = client.call("POST", "/datasets", {"name": f"soak-{uuid.uuid4().hex[:6]}",
                                                   "format": "csv"})["dataset_id"]  # fmt: skip

    def create_dataset(number: int) -> None:
        client.call("POST", "/datasets", {"name": f"soak-{uuid.uuid4().hex[:8]}", "format": "csv"})

    def create_version(number: int) -> None:
        rows = "".join(f"{number},{i},{(number * 7 + i) % 13}\n" for i in range(20))
        client.call("POST", f"/datasets/{dataset_id}/versions", {"data": f"id,x,y\n{rows}"})

    def explain(number: int) -> None:
        instance = {f"f{i}": ((number * 13 + i * 7) % 97) / 48.0 - 1.0 for i in range(6)}
        client.call(
            "POST",
            "/explanations",
            {"model_id": model_id, "model_version": 1, "input_data": instance},
        )

    return {
        "dataset creations": _rounds(pid, memory_file, rounds, operations, create_dataset),
        "inline dataset versions (20-row CSV)": _rounds(
            pid, memory_file, rounds, operations, create_version
        ),
        "TreeSHAP explanations (distinct inputs)": _rounds(
            pid, memory_file, rounds, operations, explain
        ),
    }


def _flat(first: float, last: float, floor: float) -> bool:
    """``last`` within 20% of ``first``, or both under a noise floor."""
    return last <= first * TARGET_RATIO or max(first, last) <= floor


def rows_for(
    checkpoints: list[dict[str, Any]],
    others: dict[str, dict[str, list[float]]],
    operations: int = ROUND_OPERATIONS,
) -> list[dict[str, Any]]:
    """The shared-format rows."""
    first, last = checkpoints[0], checkpoints[-1]
    span = f"{first['outcomes']:,} → {last['outcomes']:,} outcomes"
    points = "; ".join(
        f"{c['outcomes']:,}: {c['rss_mib']:.0f} MiB, {c['post_ms']:.0f} ms" for c in checkpoints
    )
    mid = checkpoints[len(checkpoints) // 2]
    if len(checkpoints) < 3:
        raise RuntimeError(f"too few checkpoints reached to compare: {checkpoints}")
    early = (mid["rss_mib"] - first["rss_mib"]) / (mid["outcomes"] - first["outcomes"]) * 1000
    late = (last["rss_mib"] - mid["rss_mib"]) / (last["outcomes"] - mid["outcomes"]) * 1000
    rows = [
        {
            "figure": f"local stack RSS, {span} (make run, state kept on disk)",
            "ours": last["rss_mib"],
            "peer": first["rss_mib"],
            "peer_name": f"RSS at {first['outcomes']:,}",
            "ratio": round(last["rss_mib"] / first["rss_mib"], 3),
            "unit": "MiB",
            "target": f"≤ {TARGET_RATIO} (issue 17: 187 → 2,550 MiB over 0 → 20,000)",
            "met": last["rss_mib"] <= first["rss_mib"] * TARGET_RATIO,
            "note": f"{points}. The dedup records (one per outcome, kept 7 days as deployed) "
            "are in SQLite (synapse_local.diskitems); in moto's dict they took about 1.5 KB each",
        },
        {
            "figure": "local stack RSS growth per 1,000 outcomes, late half vs early half",
            "ours": round(late, 2),
            "peer": round(early, 2),
            "peer_name": "early half",
            "ratio": round(late / early, 3) if early > 0 else None,
            "unit": "MiB/1,000",
            "target": f"late ≤ {TARGET_RATIO}× early (no leak)",
            "met": _flat(early, late, 0.5),
        },
        {
            "figure": f"batch POST of {BATCH} outcomes, median of {LATENCY_WINDOW}, {span}",
            "ours": last["post_ms"],
            "peer": first["post_ms"],
            "peer_name": f"at {first['outcomes']:,}",
            "ratio": round(last["post_ms"] / first["post_ms"], 3),
            "unit": "ms",
            "target": f"≤ {TARGET_RATIO} (issue 17: 435 → 1,537 ms over 4,000 → 20,000)",
            "met": last["post_ms"] <= first["post_ms"] * TARGET_RATIO,
        },
    ]
    for name, growth in others.items():
        traced, rss = growth["traced"], growth["rss"]
        rows.append(
            {
                "figure": f"local stack memory retained per 1,000 {name} (Python heap, "
                "tracemalloc), last round vs first",
                "ours": traced[-1],
                "peer": traced[0],
                "peer_name": "first round",
                "ratio": round(traced[-1] / traced[0], 3) if traced[0] > 0 else None,
                "unit": "MiB/1,000",
                "target": f"≤ {TARGET_RATIO}× first (or both ≤ 0.5 MiB/1,000)",
                "met": _flat(traced[0], traced[-1], 0.5),
                "note": f"per round of {operations}, traced: {traced}; RSS growth per 1,000 "
                f"(allocator steps of megabytes, not a measure of {operations} operations): "
                f"{rss}",
            }
        )
    return rows


def main() -> None:
    """Runs the soak and writes ``bench/results/local_stack.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 100 operations")
    parser.add_argument("--outcomes", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--seconds", type=float, default=None, help="bound on posting (default 900, quick 720)"
    )
    parser.add_argument("--operations", type=int, default=None, help="operations per round")
    args = parser.parse_args()
    total = args.outcomes or 200_000
    checkpoints = sorted({10_000, *(total * k // 8 // BATCH * BATCH for k in range(1, 9))})
    checkpoints = [c for c in checkpoints if 10_000 <= c <= total]
    rounds = args.rounds or (2 if args.quick else 3)
    with tempfile.TemporaryDirectory() as scratch:
        memory_file = str(Path(scratch) / "memory.txt")
        state = {
            "SYNAPSE_LOCAL_PERSIST": "1",
            "SYNAPSE_LOCAL_DIR": str(Path(scratch) / "state"),
            memreport.ENV: memory_file,
        }
        with local_stack(Path(scratch), None, state) as stack:
            assert stack.pid is not None
            client = Client(stack.url, stack.token)
            model_id, _ = _model(client)
            experiment_id = _experiment(client, model_id)
            print(f"posting {total:,} outcomes in batches of {BATCH}", flush=True)
            seconds = args.seconds or (720.0 if args.quick else 900.0)
            found = post_outcomes(client, stack.pid, experiment_id, checkpoints, seconds)
            print("datasets, versions, explanations", flush=True)
            operations = args.operations or (100 if args.quick else ROUND_OPERATIONS)
            others = other_operations(client, stack.pid, memory_file, model_id, rounds, operations)
    meta = {**machine_meta(), "checkpoints": found, "others": others, "batch": BATCH}
    report("local_stack", rows_for(found, others, operations), meta)


if __name__ == "__main__":
    main()
