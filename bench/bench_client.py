"""Client-side (local) assignment: ``LocalExperiment.variant`` assignments/s against the GrowthBook
SDK, and what a routing-config refresh costs.

* ours: ``synapse_client`` against a local stack (loopback HTTP). ``api.local_experiment(id)``
  fetches ``GET /experiments/{id}/routing-config`` once; then ``variant(user)`` assigns in-process
  with the service's own hashing. The config's TTL (the server's, 5 s) is honoured during the
  timed loop, so the 304 revalidations that fall inside it are included.
  ``assign(user_id=...)``, which also makes a request id, is reported next to it.
* peer: one ``growthbook.GrowthBook`` instance, ``set_attributes({"id": user})`` then
  ``run(Experiment(...))`` per user, as in ``bench_routing.py``; measured in the same run.
* refresh cost: the median of ``--refreshes`` full fetches (no ETag) and of 304 revalidations
  (``If-None-Match``), next to ``GET /health`` on the same server (the framework's floor).

Target: local assignment >= 10x GrowthBook. Usage: ``.venv/bin/python bench/bench_client.py
[--quick] [--users N] [--repeats N]``; writes ``bench/results/client.json``.
"""

from __future__ import annotations

import argparse
import base64
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from results_io import machine_meta, report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_RATIO = 10.0


def _time(run: Any, users: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run(users)
        best = min(best, time.perf_counter() - started)
    return len(users) / best


def _artifact() -> str:
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    return base64.b64encode(sio.dumps(LogisticRegression().fit(x, x[:, 0] > 0))).decode()


def _experiment(api: Any) -> str:
    model_id = api.create_model("bench-client")["model_id"]
    for _ in range(2):
        api.register_version(model_id, "classification", format="skops",
                             feature_names=["a", "b"], artifact_base64=_artifact())  # fmt: skip
    variants = [
        {"variant_id": "control", "model_id": model_id, "model_version": 1,
         "traffic_weight": "0.5", "is_control": True},
        {"variant_id": "treatment", "model_id": model_id, "model_version": 2,
         "traffic_weight": "0.5"},
    ]  # fmt: skip
    experiment_id = api.create_experiment("bench", variants)["experiment_id"]
    api.start_experiment(experiment_id)
    return experiment_id


def measure_local(api: Any, experiment_id: str, users: list[str], repeats: int) -> dict:
    local = api.local_experiment(experiment_id)
    variant = local.variant

    def run(batch: list[str]) -> None:
        for user in batch:
            variant(user)

    def run_assign(batch: list[str]) -> None:
        assign = local.assign
        for user in batch:
            assign(user_id=user)

    rate = _time(run, users, repeats)
    assign_rate = _time(run_assign, users[: len(users) // 4], repeats)
    share = sum(variant(u)[0] == "treatment" for u in users) / len(users)
    return {"rate": rate, "assign_rate": assign_rate, "share": share,
            "revalidations": local.not_modified, "fetches": local.fetches}  # fmt: skip


def measure_growthbook(users: list[str], repeats: int) -> tuple[float, float]:
    from growthbook import Experiment, GrowthBook

    gb = GrowthBook(attributes={"id": "warm"})
    experiment = Experiment(key="bench", variations=[0, 1], weights=[0.5, 0.5])
    gb.run(experiment)

    def run(batch: list[str]) -> None:
        for user in batch:
            gb.set_attributes({"id": user})
            gb.run(experiment)

    rate = _time(run, users, repeats)
    treated = 0
    for user in users:
        gb.set_attributes({"id": user})
        treated += gb.run(experiment).variationId == 1
    return rate, treated / len(users)


def measure_refresh(api: Any, experiment_id: str, count: int) -> dict[str, float]:
    """Median milliseconds of a full config fetch, a 304 revalidation and GET /health."""
    config, etag = api.routing_config(experiment_id)
    size = len(api.request("GET", f"/experiments/{experiment_id}/routing-config").headers
               .get("Content-Length", "0") or "0")  # fmt: skip

    def median_ms(call: Any) -> float:
        found = []
        for _ in range(count):
            started = time.perf_counter()
            call()
            found.append((time.perf_counter() - started) * 1000)
        return statistics.median(found)

    full = median_ms(lambda: api.routing_config(experiment_id))
    revalidate = median_ms(lambda: api.routing_config(experiment_id, etag))
    health = median_ms(api.health)
    body = api.request("GET", f"/experiments/{experiment_id}/routing-config")
    return {"full": full, "revalidate": revalidate, "health": health,
            "bytes": len(str(body.data)), "header_len": size}  # fmt: skip


def main() -> None:
    """Measures both sides and the refresh, and writes ``bench/results/client.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer users and repeats")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    count = args.users or (50_000 if args.quick else 200_000)
    repeats = args.repeats or (2 if args.quick else 3)
    refreshes = 20 if args.quick else 100
    users = [f"user-{index}" for index in range(count)]
    for name in ("werkzeug", "synapse.local", "synapse.local.http", "botocore", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)

    from synapse_client import Client
    from synapse_local.stack import LocalStack

    with LocalStack(port=0, moto_port=0, run_schedules=False, run_pumps=False) as stack:
        api = Client(stack.url, stack.admin_token)
        experiment_id = _experiment(api)
        ours = measure_local(api, experiment_id, users, repeats)
        refresh = measure_refresh(api, experiment_id, refreshes)
    peer, peer_share = measure_growthbook(users, repeats)
    ratio = ours["rate"] / peer
    rows = [
        {
            "figure": "client-side assignments/s (LocalExperiment.variant), warm config, 50/50",
            "ours": round(ours["rate"]),
            "peer": round(peer),
            "peer_name": "GrowthBook Python SDK (growthbook 4.0.0) GrowthBook.run",
            "ratio": round(ratio, 2),
            "unit": "assignments/s",
            "target": f">= {TARGET_RATIO:g}x peer",
            "met": ratio >= TARGET_RATIO,
            "note": f"{count} users, best of {repeats}; treatment share ours {ours['share']:.4f}, "
            f"GrowthBook {peer_share:.4f}; {ours['revalidations']} 304 revalidations in the loop",
        },
        {
            "figure": "client-side assign(user_id=...) with a new request id per call",
            "ours": round(ours["assign_rate"]),
            "peer": round(peer),
            "peer_name": "GrowthBook Python SDK GrowthBook.run",
            "ratio": round(ours["assign_rate"] / peer, 2),
            "unit": "assignments/s",
            "target": "-",
            "met": None,
            "note": "uuid4 per request dominates",
        },
        {
            "figure": "routing-config refresh over loopback HTTP: 304 revalidation / full fetch",
            "ours": round(refresh["revalidate"], 2),
            "peer": round(refresh["health"], 2),
            "peer_name": "GET /health on the same server",
            "ratio": round(refresh["revalidate"] / refresh["health"], 2),
            "unit": "ms (median)",
            "target": "-",
            "met": None,
            "note": f"full fetch {refresh['full']:.2f} ms ({refresh['bytes']} characters); "
            f"at the 5 s TTL that is one request per 5 s per process",
        },
    ]
    meta = {**machine_meta(), "users": count, "repeats": repeats, "refreshes": refreshes}
    report("client", rows, meta)


if __name__ == "__main__":
    main()
