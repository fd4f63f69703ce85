"""HTTP on the local stack against a floor: ``GET /health`` and ``POST /experiments/{id}/route``
requests/s next to a minimal stdlib HTTP server answering a constant, in the same run.

The stack runs in a child process (``python -m synapse_local``, loopback only), and so does the
floor (``http.server`` with HTTP/1.1 keep-alive, answering a constant JSON body in one write:
the best a stdlib server does on this machine). The load comes from a few client threads with
keep-alive ``requests.Session`` s (what the SDKs and the demo use), for a bounded time per
endpoint, rounds alternating floor, health and route so that drift on a shared machine hits all
alike. Reported: the mean requests/s over the rounds, each as a share of the floor (targets:
``/health`` ≥ 50%, ``/route`` ≥ 40%), route / health, and the demo's traffic simulator
(``demo.traffic``: route on 4 threads, outcomes posted in batches) in requests/s; issue 17
measured ~21.7 req/s on ``/health`` with a session and ~20 req/s for the demo's traffic while
every keep-alive response stalled 40 ms.

Usage: ``.venv/bin/python bench/bench_http.py [--quick] [--seconds S] [--threads N]``; writes
``bench/results/http.json`` (rows: figure, ours, peer, ratio, unit, target, met).
"""

from __future__ import annotations

import argparse
import base64
import statistics
import subprocess
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
HEALTH_SHARE = 0.5
ROUTE_SHARE = 0.4
# The floor: a minimal stdlib server answering a constant with keep-alive, one write per response.
FLOOR_SERVER = """
import http.server
BODY = b'{"status":"ok"}'
class Constant(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.wfile.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n"
                         b"Content-Length: %d\\r\\n\\r\\n%s" % (len(BODY), BODY))
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Constant)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


class Floor:
    """The floor server in a child process (a context manager); ``url`` once started."""

    def __enter__(self) -> Floor:
        self.process = subprocess.Popen(
            [sys.executable, "-c", FLOOR_SERVER], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


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
    """Requests/s of one endpoint for ``seconds`` with ``threads`` keep-alive clients (2xx
    only): ``GET {url}/health`` without an experiment, else its ``/route``."""
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


def demo_traffic(url: str, token: str, experiment_id: str, requests_count: int) -> dict[str, Any]:
    """The demo's traffic simulator as the demo runs it (4 threads, outcomes in batches of 50):
    routed requests/s over ``requests_count`` requests."""
    from demo.client import Api
    from demo.traffic import Behaviour, Traffic

    behaviours = {"control": Behaviour(0.02, 80.0, 0.10), "treatment": Behaviour(0.02, 80.0, 0.11)}
    traffic = Traffic(Api(url, token), experiment_id, behaviours, seed=3)
    started = time.perf_counter()
    stats = traffic.run(requests_count)
    elapsed = time.perf_counter() - started
    return {"rps": stats.total / elapsed, "requests": stats.total, "posts": stats.outcome_posts}


def run(seconds: float, threads: int, rounds: int) -> dict[str, Any]:
    """Starts the floor and a stack, sets up an experiment and alternates floor / health /
    route rounds; then the demo's traffic phase."""
    with (
        tempfile.TemporaryDirectory() as scratch,
        Floor() as floor,
        local_stack(Path(scratch), 3600.0) as stack,
    ):
        experiment_id = _setup(stack.url, stack.token)
        _load(stack.url, stack.token, experiment_id, 1.0, threads)  # warm the route path
        _load(stack.url, stack.token, None, 1.0, threads)
        _load(floor.url, "", None, 1.0, threads)
        found: dict[str, list[dict[str, Any]]] = {"floor": [], "health": [], "route": []}
        for _ in range(rounds):
            found["floor"].append(_load(floor.url, "", None, seconds, threads))
            found["health"].append(_load(stack.url, stack.token, None, seconds, threads))
            found["route"].append(_load(stack.url, stack.token, experiment_id, seconds, threads))
        traffic = demo_traffic(stack.url, stack.token, experiment_id, int(seconds * 150))
    return {**found, "demo_traffic": traffic}


def rows_for(found: dict[str, Any], threads: int) -> list[dict[str, Any]]:
    """The shared-format result rows."""
    floor = statistics.mean(r["rps"] for r in found["floor"])
    health = statistics.mean(r["rps"] for r in found["health"])
    route = statistics.mean(r["rps"] for r in found["route"])
    ratio = route / health if health else None
    errors = sum(r["errors"] for r in found["floor"] + found["health"] + found["route"])
    floor_name = "stdlib http.server answering a constant, keep-alive, same run"
    traffic = found["demo_traffic"]
    return [
        {
            "figure": f"HTTP GET /health req/s on the local server vs the floor ({threads} "
            "keep-alive client threads)",
            "ours": round(health, 1),
            "peer": round(floor, 1),
            "peer_name": floor_name,
            "ratio": round(health / floor, 3),
            "unit": "req/s",
            "target": f"ratio ≥ {HEALTH_SHARE} (issue 17: 21.7 req/s, every request stalled)",
            "met": health >= floor * HEALTH_SHARE and errors == 0,
        },
        {
            "figure": f"HTTP POST /experiments/{{id}}/route req/s on the local server vs the "
            f"floor ({threads} keep-alive client threads)",
            "ours": round(route, 1),
            "peer": round(floor, 1),
            "peer_name": floor_name,
            "ratio": round(route / floor, 3),
            "unit": "req/s",
            "target": f"ratio ≥ {ROUTE_SHARE}",
            "met": route >= floor * ROUTE_SHARE and errors == 0,
        },
        {
            "figure": "the demo's traffic phase (demo.traffic: route on 4 threads, outcomes "
            "posted in batches of 50), routed requests/s",
            "ours": round(traffic["rps"], 1),
            "peer": 20.0,
            "peer_name": "issue 17's measurement before the fix",
            "ratio": round(traffic["rps"] / 20.0, 2),
            "unit": "req/s",
            "target": "several times faster",
            "met": traffic["rps"] >= 3 * 20.0,
            "note": f"{traffic['requests']} requests, {traffic['posts']} outcome posts",
        },
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
        },
    ]


def main() -> None:
    """Runs the rounds and writes ``bench/results/http.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s rounds instead of 4")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    seconds = args.seconds or (2.0 if args.quick else 4.0)
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
