"""What the hot routes cost in AWS calls per invocation, counted with a botocore event hook
(``synapse_local.awscalls``), never timed: warm routing calls nothing, an analysis reads one
query per variant at most, a batch of 1,000 outcomes stays within the write budget.
``bench/bench_invocations.py`` reports the same counts next to handler times."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from synapse_local.awscalls import AwsCallCounter
from tests.conftest import Http

DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")


@pytest.fixture
def calls(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsCallCounter]:
    """A counter over every client the app creates from here on (caches kept an hour)."""
    from chalicelib.core import aws as aws_clients
    from chalicelib.core.singleton import reset_all
    from chalicelib.domains import all_table_models

    monkeypatch.setenv("SYNAPSE_ROUTE_CACHE_TTL", "3600")
    monkeypatch.setenv("SYNAPSE_AUTH_CACHE_TTL", "3600")
    AwsCallCounter.install()
    aws_clients.reset_clients()
    reset_all()
    for model in all_table_models():
        model._connection = None  # PynamoDB's clients are created again, hooked
    counter = AwsCallCounter()
    yield counter
    counter.stop()


def _experiment(http: Http, arms: int, **extra: Any) -> tuple[str, list[str]]:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(40, 2))
    model = LogisticRegression().fit(features, (features[:, 0] > 0).astype(int))
    artifact = base64.b64encode(sio.dumps(model)).decode()
    model_id = http.call("POST", "/models", {"name": f"cost-{uuid.uuid4().hex[:6]}"}).data[
        "model_id"
    ]
    for _ in range(arms):
        body = {"artifact_base64": artifact, "task": "classification", "feature_names": ["a", "b"]}
        assert http.call("POST", f"/models/{model_id}/versions", body).status_code == 201
    names = ["control", *(f"treatment{i}" for i in range(1, arms))]
    weights = ["0.5", "0.25", "0.25"] if arms == 3 else ["0.5", "0.5"]
    variants = [
        {"variant_id": name, "model_id": model_id, "model_version": index + 1,
         "traffic_weight": weights[index], "is_control": index == 0}
        for index, name in enumerate(names)
    ]  # fmt: skip
    created = http.call("POST", "/experiments", {"name": "cost", "variants": variants, **extra})
    experiment_id = created.data["experiment_id"]
    assert http.call("POST", f"/experiments/{experiment_id}/start").status_code == 200
    return experiment_id, names


def _route(http: Http, experiment_id: str, user: str) -> None:
    body = {"request_id": f"r-{user}", "user_id": user}
    assert http.call("POST", f"/experiments/{experiment_id}/route", body).status_code == 200


def _outcomes(names: list[str], count: int, start: int = 0) -> dict[str, Any]:
    return {
        "outcomes": [
            {"variant_id": names[i % len(names)], "request_id": f"o{i}", "success": i % 9 != 0,
             "latency_ms": 10.0 + i % 40, "converted": i % 4 == 0}
            for i in range(start, start + count)
        ]
    }  # fmt: skip


def test_routing_with_a_warm_config_makes_no_aws_call(http: Http, calls: AwsCallCounter) -> None:
    experiment_id, _ = _experiment(http, 2)
    _route(http, experiment_id, "first")  # loads the key and the config into the caches

    with calls:
        for index in range(50):
            _route(http, experiment_id, f"user-{index}")

    assert calls.by_operation() == {}


def test_a_cold_route_reads_the_config_once_and_the_next_ones_nothing(
    http: Http, calls: AwsCallCounter
) -> None:
    experiment_id, _ = _experiment(http, 2)
    from chalicelib.abtesting.engine import get_ab_engine

    get_ab_engine.reset()  # a new instance: empty config cache (the key stays cached)

    with calls:
        for index in range(20):
            _route(http, experiment_id, f"user-{index}")

    assert calls.by_operation() == {"dynamodb.GetItem": 1}


def test_analysis_reads_at_most_one_query_per_variant(http: Http, calls: AwsCallCounter) -> None:
    experiment_id, names = _experiment(http, 3)
    posted = http.call("POST", f"/experiments/{experiment_id}/outcomes", _outcomes(names, 600))
    assert posted.data["accepted"] == 600

    with calls:
        analysis = http.call("GET", f"/experiments/{experiment_id}/analysis")

    assert analysis.status_code == 200
    assert calls.count("dynamodb", "Scan") == 0
    assert calls.count("dynamodb", "Query") <= len(names)
    assert calls.count("dynamodb", "GetItem") <= 1  # the experiment, read consistently


def test_an_outcome_batch_of_1000_stays_within_the_write_budget(
    http: Http, calls: AwsCallCounter
) -> None:
    experiment_id, names = _experiment(http, 2)
    http.call("POST", f"/experiments/{experiment_id}/outcomes", _outcomes(names, 1, 10_000))

    with calls:
        posted = http.call("POST", f"/experiments/{experiment_id}/outcomes", _outcomes(names, 1000))

    assert posted.data == {"accepted": 1000, "duplicates": 0}
    writes = sum(calls.count("dynamodb", operation) for operation in DYNAMODB_WRITES)
    assert writes <= 20
    assert calls.count("dynamodb") == writes  # and reads nothing (config and key cached)


SEVERAL_METRICS = [
    {"name": "clicked", "kind": "proportion"},
    {"name": "revenue", "kind": "mean", "cap_upper": 500},
    {"name": "ctr", "kind": "ratio", "numerator": "clicks", "denominator": "sessions"},
    {"name": "basket_p90", "kind": "quantile", "source": "basket", "quantile": 0.9},
    {"name": "conversion", "kind": "proportion", "source": "conversion_rate",
     "role": "guardrail"},
]  # fmt: skip


@pytest.mark.parametrize("metrics", [[], SEVERAL_METRICS], ids=["primary-only", "five-metrics"])
def test_an_outcome_batch_of_1000_with_three_dimensions_stays_within_the_write_budget(
    http: Http, calls: AwsCallCounter, metrics: list[dict[str, Any]]
) -> None:
    """3 dimensions of 20 values, every declared metric counted per segment (quantiles have no
    segment counters): still at most 20 write requests for 1,000 outcomes, and no read."""
    dimensions = {name: {"max_values": 20} for name in ("country", "device", "plan")}
    experiment_id, names = _experiment(http, 2, dimensions=dimensions, metrics=metrics)
    http.call("POST", f"/experiments/{experiment_id}/outcomes", _outcomes(names, 1, 10_000))
    batch = _outcomes(names, 1000)
    rng = np.random.default_rng(5)
    for index, outcome in enumerate(batch["outcomes"]):  # 20 values each, every one new here
        outcome["attributes"] = {
            "country": f"c{index % 20}", "device": f"d{index * 7 % 20}", "plan": f"p{index % 19}"
        }  # fmt: skip
        if metrics:
            outcome["custom_metrics"] = {
                "clicked": float(rng.random() < 0.3),
                "revenue": round(float(rng.lognormal(3, 1.5)), 2),
                "clicks": float(rng.poisson(2)),
                "sessions": float(rng.poisson(3) + 1),
                "basket": round(float(rng.lognormal(2, 1)), 2),
            }

    with calls:
        posted = http.call("POST", f"/experiments/{experiment_id}/outcomes", batch)

    assert posted.data == {"accepted": 1000, "duplicates": 0}
    writes = sum(calls.count("dynamodb", operation) for operation in DYNAMODB_WRITES)
    print(f"writes for 1,000 outcomes with 3 dimensions and {len(metrics)} metrics: {writes}")
    assert writes <= 20
    assert calls.count("dynamodb") == writes  # and reads nothing (config, key, kept values)
    found = http.call("GET", f"/experiments/{experiment_id}/segments").data
    segments = found["dimensions"]
    # 20, 20 and 19 values, and (missing) for the first outcome, which carried no attributes
    assert [len(d["segments"]) for d in segments] == [21, 21, 20]
    assert (
        sum(s["variants"][name]["request_count"] for s in segments[0]["segments"] for name in names)
        == 1001
    )
    tested = 1 + sum(1 for m in metrics if m["kind"] != "quantile")
    assert len(found["tests"]) == 62 * tested


def test_segments_read_one_query_more_than_the_analysis(http: Http, calls: AwsCallCounter) -> None:
    experiment_id, names = _experiment(http, 3, dimensions={"country": {"max_values": 5}})
    batch = _outcomes(names, 600)
    for index, outcome in enumerate(batch["outcomes"]):
        outcome["attributes"] = {"country": f"c{index % 7}"}
    assert http.call("POST", f"/experiments/{experiment_id}/outcomes", batch).status_code == 200

    with calls:
        found = http.call("GET", f"/experiments/{experiment_id}/segments")

    assert found.status_code == 200
    assert len(found.data["tests"]) == 6 * 2  # 5 kept values and (other), 2 treatments
    assert calls.count("dynamodb", "Scan") == 0
    assert calls.count("dynamodb", "Query") <= len(names) + 1
    assert calls.count("dynamodb", "GetItem") <= 1


def test_the_counter_sees_every_client_created_after_install(aws: Any) -> None:
    import boto3

    AwsCallCounter.install()
    s3 = boto3.client("s3", region_name="us-east-1")
    with AwsCallCounter() as counter:
        s3.list_buckets()
        s3.list_buckets()
    s3.list_buckets()  # after stop: not counted

    assert counter.by_operation() == {"s3.ListBuckets": 2}
    assert counter.total == 2 and counter.count("s3") == 2 and counter.count("sqs") == 0
    counter.reset()
    assert counter.total == 0


def test_1000_outcomes_with_cuped_covariates_stay_within_the_write_budget(
    http: Http, calls: AwsCallCounter
) -> None:
    """The CUPED sums ride in the same counter updates: no extra write."""
    experiment_id, names = _experiment(http, 2)
    http.call("POST", f"/experiments/{experiment_id}/outcomes", _outcomes(names, 1, 10_000))
    batch = _outcomes(names, 1000)
    for index, outcome in enumerate(batch["outcomes"]):
        outcome["covariate"] = float(index % 17) + 0.25

    with calls:
        posted = http.call("POST", f"/experiments/{experiment_id}/outcomes", batch)

    assert posted.data == {"accepted": 1000, "duplicates": 0}
    writes = sum(calls.count("dynamodb", operation) for operation in DYNAMODB_WRITES)
    assert writes <= 20
    analysis = http.call("GET", f"/experiments/{experiment_id}/analysis").data
    assert analysis["treatments"][0]["cuped"]["units_control"] == 500


def test_explanation_guardrails_cost_one_read_per_tick_and_posts_write_only_sampled_rows(
    http: Http, calls: AwsCallCounter
) -> None:
    from chalicelib.abtesting.engine import get_ab_engine
    from chalicelib.abtesting.rollback import get_rollback_manager

    experiment_id, _ = _experiment(http, 2)
    experiment = get_ab_engine().get_experiment(experiment_id)
    monitor = get_rollback_manager().explanations
    with calls:
        assert monitor.check(experiment, "2026-01-01T00:00:00.000000Z").status is None
    assert calls.by_operation() == {"dynamodb.GetItem": 1}  # nothing declared: one read
    path = f"/experiments/{experiment_id}/explanation-inputs"
    rows = [{"request_id": f"r{i}", "input_data": {"a": i, "b": -i}} for i in range(100)]
    http.call("POST", path, {"inputs": rows[:1]})  # keys and configs cached
    calls.reset()
    with calls:
        assert http.call("POST", path, {"inputs": rows}).data["sampled"] == 99
    assert calls.by_operation() == {"dynamodb.Query": 1, "dynamodb.BatchWriteItem": 4}
    calls.reset()
    with calls:
        assert http.call("POST", path, {"inputs": rows}).data["sampled"] == 0  # a retry
    assert calls.by_operation() == {"dynamodb.Query": 1}


@pytest.mark.parametrize(("sources", "most"), [(0, 11), (2, 13), (4, 16), (6, 21), (10, 40)])
def test_writes_per_1000_outcomes_grow_with_the_metrics_segments_keep(
    sources: int, most: int
) -> None:
    """What README's "Cost" states, counted by the transaction planner the store writes with
    (one write request per chunk): 3 dimensions of 20 values, 2 variants, each declared metric
    with its own segment counters (a custom proportion/mean source or a ratio) carried by every
    outcome. Up to four fit the budget of 20; six do not."""
    from chalicelib.abtesting.models import Dimension, Outcome
    from chalicelib.abtesting.outcomes_repository import SegmentPlan, chunk_outcomes

    rng = np.random.default_rng(1)
    names = tuple(f"m{i}" for i in range(sources))
    plan = SegmentPlan(tuple(Dimension(n, 20) for n in ("country", "device", "plan")), None, names)
    outcomes = [
        Outcome("control" if i % 2 else "treatment", f"r{i}", True, 10.0, True,
                {n: round(float(rng.lognormal(3, 1.5)), 2) for n in names}, phase=0,
                attributes={"country": f"c{i % 20}", "device": f"d{i * 7 % 20}",
                            "plan": f"p{i % 19}"})
        for i in range(1000)
    ]  # fmt: skip

    writes = len(list(chunk_outcomes(outcomes, plan)))

    assert writes == most
    assert (writes <= 20) == (sources <= 4)
