"""What each invocation costs (what Lambda bills): handler time and AWS calls per request.

The app is driven in-process with API Gateway REST proxy events, as Lambda delivers them
(``app.app(event, context)``), against ``moto.mock_aws`` in the same process. For each route:
handler time p50/p99 (from the event to the response dict) and the AWS API calls per request,
counted by service and operation with a botocore event hook (``synapse_local.awscalls``).

The app runs as deployed: metrics on (one EMF line per request), the JSON logger at INFO, both
written to ``/dev/null`` (a write per line, as into Lambda's log pipe), response validation off.
moto answers AWS calls in-process, so the time of a route that calls AWS includes moto's
emulation (typically more than a real DynamoDB call costs in CPU, less than its network
round trip); ``/route`` with a warm config calls nothing.

Routes: ``/route`` (warm config), outcomes in batches of 100 and 1,000, ``/analysis``,
``/explanations`` (cache miss and hit), an inline dataset version of 1 MB. Then the per-request
overhead of powertools (logger, metrics), validation and settings on ``/route``, each measured
alone on the same objects, against the ``/route`` handler time; and a profile summary per route
(where the rest of the time goes).

Usage: ``.venv/bin/python bench/bench_invocations.py [--quick]``; writes
``bench/results/invocations.json``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import json
import math
import os
import pstats
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "SYNAPSE_STAGE": "dev",
        "SYNAPSE_METRICS": "on",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "SYNAPSE_TABLE_PREFIX": "bench-invocations",
    }
)
for unset in ("AWS_ENDPOINT_URL", "SYNAPSE_VALIDATE_RESPONSES", "AWS_PROFILE"):
    os.environ.pop(unset, None)

from results_io import machine_meta, report  # noqa: E402

from synapse_local.awscalls import AwsCallCounter  # noqa: E402

ROUTE_P50_MS = 1.0
OVERHEAD_SHARE = 0.20
WRITE_BUDGET = 20
DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
PROFILE_LINES = 8


@dataclass
class Measured:
    """Handler times and AWS calls of one scenario."""

    name: str
    seconds: list[float] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    profile: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.seconds)

    def p(self, share: float) -> float:
        """A percentile of the handler time in milliseconds."""
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000

    def per_request(self, service: str | None = None, operations: tuple[str, ...] = ()) -> float:
        """AWS calls per request (of one service / some operations)."""
        total = sum(
            n
            for name, n in self.calls.items()
            if (service is None or name.split(".")[0] == service)
            and (not operations or name.split(".")[1] in operations)
        )
        return total / self.requests


class Lambda:
    """The app behind API Gateway proxy events, in-process, with an admin token."""

    def __init__(self) -> None:
        from chalice.local import LambdaContext

        import app as app_module
        from chalicelib.auth.service import get_auth_service
        from chalicelib.core.observability import logger

        self.app = app_module.app
        # After the import: Chalice keeps a logger that already writes to stdout as it is.
        self.sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the bench
        for handler in logger.handlers:
            handler.setStream(self.sink)
        self.token = get_auth_service().create_key("bench", ["admin"]).token
        self.context = LambdaContext("api_handler", 1024, max_runtime_ms=30_000)

    def event(
        self,
        method: str,
        resource: str,
        params: dict[str, str] | None = None,
        body: Any = None,
        query: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """An API Gateway REST proxy event for ``resource`` with ``params`` filled in."""
        path = resource.format(**(params or {}))
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Host": "abc123.execute-api.us-east-1.amazonaws.com",
            "User-Agent": "bench",
            "X-Forwarded-For": "203.0.113.9",
        }
        return {
            "resource": resource,
            "path": path,
            "httpMethod": method,
            "headers": headers,
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "queryStringParameters": query,
            "multiValueQueryStringParameters": {k: [v] for k, v in query.items()}
            if query
            else None,
            "pathParameters": params,
            "stageVariables": None,
            "requestContext": {
                "resourcePath": resource,
                "httpMethod": method,
                "path": f"/api{path}",
                "stage": "api",
                "requestId": str(uuid.uuid4()),
                "identity": {"sourceIp": "203.0.113.9"},
            },
            "body": None if body is None else json.dumps(body),
            "isBase64Encoded": False,
        }

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        """One invocation; metric lines (EMF, printed) go to /dev/null as logs do."""
        with contextlib.redirect_stdout(self.sink):
            response = self.app(event, self.context)
        if response["statusCode"] >= 300:
            raise RuntimeError(f"{event['path']}: {response['statusCode']} {response['body']}")
        return json.loads(response["body"]) if response["body"] else {}

    def call(self, method: str, resource: str, params: Any = None, body: Any = None) -> Any:
        return self.invoke(self.event(method, resource, params, body))


def measure(
    aws: Lambda, name: str, events: list[dict[str, Any]], warm: int = 1, profile: int = 0
) -> Measured:
    """Invokes the first ``warm`` events unmeasured, then times and counts the rest."""
    for event in events[:warm]:
        aws.invoke(event)
    found = Measured(name)
    print(f"  {name}: {len(events) - warm} requests", flush=True)
    with AwsCallCounter() as counter:
        for event in events[warm:]:
            started = time.perf_counter()
            aws.invoke(event)
            found.seconds.append(time.perf_counter() - started)
    found.calls = counter.by_operation()
    return found


def profile_summary(aws: Lambda, events: list[dict[str, Any]]) -> list[str]:
    """The functions with the most own time over these invocations (cProfile)."""
    profiler = cProfile.Profile()
    profiler.enable()
    for event in events:
        aws.invoke(event)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt or 1.0
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    lines = []
    for (filename, line, function), (_, calls, own, _, _) in rows[:PROFILE_LINES]:
        where = filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
        lines.append(
            f"{own / total:5.1%} own  {calls // len(events):>4}×/req  {where}:{line} {function}"
        )
    return lines


# ---- scenarios ------------------------------------------------------------------------------


def _skops(model: Any) -> str:
    from skops.io import dumps

    return base64.b64encode(dumps(model)).decode()


def setup_experiment(aws: Lambda) -> tuple[str, str]:
    """A model with two versions (a 20-feature forest) and a running 50/50 experiment."""
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(5)
    features = rng.normal(size=(500, 20))
    labels = (features[:, 0] - features[:, 3] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=50, max_depth=6, random_state=0)
    model.fit(features, labels)
    model_id = aws.call("POST", "/models", body={"name": f"inv-{uuid.uuid4().hex[:6]}"})["model_id"]
    version = {
        "artifact_base64": _skops(model),
        "task": "classification",
        "feature_names": [f"f{i}" for i in range(20)],
        "class_names": ["0", "1"],
    }
    for _ in range(2):
        aws.call("POST", "/models/{model_id}/versions", {"model_id": model_id}, version)
    variants = [
        {"variant_id": "control", "model_id": model_id, "model_version": 1,
         "traffic_weight": "0.5", "is_control": True},
        {"variant_id": "treatment", "model_id": model_id, "model_version": 2,
         "traffic_weight": "0.5"},
    ]  # fmt: skip
    experiment_id = aws.call("POST", "/experiments", body={"name": "inv", "variants": variants})[
        "experiment_id"
    ]
    aws.call("POST", "/experiments/{experiment_id}/start", {"experiment_id": experiment_id})
    return model_id, experiment_id


def route_events(aws: Lambda, experiment_id: str, count: int) -> list[dict[str, Any]]:
    resource = "/experiments/{experiment_id}/route"
    return [
        aws.event("POST", resource, {"experiment_id": experiment_id},
                  {"request_id": f"q{i}", "user_id": f"user-{i}"})
        for i in range(count)
    ]  # fmt: skip


def outcome_events(
    aws: Lambda, experiment_id: str, batches: int, size: int, start: int
) -> list[dict[str, Any]]:
    resource = "/experiments/{experiment_id}/outcomes"
    events = []
    for batch in range(batches):
        first = start + batch * size
        outcomes = [
            {"variant_id": "control" if i % 2 else "treatment", "request_id": f"o{first + i}",
             "success": i % 17 != 0, "latency_ms": 20.0 + i % 50, "converted": i % 7 == 0}
            for i in range(size)
        ]  # fmt: skip
        events.append(aws.event("POST", resource, {"experiment_id": experiment_id},
                                {"outcomes": outcomes}))  # fmt: skip
    return events


def explanation_events(aws: Lambda, model_id: str, inputs: list[int]) -> list[dict[str, Any]]:
    return [
        aws.event("POST", "/explanations", body={
            "model_id": model_id, "model_version": 1,
            "input_data": {f"f{i}": ((seed * 31 + i * 17) % 101) / 50.0 - 1.0 for i in range(20)},
        })
        for seed in inputs
    ]  # fmt: skip


def version_events(aws: Lambda, count: int) -> list[dict[str, Any]]:
    dataset_id = aws.call("POST", "/datasets", body={"name": f"inv-{uuid.uuid4().hex[:6]}"})[
        "dataset_id"
    ]
    events = []
    for number in range(count):
        lines, size, row = ["id,a,b,c,label"], 15, 0
        while size < 1024 * 1024:
            lines.append(f"{number}-{row},{row * 7 % 1000},{row * 13 % 997},{row % 89},{row % 2}")
            size += len(lines[-1]) + 1
            row += 1
        body = {"data": "\n".join(lines) + "\n"}
        params = {"dataset_id": dataset_id}
        events.append(aws.event("POST", "/datasets/{dataset_id}/versions", params, body))
    return events


# ---- overhead of powertools, validation and logging on /route --------------------------------


def per_call(action: Callable[[], Any], batches: int = 200, size: int = 20) -> float:
    """Seconds per call of ``action``: the fastest of ``batches`` batches of ``size`` calls.

    The fastest batch is the one no other process interrupted (this is a shared machine), so
    the plumbing and the handler are both measured this way and compared like with like.
    """
    best = math.inf
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(size):
            action()
        best = min(best, (time.perf_counter() - started) / size)
    return best


def overheads(aws: Lambda, route_events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per ``/route`` request: the whole handler, and each piece of plumbing it runs,
    measured alone on the same objects, all as the fastest of many short batches."""
    from chalicelib.abtesting.schemas import RouteBody, RouteOut
    from chalicelib.core import config, http, observability
    from chalicelib.core.observability import logger, record_latency

    body = {"request_id": "q1", "user_id": "user-1"}
    text = json.dumps(aws.invoke(route_events[0]))  # a real answer of this route
    adapter = http._validators.get(RouteOut)
    events = iter(route_events * 100)
    spec = next(s for s in http.ROUTES if s.name == "route_request")

    def metric() -> None:
        with contextlib.redirect_stdout(aws.sink):
            record_latency("RequestLatency", time.perf_counter(), route="route_request")

    def error_line() -> None:
        logger.info("request", extra={"route": "route_request", "method": "POST", "status": 404})

    return {
        "handler": per_call(lambda: aws.invoke(next(events))),
        "Logger: correlation id (context variable)": per_call(
            lambda: observability.set_correlation_id("c0ffee15deadbeef")
        ),
        "powertools Logger: request line (DEBUG on success: not written)": per_call(
            lambda: http._log_request(spec, 200)
        ),
        "Metrics: one EMF latency line (powertools' document)": per_call(metric),
        "request validation (pydantic RouteBody + number checks)": per_call(
            lambda: http.parse_model(RouteBody, body, "body")
        ),
        "settings read per request (body limit, JSON depth)": per_call(
            lambda: (config.max_body_bytes(), config.max_json_depth())
        ),
        "not per request: request line of a failed request (INFO)": per_call(error_line),
        "not per request: response validation (tests only)": per_call(
            lambda: adapter.validate_json(text)
        ),
    }


