"""Outcome ingestion on the local stack's DynamoDB: outcomes/s and write requests per 1,000.

A moto ``ThreadedMotoServer`` on loopback stands in for DynamoDB (``AWS_ENDPOINT_URL``), as in
``make run``. Outcomes are posted through ``ABTestingEngine.record_outcomes`` in batches of 1,000
(the HTTP batch limit) for a two-variant experiment; every DynamoDB write request made by any
botocore client is counted with a ``before-call`` hook. After the run the counters are read back
and must equal the number of outcomes (and a replay of the first batch must add nothing).

A second run posts the same outcomes to an experiment with 3 dimensions of 20 values each and
five declared metrics (a custom proportion, a capped mean, a ratio, a quantile and a built-in
rate), every outcome carrying all of them: segment counters of every testable metric ride in
the same transactions (the quantile has none per segment), and that figure is reported too.

The peer is the naive design the targets name: one write per outcome (an ``UpdateItem`` ``ADD``
on a per-variant counter, no idempotency), measured on the same server in the same run.

moto's ``TransactWriteItems`` deep-copies a table for its own rollback once per *action* (up to
100 per transaction) instead of once per table, so on stock moto each transaction costs
O(100 x table size) and ingestion slows quadratically as the dedup table grows (about 14 s per
1,000 outcomes at 1,000 stored, 78 s at 4,000). Real DynamoDB has no such cost. The bench
therefore patches moto to copy each table once per transaction
(:func:`patch_moto_transaction_copies`; the copies are taken before any action is applied, so the
result is identical) and reports that figure; ``--stock-moto`` measures without the patch. The
write-request count is exact either way.

Usage: ``.venv/bin/python bench/bench_outcomes.py [--quick] [--outcomes N]``; prints a markdown
table and writes ``bench/results/outcomes.json`` (rows: figure, ours, peer, ratio, unit, target,
met).
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
BATCH = 1000
TARGET_WRITES = 20
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


class _Registry:
    def get_version(self, model_id: str, version: int) -> tuple[str, int]:
        return (model_id, version)

    def set_stage(self, model_id: str, version: int, stage: str) -> None:
        return None


class WriteCounter:
    """Counts DynamoDB write requests of every botocore client created after ``install``."""

    def __init__(self) -> None:
        self.count = 0

    def install(self) -> None:
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        counter = self

        def counting(client: Any, operation: str, params: Any) -> Any:
            if client.meta.service_model.service_name == "dynamodb" and operation in WRITES:
                counter.count += 1
            return original(client, operation, params)

        BaseClient._make_api_call = counting  # type: ignore[method-assign]


def install_moto_fix() -> None:
    """The local stack's moto fix (one table copy per transaction; see its module)."""
    from synapse_local.motofix import install

    install()


def _start_server() -> Any:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "SYNAPSE_METRICS": "off",
            "SYNAPSE_TABLE_PREFIX": "bench-outcomes",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    return server


def _outcomes(count: int, segmented: bool = False) -> list[Any]:
    from chalicelib.abtesting.models import Outcome

    def extra(index: int) -> dict[str, Any]:
        if not segmented:
            return {}
        return {
            "attributes": {"country": f"c{index % 20}", "device": f"d{index * 7 % 20}",
                           "plan": f"p{index * 13 % 20}"},
            "custom_metrics": {"clicked": float(index % 3 == 0), "revenue": index % 97 * 1.25,
                               "clicks": float(index % 5), "sessions": float(index % 4 + 1),
                               "basket": 1.0 + index % 89 / 3.0},
        }  # fmt: skip

    return [
        Outcome(
            "control" if index % 2 else "treatment",
            f"req-{index}",
            index % 50 != 0,
            20.0 + (index * 7919) % 400 / 4.0,
            converted=index % 9 == 0,
            **extra(index),
        )
        for index in range(count)
    ]


def _segmented_settings() -> dict[str, Any]:
    """3 dimensions of 20 values and five declared metrics."""
    from chalicelib.abtesting.models import AnalysisSettings, Dimension, MetricSpec, SegmentSettings

    metrics = (
        MetricSpec("clicked", "proportion"),
        MetricSpec("revenue", "mean", cap_upper=100.0),
        MetricSpec("ctr", "ratio", numerator="clicks", denominator="sessions"),
        MetricSpec("basket_p90", "quantile", source="basket", quantile=0.9),
        MetricSpec("conversion", "proportion", source="conversion_rate"),
    )
    return {
        "segments": SegmentSettings(tuple(Dimension(n, 20) for n in ("country", "device", "plan"))),
        "analysis": AnalysisSettings(metrics=metrics),
    }


