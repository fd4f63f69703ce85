"""Routing throughput: ``ABTestingEngine.route_request`` assignments/s against the GrowthBook SDK.

Both assign the same user ids to a 50/50 split in-process with a warm config:

* ours: ``engine.route_request(experiment_id, request_id, user_id)`` on an engine over moto
  DynamoDB with the default route-cache TTL (``SYNAPSE_ROUTE_CACHE_TTL``, 5 s); the first call
  loads the config, a reload every TTL is included in the timing.
* peer: one ``growthbook.GrowthBook`` instance, ``set_attributes({"id": user})`` then
  ``run(Experiment(key, [0, 1], weights=[0.5, 0.5]))`` per user (the SDK's in-process path).

A second row gates the same split (issue 19): ours is an experiment taking buckets [0, 5000) of
a layer, covered by a 5 % global holdout, with a targeting condition (country in {DE, FR} and
either 18 <= age < 30 or plan = pro), routed with ``route_request(..., attributes=...)``; the
peer is GrowthBook's equivalent, a namespace ``("ranking", 0, 0.5)`` and the same condition in
its MongoDB-style syntax (``set_attributes`` with the user's attributes, then ``run``). Both see
the same users with the same seeded attributes; GrowthBook has no holdout in its Python SDK, so
ours does one hash more.

Reported: the best of ``--repeats`` timed passes over ``--users`` users (best-of limits noise from
other processes on a shared machine), the ratio, and each side's share of users in treatment.
Target: ours >= 5x GrowthBook.

Usage: ``.venv/bin/python bench/bench_routing.py [--quick] [--users N] [--repeats N]``; prints a
markdown table and writes ``bench/results/routing.json`` (rows: figure, ours, peer, ratio, unit,
target, met).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from results_io import machine_meta, report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_RATIO = 5.0

for key, value in {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "SYNAPSE_METRICS": "off",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}.items():
    os.environ.setdefault(key, value)
os.environ.pop("AWS_ENDPOINT_URL", None)


class _Registry:
    """Every model version exists (the bench measures routing, not the registry)."""

    def get_version(self, model_id: str, version: int) -> tuple[str, int]:
        return (model_id, version)

    def set_stage(self, model_id: str, version: int, stage: str) -> None:
        return None


def _time(run: Any, users: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run(users)
        best = min(best, time.perf_counter() - started)
    return len(users) / best


TARGETING = {
    "all": [
        {"attribute": "country", "in": ["DE", "FR"]},
        {
            "any": [
                {"attribute": "age", "gte": 18, "lt": 30},
                {"attribute": "plan", "equals": "pro"},
            ]
        },
    ]
}
GROWTHBOOK_CONDITION = {
    "country": {"$in": ["DE", "FR"]},
    "$or": [{"age": {"$gte": 18, "$lt": 30}}, {"plan": "pro"}],
}


def attributes_of(users: list[str]) -> list[dict[str, Any]]:
    """Seeded attributes per user (about 40 % admitted by the targeting)."""
    import random

    rng = random.Random(19)
    return [
        {"country": rng.choice(["DE", "FR", "US"]), "age": rng.randrange(10, 60),
         "plan": "pro" if rng.random() < 0.3 else "free"}
        for _ in users
    ]  # fmt: skip


def measure_ours_gated(
    users: list[str], attributes: list[dict[str, Any]], repeats: int
) -> tuple[float, float]:
    """Assignments/s of ``route_request`` with a layer slice, a holdout and targeting, and the
    share of users in the experiment's treatment."""
    from moto import mock_aws

    from chalicelib.abtesting.engine import ABTestingEngine
    from chalicelib.abtesting.layers import LayerService
    from chalicelib.abtesting.models import LayerSlice, ModelVariant
    from chalicelib.core.events import RecordingEventBus
    from chalicelib.domains import create_all_tables

    with mock_aws():
        create_all_tables()
        bus = RecordingEventBus()
        layers = LayerService(event_bus=bus)
        engine = ABTestingEngine(registry=_Registry(), event_bus=bus, layers=layers)
        layer = layers.create_layer("ranking")
        layers.create_holdout("global", Decimal("0.05"))
        variants = [
            ModelVariant("control", "m", 1, Decimal("0.5"), True),
            ModelVariant("treatment", "m", 2, Decimal("0.5")),
        ]
        experiment_id = engine.create_experiment(
            "bench", variants, layer=LayerSlice(layer.layer_id, 0, 5000), targeting=TARGETING
        ).experiment_id
        engine.start_experiment(experiment_id)
        route = engine.route_request
        pairs = list(zip(users, attributes, strict=True))
        route(experiment_id, "warm", "warm", True, pairs[0][1])

        def run(batch: list[str]) -> None:
            for user, attrs in pairs:
                route(experiment_id, user, user, True, attrs)

        rate = _time(run, users, repeats)
        decide = engine.decide_request
        share = sum(decide(experiment_id, u, u, True, a)[0] == "treatment" for u, a in pairs) / len(
            users
        )
    return rate, share


