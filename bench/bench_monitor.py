"""The experiment monitor at fleet scale, on moto: time per 1,000 running experiments.

A simulated fleet of running experiments (each with a batch of outcomes, so every check reads
real counters and records a real canary check) is monitored the way it is deployed: the schedule
lists the running ids and fans them out to the monitor queue (``AutoRollbackManager.fan_out``),
and each queued message (25 experiments) is handled like one ``experiment_monitor_worker``
invocation (``check_experiments``). The peer is the previous design: one invocation walking
every running experiment (``run_once``), measured on the same fleet.

Reported: seconds per 1,000 experiments for the fan-out and for the checks, the longest single
worker invocation, DynamoDB calls per checked experiment, and one tick of 10,000 running
experiments against the functions' 120 s timeout: the fleet is then filled to 10,000 running
experiments (copies of a built one's item, written in batches) and the fan-out of all 10,000 is
measured, not extrapolated; each of its messages is one worker invocation of 25 checks. moto
runs in this process, so its per-call cost (Python) is part of every figure; DynamoDB answers in
single-digit milliseconds.

The fleet is 200 experiments by default (moto's transactions make building a larger one slow);
figures are scaled to 1,000. Usage: ``.venv/bin/python bench/bench_monitor.py [--quick]
[--experiments N]``; writes
``bench/results/monitor.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from results_io import machine_meta, report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TIMEOUT = 120  # seconds: experiment_monitor and experiment_monitor_worker in .chalice/config.json
FLEET_TARGET = 10_000


class _Registry:
    """Every model version exists (the fleet's variants are not real models)."""

    def get_version(self, model_id: str, version: int) -> tuple[str, int]:
        return model_id, version

    def set_stage(self, model_id: str, version: int, stage: str) -> None:
        return None


def _count_calls() -> dict[str, int]:
    from botocore.client import BaseClient

    counts: dict[str, int] = {}
    original = BaseClient._make_api_call

    def counting(self: Any, operation: str, params: Any) -> Any:
        if self.meta.service_model.service_name == "dynamodb":
            counts["dynamodb"] = counts.get("dynamodb", 0) + 1
        return original(self, operation, params)

    BaseClient._make_api_call = counting  # type: ignore[method-assign]
    return counts


def _fleet(engine: Any, count: int) -> list[str]:
    from chalicelib.abtesting.models import ModelVariant, Outcome

    variants = [ModelVariant("control", "m", 1, Decimal("0.9"), True),
                ModelVariant("canary", "m", 2, Decimal("0.1"))]  # fmt: skip
    ids = []
    for index in range(count):
        experiment = engine.create_experiment(f"fleet-{index}", variants)
        engine.start_experiment(experiment.experiment_id)
        outcomes = [Outcome("control", f"c{i}", i % 50 != 0, 40.0 + i % 7) for i in range(45)]
        outcomes += [Outcome("canary", f"t{i}", True, 41.0 + i % 5) for i in range(5)]
        engine.record_outcomes(experiment.experiment_id, outcomes)
        ids.append(experiment.experiment_id)
    return ids


def _fill(template_id: str, count: int, target: int) -> None:
    """Adds running experiments (copies of ``template_id``'s item) until there are ``target``."""
    from chalicelib.abtesting.repository import ExperimentTable

    template = ExperimentTable.get(template_id)
    attributes = {name: getattr(template, name) for name in ExperimentTable.get_attributes()}
    with ExperimentTable.batch_write() as batch:
        for index in range(count, target):
            batch.save(ExperimentTable(**{**attributes, "experiment_id": f"filler-{index:05d}"}))


def measure(count: int) -> dict[str, Any]:
    """Builds the fleet and times the fan-out, the worker messages and the one-invocation peer."""
    from moto import mock_aws

    from chalicelib.abtesting.engine import ABTestingEngine
    from chalicelib.abtesting.rollback import AutoRollbackManager
    from chalicelib.core import aws
    from chalicelib.core.clock import FixedClock
    from chalicelib.core.config import get_settings
    from chalicelib.core.events import RecordingEventBus
    from synapse_local.bootstrap import bootstrap
    from synapse_local.motofix import install

    install()
    with mock_aws():
        bootstrap()
        clock = FixedClock()
        engine = ABTestingEngine(registry=_Registry(), event_bus=RecordingEventBus(),
                                 clock=clock, route_cache_ttl=0)  # fmt: skip
        manager = AutoRollbackManager(engine)
        built = time.perf_counter()
        ids = _fleet(engine, count)
        build_seconds = time.perf_counter() - built
        calls = _count_calls()

        started = time.perf_counter()
        fanned = manager.fan_out(clock.now())
        fan_out_seconds = time.perf_counter() - started

        sqs = aws.client("sqs")
        url = sqs.get_queue_url(QueueName=get_settings().experiment_monitor_queue)["QueueUrl"]
        per_message: list[float] = []
        checked = 0
        calls["dynamodb"] = 0
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
            for message in batch:
                body = json.loads(message["Body"])
                began = time.perf_counter()
                found = manager.check_experiments(body["experiment_ids"], clock.now())
                per_message.append(time.perf_counter() - began)
                checked += found.checked
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        dynamodb_calls = calls["dynamodb"]

        clock.advance(minutes=1)
        began = time.perf_counter()
        peer = manager.run_once(clock.now())
        peer_seconds = time.perf_counter() - began

        sqs.purge_queue(QueueUrl=url)
        _fill(ids[0], count, FLEET_TARGET)
        began = time.perf_counter()
        fleet = manager.fan_out(clock.now())
        fleet_fan_out_seconds = time.perf_counter() - began
        queued = int(
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
                "Attributes"
            ]["ApproximateNumberOfMessages"]
        )
    return {
        "experiments": count, "messages": fanned["messages"], "checked": checked,
        "peer_checked": peer.checked, "build_seconds": build_seconds,
        "fan_out_seconds": fan_out_seconds, "worker_seconds": sum(per_message),
        "longest_message_seconds": max(per_message), "peer_seconds": peer_seconds,
        "dynamodb_calls_per_experiment": dynamodb_calls / max(checked, 1),
        "fleet_running": fleet["running"], "fleet_messages": fleet["messages"],
        "fleet_queued": queued, "fleet_fan_out_seconds": fleet_fan_out_seconds,
    }  # fmt: skip


