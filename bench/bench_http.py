"""HTTP routing on the local stack: ``POST /experiments/{id}/route`` requests/s next to
``GET /health`` on the same server (what routing adds over the framework's own floor).

The stack runs in a child process (``python -m synapse_local``, loopback only); the load comes
from a few client threads with keep-alive sessions, for a bounded time per endpoint, alternating
health and route rounds so that drift on a shared machine hits both alike. Reported: the mean
requests/s over the rounds and the ratio route / health (target ≥ 0.8).

Usage: ``.venv/bin/python bench/bench_http.py [--quick] [--seconds S] [--threads N]``; writes
``bench/results/http.json`` (rows: figure, ours, peer, ratio, unit, target, met).
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from results_io import machine_meta, report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.stack import local_stack  # noqa: E402

TARGET_RATIO = 0.8


def _setup(url: str, token: str) -> str:
    """Registers two model versions and starts a 50/50 experiment; returns its id."""
    from sklearn.linear_model import LogisticRegression
    from skops.io import dumps

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    model = LogisticRegression().fit([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], [0, 1, 1, 0])
    artifact = base64.b64encode(dumps(model)).decode()
    created = session.post(f"{url}/models", json={"name": f"bench-http-{uuid.uuid4().hex[:8]}"})
    model_id = created.json()["model_id"]
    for _ in range(2):
        session.post(
            f"{url}/models/{model_id}/versions",
            json={"artifact_base64": artifact, "format": "skops", "task": "classification",
                  "feature_names": ["a", "b"], "class_names": ["0", "1"]},
        ).raise_for_status()  # fmt: skip
    variants = [
        {"variant_id": "control", "model_id": model_id, "model_version": 1,
         "traffic_weight": "0.5", "is_control": True},
        {"variant_id": "treatment", "model_id": model_id, "model_version": 2,
         "traffic_weight": "0.5"},
    ]  # fmt: skip
    experiment = session.post(
        f"{url}/experiments", json={"name": "bench-http", "variants": variants}
    )
    experiment.raise_for_status()
    experiment_id = experiment.json()["experiment_id"]
    session.post(f"{url}/experiments/{experiment_id}/start").raise_for_status()
    return experiment_id


def _load(
    url: str, token: str, experiment_id: str | None, seconds: float, threads: int
) -> dict[str, Any]:
    """Requests/s of one endpoint for ``seconds`` with ``threads`` clients (2xx only)."""
    counts, errors = [0] * threads, [0] * threads
    stop = threading.Event()

    def client(index: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        number = 0
        while not stop.is_set():
            number += 1
            if experiment_id is None:
                response = session.get(f"{url}/health", timeout=30)
            else:
                response = session.post(
                    f"{url}/experiments/{experiment_id}/route",
                    json={"request_id": f"{index}-{number}", "user_id": f"u{index}-{number}"},
                    timeout=30,
                )
            if response.ok:
                counts[index] += 1
            else:
                errors[index] += 1

    workers = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return {"rps": sum(counts) / elapsed, "requests": sum(counts), "errors": sum(errors)}


def run(seconds: float, threads: int, rounds: int) -> dict[str, Any]:
    """Starts a stack, sets up an experiment and alternates health / route rounds."""
    with tempfile.TemporaryDirectory() as scratch, local_stack(Path(scratch), 3600.0) as stack:
        experiment_id = _setup(stack.url, stack.token)
        _load(stack.url, stack.token, experiment_id, 1.0, threads)  # warm the route path
        _load(stack.url, stack.token, None, 1.0, threads)
        health, route = [], []
        for _ in range(rounds):
            health.append(_load(stack.url, stack.token, None, seconds, threads))
            route.append(_load(stack.url, stack.token, experiment_id, seconds, threads))
    return {"health": health, "route": route}


def rows_for(found: dict[str, Any], threads: int) -> list[dict[str, Any]]:
    """The shared-format result row."""
    health = statistics.mean(r["rps"] for r in found["health"])
    route = statistics.mean(r["rps"] for r in found["route"])
    ratio = route / health if health else None
    errors = sum(r["errors"] for r in found["health"] + found["route"])
    return [
        {
            "figure": f"HTTP POST /experiments/{{id}}/route req/s vs GET /health, same local "
            f"server ({threads} client threads)",
            "ours": round(route, 1),
            "peer": round(health, 1),
            "peer_name": "GET /health on the same server",
            "ratio": round(ratio, 3) if ratio is not None else None,
            "unit": "req/s",
            "target": f"ratio ≥ {TARGET_RATIO}",
            "met": ratio is not None and ratio >= TARGET_RATIO and errors == 0,
        }
    ]


def main() -> None:
    """Runs the rounds and writes ``bench/results/http.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s rounds instead of 5")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 5.0)
    found = run(seconds, args.threads, args.rounds)
    rows = rows_for(found, args.threads)
    meta = {
        **machine_meta(),
        "seconds_per_round": seconds,
        "threads": args.threads,
        "rounds": found,
    }
    report("http", rows, meta)


if __name__ == "__main__":
    main()