def measure_growthbook_gated(
    users: list[str], attributes: list[dict[str, Any]], repeats: int
) -> tuple[float, float]:
    """Assignments/s of the GrowthBook SDK with a namespace and the same condition."""
    from growthbook import Experiment, GrowthBook

    gb = GrowthBook(attributes={"id": "warm"})
    experiment = Experiment(
        key="bench", variations=[0, 1], weights=[0.5, 0.5], namespace=("ranking", 0, 0.5),
        condition=GROWTHBOOK_CONDITION,
    )  # fmt: skip
    gb.run(experiment)
    pairs = list(zip(users, attributes, strict=True))

    def run(batch: list[str]) -> None:
        for user, attrs in pairs:
            gb.set_attributes({"id": user, **attrs})
            gb.run(experiment)

    rate = _time(run, users, repeats)
    treated = 0
    for user, attrs in pairs:
        gb.set_attributes({"id": user, **attrs})
        found = gb.run(experiment)
        treated += found.inExperiment and found.variationId == 1
    return rate, treated / len(users)


def measure_ours(users: list[str], repeats: int) -> tuple[float, float]:
    """Assignments/s of ``route_request`` and the share of users in treatment."""
    from moto import mock_aws

    from chalicelib.abtesting.engine import ABTestingEngine
    from chalicelib.abtesting.models import ModelVariant
    from chalicelib.core.events import RecordingEventBus
    from chalicelib.domains import create_all_tables

    with mock_aws():
        create_all_tables()
        engine = ABTestingEngine(registry=_Registry(), event_bus=RecordingEventBus())
        variants = [
            ModelVariant("control", "m", 1, Decimal("0.5"), True),
            ModelVariant("treatment", "m", 2, Decimal("0.5")),
        ]
        experiment_id = engine.create_experiment("bench", variants).experiment_id
        engine.start_experiment(experiment_id)
        route = engine.route_request
        route(experiment_id, "warm", "warm")

        def run(batch: list[str]) -> None:
            for user in batch:
                route(experiment_id, user, user)

        rate = _time(run, users, repeats)
        share = sum(route(experiment_id, u, u)[0] == "treatment" for u in users) / len(users)
    return rate, share


def measure_growthbook(users: list[str], repeats: int) -> tuple[float, float]:
    """Assignments/s of the GrowthBook SDK on the same users and split."""
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


def main() -> None:
    """Measures both and writes ``bench/results/routing.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer users and repeats")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    count = args.users or (50_000 if args.quick else 200_000)
    repeats = args.repeats or (2 if args.quick else 3)
    users = [f"user-{index}" for index in range(count)]

    ours, our_share = measure_ours(users, repeats)
    peer, peer_share = measure_growthbook(users, repeats)
    ratio = ours / peer
    attributes = attributes_of(users)
    gated, gated_share = measure_ours_gated(users, attributes, repeats)
    gated_peer, gated_peer_share = measure_growthbook_gated(users, attributes, repeats)
    gated_ratio = gated / gated_peer
    rows = [
        {
            "figure": "route_request assignments/s, in-process, warm config, 50/50 split",
            "ours": round(ours),
            "peer": round(peer),
            "peer_name": "GrowthBook Python SDK (growthbook 4.0.0) GrowthBook.run",
            "ratio": round(ratio, 2),
            "unit": "assignments/s",
            "target": f">= {TARGET_RATIO:g}x peer",
            "met": ratio >= TARGET_RATIO,
            "note": f"{count} users, best of {repeats}; treatment share ours "
            f"{our_share:.4f}, GrowthBook {peer_share:.4f}",
        },
        {
            "figure": "route_request assignments/s with a layer slice (half), a 5 % holdout "
            "and targeting (attributes per request)",
            "ours": round(gated),
            "peer": round(gated_peer),
            "peer_name": "GrowthBook Python SDK (growthbook 4.0.0) GrowthBook.run with a "
            "namespace and a condition",
            "ratio": round(gated_ratio, 2),
            "unit": "assignments/s",
            "target": f">= {TARGET_RATIO:g}x peer",
            "met": gated_ratio >= TARGET_RATIO,
            "note": f"{count} users, best of {repeats}; share in treatment ours "
            f"{gated_share:.4f} (0.5 x 0.95 x admitted share), GrowthBook {gated_peer_share:.4f}",
        },
    ]
    meta = {**machine_meta(), "users": count, "repeats": repeats}
    report("routing", rows, meta)


if __name__ == "__main__":
    main()