# ---- report ---------------------------------------------------------------------------------


def run(quick: bool) -> dict[str, Any]:
    from moto import mock_aws

    from synapse_local.motofix import install

    install()
    AwsCallCounter.install()
    scale = 1 if quick else 2
    with mock_aws():
        from synapse_local.bootstrap import bootstrap

        bootstrap()
        aws = Lambda()
        model_id, experiment_id = setup_experiment(aws)
        scenarios: dict[str, Measured] = {}
        routes = route_events(aws, experiment_id, 1 + 1000 * scale)
        scenarios["route"] = measure(aws, "POST /experiments/{id}/route (warm config)", routes)
        scenarios["outcomes_100"] = measure(
            aws, "POST .../outcomes, batch of 100",
            outcome_events(aws, experiment_id, 1 + 20 * scale, 100, 0),
        )  # fmt: skip
        scenarios["outcomes_1000"] = measure(
            aws, "POST .../outcomes, batch of 1,000",
            outcome_events(aws, experiment_id, 1 + 5 * scale, 1000, 100_000),
        )  # fmt: skip
        analysis = [
            aws.event("GET", "/experiments/{experiment_id}/analysis",
                      {"experiment_id": experiment_id})
            for _ in range(1 + 50 * scale)
        ]  # fmt: skip
        scenarios["analysis"] = measure(aws, "GET /experiments/{id}/analysis", analysis)
        misses = explanation_events(aws, model_id, list(range(1, 2 + 15 * scale)))
        scenarios["explain_miss"] = measure(
            aws,
            "POST /explanations (cache miss, TreeSHAP)",
            explanation_events(aws, model_id, [0]) + misses[1:],
        )
        hits = explanation_events(aws, model_id, [0] * (1 + 200 * scale))
        scenarios["explain_hit"] = measure(aws, "POST /explanations (cache hit)", hits)
        scenarios["version_1mb"] = measure(
            aws, "POST /datasets/{id}/versions, inline 1 MB CSV", version_events(aws, 1 + 3 * scale)
        )  # fmt: skip
        profiles = {
            "route": routes[1:301],
            "outcomes_1000": outcome_events(aws, experiment_id, 2, 1000, 200_000),
            "analysis": analysis[1:21],
            "explain_miss": explanation_events(aws, model_id, list(range(500, 510))),
            "explain_hit": explanation_events(aws, model_id, [0] * 100),
        }
        for key, events in profiles.items():
            scenarios[key].profile = profile_summary(aws, events)
        costs = overheads(aws, routes[1:201])
        variants = 2
    return {"scenarios": scenarios, "overheads": costs, "variants": variants}