def measure_ours(count: int, counter: WriteCounter, segmented: bool = False) -> dict[str, Any]:
    """Batched, idempotent ingestion through the engine (``segmented``: 3 dimensions of 20
    values and five declared metrics)."""
    from chalicelib.abtesting.engine import ABTestingEngine
    from chalicelib.abtesting.models import ModelVariant
    from chalicelib.core.events import RecordingEventBus

    engine = ABTestingEngine(registry=_Registry(), event_bus=RecordingEventBus())
    variants = [
        ModelVariant("control", "m", 1, Decimal("0.5"), True),
        ModelVariant("treatment", "m", 2, Decimal("0.5")),
    ]
    settings = _segmented_settings() if segmented else {}
    experiment_id = engine.create_experiment(
        "bench-segmented" if segmented else "bench", variants, **settings
    ).experiment_id
    engine.start_experiment(experiment_id)
    outcomes = _outcomes(count, segmented)
    engine.record_outcomes(experiment_id, outcomes[:1])  # warm the config cache and clients
    counter.count = 0
    started = time.perf_counter()
    accepted = 0
    for start in range(1, count, BATCH):
        accepted += engine.record_outcomes(experiment_id, outcomes[start : start + BATCH]).accepted
    seconds = time.perf_counter() - started
    writes = counter.count
    replay = engine.record_outcomes(experiment_id, outcomes[1 : 1 + BATCH])
    metrics = engine.get_experiment_metrics(experiment_id)
    stored = sum(m.request_count for m in metrics.values())
    return {
        "outcomes_per_s": (count - 1) / seconds,
        "writes_per_1000": writes / (count - 1) * 1000,
        "accepted": accepted + 1,
        "stored": stored,
        "replay_accepted": replay.accepted,
        "seconds": seconds,
    }


def measure_naive(count: int, counter: WriteCounter) -> dict[str, Any]:
    """One UpdateItem ADD per outcome on a per-variant counter (no dedup, no histogram)."""
    from chalicelib.abtesting.outcomes_repository import MetricShardTable
    from chalicelib.core import aws

    client = aws.client("dynamodb")
    table = MetricShardTable.Meta.table_name
    outcomes = _outcomes(count)
    counter.count = 0
    started = time.perf_counter()
    for outcome in outcomes:
        client.update_item(
            TableName=table,
            Key={"experiment_id": {"S": "naive"}, "shard_key": {"S": outcome.variant_id}},
            UpdateExpression="ADD request_count :one, latency_sum :l",
            ExpressionAttributeValues={":one": {"N": "1"}, ":l": {"N": str(outcome.latency_ms)}},
        )
    seconds = time.perf_counter() - started
    return {
        "outcomes_per_s": count / seconds,
        "writes_per_1000": counter.count / count * 1000,
        "seconds": seconds,
    }


def _exact(found: dict[str, Any], count: int) -> bool:
    """Every outcome stored once and a replayed batch accepted nothing."""
    return found["stored"] == found["accepted"] == count and found["replay_accepted"] == 0


def _writes_row(
    figure: str, ours: dict[str, Any], naive: dict[str, Any], note: str
) -> dict[str, Any]:
    """A write-requests row against the one-write-per-outcome peer."""
    return {
        "figure": figure,
        "ours": round(ours["writes_per_1000"], 2),
        "peer": round(naive["writes_per_1000"], 2),
        "peer_name": "one UpdateItem per outcome",
        "ratio": round(ours["writes_per_1000"] / naive["writes_per_1000"], 4),
        "unit": "writes/1,000 outcomes",
        "target": f"<= {TARGET_WRITES}",
        "met": ours["writes_per_1000"] <= TARGET_WRITES,
        "note": note,
    }


def main() -> None:
    """Runs both measurements and writes ``bench/results/outcomes.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer outcomes")
    parser.add_argument("--outcomes", type=int, default=None)
    parser.add_argument("--stock-moto", action="store_true", help="do not patch moto's copies")
    args = parser.parse_args()
    if not args.stock_moto:
        install_moto_fix()
    count = args.outcomes or (2_001 if args.quick else 5_001)
    naive_count = min(count, 1_000)

    server = _start_server()
    try:
        from chalicelib.domains import create_all_tables

        create_all_tables()
        counter = WriteCounter()
        counter.install()
        ours = measure_ours(count, counter)
        segmented = measure_ours(count, counter, segmented=True)
        naive = measure_naive(naive_count, counter)
    finally:
        server.stop()

    exact = _exact(ours, count)
    rows = [
        _writes_row(
            "DynamoDB write requests per 1,000 outcomes posted in batches of 1,000",
            ours,
            naive,
            f"{count} outcomes; counters read back {ours['stored']} (exact: {exact}); replayed "
            f"batch accepted {ours['replay_accepted']}",
        ),
        _writes_row(
            "DynamoDB write requests per 1,000 outcomes, 3 dimensions x 20 values, 5 declared "
            "metrics (every metric counted per segment but the quantile)",
            segmented,
            naive,
            f"{count} outcomes; counters read back {segmented['stored']} (exact: "
            f"{_exact(segmented, count)}); {segmented['outcomes_per_s']:.0f} outcomes/s",
        ),
        {
            "figure": "outcomes/s ingested (moto server on loopback"
            + (", stock moto)" if args.stock_moto else ", one table copy per transaction)"),
            "ours": round(ours["outcomes_per_s"]),
            "peer": round(naive["outcomes_per_s"]),
            "peer_name": "one UpdateItem per outcome",
            "ratio": round(ours["outcomes_per_s"] / naive["outcomes_per_s"], 2),
            "unit": "outcomes/s",
            "target": "report; counts exact",
            "met": exact,
            "note": f"ours: {ours['seconds']:.1f} s for {count - 1} outcomes, idempotent, with "
            f"histogram and sums; naive: {naive['seconds']:.1f} s for {naive_count}",
        },
    ]
    meta = {**machine_meta(), "outcomes": count, "batch": BATCH}
    report("outcomes", rows, meta)


if __name__ == "__main__":
    main()