def rows(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The measurements as result rows."""
    per_1000 = 1000 / found["experiments"]
    scale = FLEET_TARGET / found["experiments"]
    fan_out_10k = found["fleet_fan_out_seconds"]
    peer_10k = found["peer_seconds"] * scale
    longest = max(fan_out_10k, found["longest_message_seconds"])
    peer_name = "one invocation walking every experiment"
    return [
        {"figure": f"fan-out (list running ids + SendMessageBatch), per 1,000 of "
                   f"{found['experiments']:,}", "ours": found["fan_out_seconds"] * per_1000,
         "peer": None, "ratio": None, "unit": "s", "target": "reported", "met": None},
        {"figure": "checks (judge, record, ramp/bandit), per 1,000 experiments",
         "ours": found["worker_seconds"] * per_1000, "peer": found["peer_seconds"] * per_1000,
         "ratio": found["worker_seconds"] / found["peer_seconds"], "unit": "s",
         "target": "reported", "met": None, "peer_name": peer_name,
         "note": f"{found['messages']} messages of 25; "
                 f"{found['dynamodb_calls_per_experiment']:.1f} DynamoDB calls per experiment"},
        {"figure": f"fan-out of a fleet of {found['fleet_running']:,} running experiments "
                   "(measured)", "ours": fan_out_10k, "peer": None, "ratio": None, "unit": "s",
         "target": f"≤ {TIMEOUT} s (function timeout)", "met": fan_out_10k <= TIMEOUT,
         "note": f"{found['fleet_messages']:,} messages sent, {found['fleet_queued']:,} queued"},
        {"figure": f"one tick of {FLEET_TARGET:,} running experiments: longest invocation",
         "ours": longest, "peer": peer_10k,
         "ratio": longest / peer_10k, "unit": "s", "target": f"≤ {TIMEOUT} s (function timeout)",
         "met": longest <= TIMEOUT and found["fleet_queued"] == FLEET_TARGET // 25,
         "peer_name": peer_name + " (extrapolated from the built fleet)",
         "note": f"ours: max(fan-out of {found['fleet_running']:,} ids, measured, "
                 f"{fan_out_10k:.1f} s; one message of 25, {found['longest_message_seconds']:.2f} "
                 f"s); {FLEET_TARGET // 25} messages run in parallel worker invocations"},
    ]  # fmt: skip


def main() -> None:
    """Measures and writes ``bench/results/monitor.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 experiments, not 200")
    parser.add_argument("--experiments", type=int, default=None)
    args = parser.parse_args()
    os.environ.setdefault("SYNAPSE_METRICS", "off")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)  # fmt: skip
    os.environ.pop("AWS_ENDPOINT_URL", None)
    count = args.experiments or (100 if args.quick else 200)
    found = measure(count)
    meta = {**machine_meta(), **{k: round(v, 3) if isinstance(v, float) else v
                                 for k, v in found.items()}}  # fmt: skip
    report("monitor", rows(found), meta)


if __name__ == "__main__":
    main()