def _route_rows(found: dict[str, Any]) -> list[dict[str, Any]]:
    route: Measured = found["scenarios"]["route"]
    p50 = route.p(0.5)
    rows = [
        {
            "figure": "handler time of POST /route, warm config, p50 (API Gateway event)",
            "ours": round(p50, 3),
            "peer": ROUTE_P50_MS,
            "peer_name": "the target",
            "ratio": round(p50 / ROUTE_P50_MS, 3),
            "unit": "ms",
            "target": f"≤ {ROUTE_P50_MS} ms; p99 {route.p(0.99):.3f} ms",
            "met": p50 <= ROUTE_P50_MS,
            "note": "profile: " + " | ".join(route.profile[:3]),
        },
        {
            "figure": "AWS calls of POST /route with a warm config (auth and experiment cached)",
            "ours": sum(route.calls.values()),
            "peer": None,
            "ratio": None,
            "unit": f"calls in {route.requests} requests",
            "target": "0",
            "met": sum(route.calls.values()) == 0,
            "note": json.dumps(route.calls) if route.calls else "none",
        },
    ]
    plumbing = dict(found["overheads"])
    handler = plumbing.pop("handler")
    total = sum(v for k, v in plumbing.items() if not k.startswith("not per request"))
    share = total / handler if handler else None
    rows.append(
        {
            "figure": "powertools + validation + logging + settings per /route request, "
            "share of the /route handler time",
            "ours": round(total * 1e6, 2),
            "peer": round(handler * 1e6, 2),
            "peer_name": "/route handler",
            "ratio": round(share, 3) if share is not None else None,
            "unit": "µs (fastest of 200 batches, both)",
            "target": f"ratio < {OVERHEAD_SHARE}",
            "met": share is not None and share < OVERHEAD_SHARE,
            "note": "; ".join(f"{k} {v * 1e6:.1f} µs" for k, v in plumbing.items()),
        }
    )
    return rows


def _scenario_row(measured: Measured, target: str, met: bool | None) -> dict[str, Any]:
    calls = sum(measured.calls.values()) / measured.requests
    return {
        "figure": f"{measured.name}: handler p50 (p99), AWS calls per request",
        "ours": round(measured.p(0.5), 2),
        "peer": None,
        "ratio": None,
        "unit": f"ms (p99 {measured.p(0.99):.1f}); {calls:.2f} calls/req",
        "target": target,
        "met": met,
        "note": json.dumps({k: round(v / measured.requests, 2) for k, v in measured.calls.items()})
        + (" | profile: " + " | ".join(measured.profile[:3]) if measured.profile else ""),
    }


def rows_for(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The shared-format rows."""
    scenarios: dict[str, Measured] = found["scenarios"]
    rows = _route_rows(found)
    batch = scenarios["outcomes_1000"]
    writes = batch.per_request("dynamodb", DYNAMODB_WRITES)
    rows.append(_scenario_row(scenarios["outcomes_100"], "report", None))
    rows.append(
        _scenario_row(batch, f"≤ {WRITE_BUDGET} DynamoDB writes per 1,000", writes <= WRITE_BUDGET)
    )
    analysis = scenarios["analysis"]
    queries = analysis.per_request("dynamodb", ("Query", "Scan"))
    rows.append(
        _scenario_row(
            analysis, f"≤ 1 query per variant ({found['variants']})", queries <= found["variants"]
        )  # fmt: skip
    )
    rows.append(_scenario_row(scenarios["explain_miss"], "report", None))
    hit = scenarios["explain_hit"]
    rows.append(_scenario_row(hit, "report (cache hit < 5 ms)", hit.p(0.5) < 5.0))
    rows.append(_scenario_row(scenarios["version_1mb"], "report", None))
    return rows


def main() -> None:
    """Runs the scenarios and writes ``bench/results/invocations.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per route")
    args = parser.parse_args()
    found = run(args.quick)
    for measured in found["scenarios"].values():
        if measured.profile:
            print(f"\nprofile of {measured.name} (own time share, calls per request):")
            print("\n".join(f"  {line}" for line in measured.profile))
    print()
    meta = {
        **machine_meta(),
        "scenarios": {
            key: {
                "requests": m.requests,
                "p50_ms": m.p(0.5),
                "p99_ms": m.p(0.99),
                "calls": m.calls,
                "profile": m.profile,
            }
            for key, m in found["scenarios"].items()
        },  # fmt: skip
        "overheads_us": {k: v * 1e6 for k, v in found["overheads"].items()},
    }
    report("invocations", rows_for(found), meta)


if __name__ == "__main__":
    main()
