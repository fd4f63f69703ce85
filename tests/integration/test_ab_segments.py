"""Segments over HTTP and the Python API, on moto: declared dimensions, attribute validation,
bounded cardinality with ``(other)``, exact sums, and flagged segments."""

from __future__ import annotations

import base64
import random
import uuid
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from scipy import stats
from sklearn.linear_model import LogisticRegression

from tests.conftest import Http

COUNTS = ("request_count", "success_count", "error_count", "converted_count", "conversion_trials")


def _model(http: Http) -> str:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 2))
    model = LogisticRegression().fit(features, (features[:, 0] > 0).astype(int))
    artifact = base64.b64encode(sio.dumps(model)).decode()
    model_id = http.call("POST", "/models", {"name": f"seg-{uuid.uuid4().hex[:6]}"}).data[
        "model_id"
    ]
    for _ in range(2):
        body = {"artifact_base64": artifact, "task": "classification", "feature_names": ["a", "b"]}
        assert http.call("POST", f"/models/{model_id}/versions", body).status_code == 201
    return model_id


def _body(model_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "segments",
        "variants": [
            {"variant_id": "control", "model_id": model_id, "model_version": 1,
             "traffic_weight": "0.5", "is_control": True},
            {"variant_id": "treatment", "model_id": model_id, "model_version": 2,
             "traffic_weight": "0.5"},
        ],
        "primary_metric": "error_rate",
        "minimum_sample_size": 10,
        **extra,
    }  # fmt: skip


def _running(http: Http, **extra: Any) -> str:
    created = http.call("POST", "/experiments", _body(_model(http), **extra))
    assert created.status_code == 201, created.data
    experiment_id = created.data["experiment_id"]
    assert http.call("POST", f"/experiments/{experiment_id}/start").status_code == 200
    return experiment_id


def _outcome(variant: str, request_id: str, attributes: dict[str, Any], **extra: Any) -> dict:
    return {"variant_id": variant, "request_id": request_id, "success": True,
            "latency_ms": 12.5, "attributes": attributes, **extra}  # fmt: skip


DIMENSIONS = {"country": {"max_values": 5}, "device": {"max_values": 2}, "plan": {"max_values": 3}}


def test_experiments_declare_dimensions_and_show_them(http: Http) -> None:
    created = http.call(
        "POST", "/experiments", _body(_model(http), dimensions=DIMENSIONS, segment_correction="bh")
    )

    assert created.status_code == 201, created.data
    assert created.data["dimensions"] == DIMENSIONS
    assert created.data["segment_correction"] == "bh"
    again = http.call("GET", f"/experiments/{created.data['experiment_id']}")
    assert again.data["dimensions"] == DIMENSIONS
    assert again.data["segment_correction"] == "bh"


@pytest.mark.parametrize(
    ("dimensions", "status"),
    [
        ({"a": {}, "b": {}, "c": {}, "d": {}}, 400),  # more than three
        ({"country": {"max_values": 21}}, 400),
        ({"country": {"max_values": 0}}, 400),
        ({"1country": {}}, 400),
        ({"country": {"max_values": 5, "extra": 1}}, 400),
    ],
)
def test_bad_dimension_declarations_are_refused(
    http: Http, dimensions: dict[str, Any], status: int
) -> None:
    created = http.call("POST", "/experiments", _body(_model(http), dimensions=dimensions))

    assert created.status_code == status, created.data
    assert {"error", "message"} <= set(created.data)


def test_a_bad_segment_correction_is_refused(http: Http) -> None:
    created = http.call("POST", "/experiments", _body(_model(http), segment_correction="bonf"))

    assert created.status_code == 400
    assert {"error", "message"} <= set(created.data)


@pytest.mark.parametrize(
    ("attributes", "status", "code"),
    [
        ({"colour": "red"}, 422, "unknown_dimension"),
        ({"country": 7}, 400, None),
        ({"country": ["BR"]}, 400, None),
        ({"country": None}, 400, None),
        ({"country": ""}, 400, None),
        ({"country": "x" * 65}, 400, None),
        ({"country": "B\u0000R"}, 400, None),
        ({"country": "B\u202eR"}, 400, None),
        ({"country": "(other)"}, 422, "invalid_attributes"),
        ({"country": "(missing)"}, 422, "invalid_attributes"),
    ],
)
def test_bad_attributes_are_refused_and_nothing_is_counted(
    http: Http, attributes: dict[str, Any], status: int, code: str | None
) -> None:
    experiment_id = _running(http, dimensions=DIMENSIONS)
    batch = {"outcomes": [_outcome("control", "ok-1", {"country": "BR"}),
                          _outcome("treatment", "bad", attributes)]}  # fmt: skip

    posted = http.call("POST", f"/experiments/{experiment_id}/outcomes", batch)

    assert posted.status_code == status, posted.data
    assert {"error", "message"} <= set(posted.data)
    if code is not None:
        assert posted.data["error"] == code
    metrics = http.call("GET", f"/experiments/{experiment_id}/metrics").data["variants"]
    assert metrics["control"]["request_count"] == metrics["treatment"]["request_count"] == 0
    segments = http.call("GET", f"/experiments/{experiment_id}/segments").data
    assert all(d["segments"] == [] for d in segments["dimensions"])


def test_attributes_on_an_experiment_without_dimensions_are_refused(http: Http) -> None:
    experiment_id = _running(http)

    posted = http.call(
        "POST",
        f"/experiments/{experiment_id}/outcomes",
        _outcome("control", "r", {"country": "BR"}),
    )

    assert posted.status_code == 422
    assert posted.data["error"] == "unknown_dimension"


def test_segments_add_up_exactly_to_the_overall_counts(http: Http) -> None:
    experiment_id = _running(http, dimensions=DIMENSIONS)
    rng = random.Random(7)
    outcomes = []
    for index in range(1500):
        attributes = {
            "country": rng.choice(["BR", "US", "DE", "FR", "IN", "JP", "MX", "NG"]),
            "device": rng.choice(["ios", "android", "web", "tv"]),
        }
        if rng.random() < 0.8:
            attributes["plan"] = rng.choice(["free", "pro"])
        if rng.random() < 0.1:
            del attributes["country"]
        outcomes.append(
            _outcome(rng.choice(["control", "treatment"]), f"r{index}", attributes,
                     success=rng.random() > 0.1, converted=rng.choice([None, True, False]))
        )  # fmt: skip
    for start in range(0, len(outcomes), 500):
        batch = {"outcomes": outcomes[start : start + 500]}
        assert http.call("POST", f"/experiments/{experiment_id}/outcomes", batch).status_code == 200

    overall = http.call("GET", f"/experiments/{experiment_id}/metrics").data["variants"]
    found = http.call("GET", f"/experiments/{experiment_id}/segments").data

    assert sum(v["request_count"] for v in overall.values()) == 1500
    assert [d["name"] for d in found["dimensions"]] == ["country", "device", "plan"]
    for dimension in found["dimensions"]:
        for variant, totals in overall.items():
            for name in COUNTS:
                summed = sum(s["variants"][variant][name] for s in dimension["segments"])
                assert summed == totals[name], (dimension["name"], variant, name)
        values = {s["value"] for s in dimension["segments"]}
        kept = values - {"(other)", "(missing)"}
        assert len(kept) <= DIMENSIONS[dimension["name"]]["max_values"]
    country = {s["value"] for s in found["dimensions"][0]["segments"]}
    assert {"(other)", "(missing)"} <= country and len(country) == 7
    assert {s["value"] for s in found["dimensions"][2]["segments"]} == {"free", "pro", "(missing)"}


def test_values_beyond_the_bound_count_as_other_first_come_first_kept(http: Http) -> None:
    experiment_id = _running(http, dimensions={"country": {"max_values": 3}})
    url = f"/experiments/{experiment_id}/outcomes"
    for index, country in enumerate(["BR", "US", "DE", "FR", "BR", "JP", "US"]):
        body = _outcome("control", f"r{index}", {"country": country})
        assert http.call("POST", url, body).status_code == 200

    from chalicelib.abtesting.engine import get_ab_engine

    get_ab_engine.reset()  # a new instance that remembers no kept value
    for index, country in enumerate(["FR", "DE", "IT"]):
        body = _outcome("treatment", f"s{index}", {"country": country})
        assert http.call("POST", url, body).status_code == 200

    found = http.call("GET", f"/experiments/{experiment_id}/segments").data
    counts = {
        s["value"]: (s["variants"]["control"]["request_count"],
                     s["variants"]["treatment"]["request_count"])
        for s in found["dimensions"][0]["segments"]
    }  # fmt: skip
    assert counts == {"BR": (2, 0), "US": (2, 0), "DE": (1, 1), "(other)": (2, 2)}


def test_writers_that_remember_nothing_never_keep_more_values_than_declared(aws: Any) -> None:
    from chalicelib.abtesting.models import Dimension, Outcome
    from chalicelib.abtesting.outcomes_repository import OutcomeStore, SegmentPlan
    from chalicelib.core.clock import utc_now

    plan = SegmentPlan((Dimension("country", 4),))
    stores = [OutcomeStore() for _ in range(3)]
    rng = random.Random(3)
    for index in range(60):
        store = stores[index % 3]
        outcome = Outcome("v", f"r{index}", True, 1.0,
                          attributes={"country": f"c{rng.randrange(12)}"})  # fmt: skip
        store.record("exp", [outcome], utc_now(), plan=plan)

    counted = OutcomeStore().read_segments("exp")["country"]
    kept = set(counted) - {"(other)"}
    assert len(kept) == 4
    assert sum(v[0]["v"]["sums"]["request_count"] for v in counted.values()) == 60
    for store in stores:  # every writer folded by the same stored set
        assert store._read_registry("exp") == {"country": kept}


def test_the_python_api_records_attributes_and_refuses_bad_ones(http: Http) -> None:
    from chalicelib.abtesting.engine import get_ab_engine
    from chalicelib.core.errors import UnprocessableEntity

    experiment_id = _running(http, dimensions={"country": {"max_values": 3}})
    engine = get_ab_engine()

    receipt = engine.record_outcome(
        experiment_id, "control", "p1", True, 5.0, attributes={"country": "BR"}
    )
    assert receipt.accepted == 1
    for bad in ({"country": "a\tb"}, {"country": 3}, {"city": "Rio"}, {"country": "y" * 65}):
        with pytest.raises(UnprocessableEntity):
            engine.record_outcome(experiment_id, "control", "p2", True, 5.0, attributes=bad)
    found = engine.analyze_segments(experiment_id)
    assert found.segments["country"]["BR"]["control"].request_count == 1
    assert found.segments["country"].keys() == {"BR"}


def test_a_regression_in_one_segment_is_flagged_over_http(http: Http) -> None:
    experiment_id = _running(
        http, dimensions={"country": {"max_values": 10}}, analysis={"method": "fixed"}
    )
    rng = np.random.default_rng(11)
    countries = [f"c{i}" for i in range(9)] + ["BR"]
    outcomes = []
    for country in countries:
        for variant in ("control", "treatment"):
            rate = 0.06 if (country == "BR" and variant == "treatment") else 0.02
            failures = rng.random(600) < rate
            outcomes += [
                _outcome(variant, f"{country}-{variant}-{i}", {"country": country},
                         success=not bool(failed))
                for i, failed in enumerate(failures)
            ]  # fmt: skip
    for start in range(0, len(outcomes), 1000):
        batch = {"outcomes": outcomes[start : start + 1000]}
        assert http.call("POST", f"/experiments/{experiment_id}/outcomes", batch).status_code == 200

    found = http.call("GET", f"/experiments/{experiment_id}/segments")
    overall = http.call("GET", f"/experiments/{experiment_id}/analysis").data

    assert found.status_code == 200, found.data
    data = found.data
    assert (data["method"], data["correction"], data["alpha"]) == ("fixed", "holm", 0.05)
    assert len(data["tests"]) == 10
    assert overall["treatments"][0]["is_significant"] is False
    assert [(t["dimension"], t["value"]) for t in data["flagged"]] == [("country", "BR")]
    flagged = data["flagged"][0]
    assert flagged["direction"] == "worse" and flagged["difference"] > 0
    assert "overall result is not significant" in flagged["flag_reason"]
    assert data["top"][0]["value"] == "BR"
    from tests.helpers.oracles import multipletests

    raw = [t["p_value"] for t in data["tests"]]
    expected = multipletests(raw, alpha=0.05, method="holm")[1]
    assert [t["adjusted_p_value"] for t in data["tests"]] == pytest.approx(list(expected))


class _CheckedClient:
    """A DynamoDB client that refuses what DynamoDB refuses and moto lets through: more than
    100 actions in a transaction, two on one item, an UpdateExpression over 4 KB, an expression
    attribute name over 255 bytes."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.transactions: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, TransactItems: list[dict[str, Any]]) -> Any:  # noqa: N803
        assert len(TransactItems) <= 100
        keys = [
            str(next(iter(a.values()))["Key" if "Update" in a else "Item"]) for a in TransactItems
        ]
        assert len(set(keys)) == len(keys)
        for action in TransactItems:
            update = action.get("Update")
            if update is None:
                continue
            assert len(update["UpdateExpression"].encode()) <= 4096
            assert all(len(n.encode()) <= 255 for n in update["ExpressionAttributeNames"].values())
        self.transactions.append(len(TransactItems))
        return self._client.transact_write_items(TransactItems=TransactItems)


def test_wide_batches_stay_within_dynamodb_limits_and_segment_moments_are_exact(aws: Any) -> None:
    from chalicelib.abtesting import aggregate
    from chalicelib.abtesting.models import Dimension, Outcome
    from chalicelib.abtesting.outcomes_repository import OutcomeStore, SegmentPlan
    from chalicelib.core import aws as clients
    from chalicelib.core.clock import utc_now

    wide = [f"metric_{j}_{'x' * 50}" for j in range(5)]
    plan = SegmentPlan(
        tuple(Dimension(f"dim{i}", 20) for i in range(3)), metric="score", sources=tuple(wide[:2])
    )
    rng = np.random.default_rng(8)
    long_values = [("é" * 60) + f"{i:04d}" for i in range(20)]  # 124 bytes each
    outcomes = []
    for index in range(600):
        scores = {f"metric_{j}_{'x' * 50}": float(rng.normal(0, 10.0 ** rng.integers(-3, 9)))
                  for j in range(5)}  # fmt: skip
        scores["score"] = round(float(rng.normal(0, 10.0 ** rng.integers(-3, 9))), 6)
        attributes = {f"dim{i}": long_values[int(rng.integers(20))] for i in range(3)}
        outcomes.append(Outcome(f"v{index % 3}", f"r{index}", bool(index % 5), float(
            rng.lognormal(3, 3)), custom_metrics=scores, attributes=attributes))  # fmt: skip
    client = _CheckedClient(clients.client("dynamodb"))
    store = OutcomeStore(client=client)

    assert store.record("wide", outcomes, utc_now(), plan=plan).accepted == 600

    assert len(client.transactions) > 6  # the update parts took room from the puts
    found = store.read_segments("wide")
    for dimension in ("dim0", "dim1", "dim2"):
        for value, phases in found[dimension].items():
            for variant, raw in phases[0].items():
                metrics = aggregate.metrics_from_counters(variant, raw)
                for name in ("score", *wide[:2]):  # the primary's and two declared sources
                    scores = [
                        round(o.custom_metrics[name], 6)
                        for o in outcomes
                        if o.variant_id == variant and o.attributes[dimension] == value
                    ]
                    assert metrics.request_count == len(scores)
                    stats = metrics.custom_stats[name]
                    mean = float(np.mean(scores))
                    assert stats.mean == pytest.approx(mean, rel=1e-12, abs=1e-9)
                    if len(scores) > 1:
                        expected = float(np.var(scores, ddof=1))
                        assert stats.variance == pytest.approx(expected, rel=1e-9)
                assert set(metrics.custom_stats) == {"score", *wide[:2]}


DECLARED = [
    {"name": "clicked", "kind": "proportion"},
    {"name": "revenue", "kind": "mean", "cap_upper": 200},
    {"name": "ctr", "kind": "ratio", "numerator": "clicks", "denominator": "sessions"},
    {"name": "basket_p90", "kind": "quantile", "source": "basket", "quantile": 0.9},
    {"name": "fast", "kind": "mean", "source": "latency_ms", "lower_is_better": True},
]


def _declared_outcomes(rng: np.random.Generator) -> list[dict[str, Any]]:
    """400 outcomes per (country, variant); in DE the treatment's clicks per session fall by
    a third, in BR and US they rise by a seventh (about no change overall); nothing else
    differs."""
    outcomes = []
    for country in ("BR", "DE", "US"):
        for variant in ("control", "treatment"):
            rate = 2.1
            if variant == "treatment":
                rate = 1.4 if country == "DE" else 2.4
            for index in range(400):
                sessions = float(rng.poisson(3) + 1)
                values = {
                    "clicked": float(rng.random() < 0.3),
                    "revenue": round(float(rng.lognormal(3, 1.2)), 2),
                    "clicks": float(rng.poisson(rate * sessions / 3)),
                    "sessions": sessions,
                    "basket": round(float(rng.lognormal(2, 1)), 2),
                }
                outcomes.append(
                    _outcome(variant, f"{country}-{variant}-{index}", {"country": country},
                             latency_ms=round(float(rng.gamma(4, 10)), 3), custom_metrics=values)
                )  # fmt: skip
    return outcomes


def _oracle(spec: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[float, float, int]:
    """One arm's estimate, its variance and n, from the raw outcomes with numpy."""
    values = [r["custom_metrics"] for r in rows]
    if spec["kind"] == "ratio":
        a = np.array([v["clicks"] for v in values])
        b = np.array([v["sessions"] for v in values])
        ratio = a.sum() / b.sum()
        cov = np.cov(a, b, ddof=1)
        variance = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (
            len(a) * b.mean() ** 2
        )
        return float(ratio), float(variance), len(a)
    if spec.get("source") == "latency_ms":
        x = np.array([r["latency_ms"] for r in rows])
    else:
        x = np.minimum([v[spec["name"]] for v in values], spec.get("cap_upper", np.inf))
    return float(x.mean()), float(x.var(ddof=1) / len(x)), len(x)


def test_every_declared_metric_is_tested_per_segment_against_numpy_and_statsmodels(
    http: Http,
) -> None:
    from statsmodels.stats.proportion import test_proportions_2indep
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    from chalicelib.abtesting.engine import ABTestingEngine, get_ab_engine
    from chalicelib.abtesting.memory import InMemoryOutcomeStore
    from tests.helpers.oracles import multipletests

    # The statistics under test, over the in-memory outcome counters: writing these 2,400
    # outcomes' segment counters through moto took 90 of the module's 175 s. The DynamoDB store
    # counts the same declared sources and ratio sums per segment as the in-memory one
    # (tests/unit/test_repository_contracts.py::test_both_implementations_count_the_same_
    # declared_sources_and_ratio_sums_per_segment); test_wide_batches_... above checks it
    # against numpy through moto.
    get_ab_engine.override(ABTestingEngine(outcomes=InMemoryOutcomeStore()))
    experiment_id = _running(
        http, dimensions={"country": {"max_values": 5}}, analysis={"method": "fixed"},
        metrics=DECLARED, primary_metric="conversion_rate",
    )  # fmt: skip
    outcomes = _declared_outcomes(np.random.default_rng(19))
    for start in range(0, len(outcomes), 1000):
        batch = {"outcomes": outcomes[start : start + 1000]}
        assert http.call("POST", f"/experiments/{experiment_id}/outcomes", batch).status_code == 200

    found = http.call("GET", f"/experiments/{experiment_id}/segments")

    assert found.status_code == 200, found.data
    data = found.data
    assert data["metrics"] == ["conversion_rate", "clicked", "revenue", "ctr", "fast"]
    assert [(u["metric"], u["kind"]) for u in data["untested"]] == [("basket_p90", "quantile")]
    assert "histogram per segment value" in data["untested"][0]["reason"]
    assert len(data["tests"]) == 3 * 5  # 3 countries, 1 treatment, 5 metrics
    specs = {s["name"]: s for s in DECLARED}
    for test in data["tests"]:
        if test["metric"] == "conversion_rate":  # no outcome reported a conversion
            assert test["test"] and test["difference"] is None
            continue
        spec = specs[test["metric"]]
        assert test["kind"] == spec["kind"]
        arms = [
            [o for o in outcomes if o["attributes"]["country"] == test["value"]
             and o["variant_id"] == variant]
            for variant in ("control", "treatment")
        ]  # fmt: skip
        (c_value, c_var, n_c), (t_value, t_var, n_t) = (_oracle(spec, rows) for rows in arms)
        assert test["control_value"] == pytest.approx(c_value, rel=1e-9)
        assert test["treatment_value"] == pytest.approx(t_value, rel=1e-9)
        assert test["difference"] == pytest.approx(t_value - c_value, rel=1e-9, abs=1e-12)
        if spec["kind"] == "proportion":
            hits = [sum(r["custom_metrics"]["clicked"] for r in rows) for rows in arms]
            oracle = test_proportions_2indep(
                hits[1], n_t, hits[0], n_c, method="wald", compare="diff"
            ).pvalue
        elif spec["kind"] == "mean":
            samples = [_samples(spec, rows) for rows in arms]
            oracle = CompareMeans(DescrStatsW(samples[1]), DescrStatsW(samples[0])).ztest_ind(
                usevar="unequal"
            )[1]
        else:
            z = (t_value - c_value) / np.sqrt(c_var + t_var)
            oracle = float(2 * stats.norm.sf(abs(z)))
        assert test["test"] == "z"
        assert test["p_value"] == pytest.approx(oracle, rel=1e-6), test
    # the family is the tests with data; one where an arm has none keeps adjusted p = 1
    ran = [t for t in data["tests"] if t["difference"] is not None]
    empty = [t for t in data["tests"] if t["difference"] is None]
    assert empty and all(t["adjusted_p_value"] == 1.0 for t in empty)
    expected = multipletests([t["p_value"] for t in ran], alpha=0.05, method="holm")[1]
    assert [t["adjusted_p_value"] for t in ran] == pytest.approx(list(expected))
    flagged = [(t["value"], t["metric"], t["direction"]) for t in data["flagged"]]
    # ctr moves in opposite directions by country and not overall: each country is flagged
    assert flagged == [("BR", "ctr", "better"), ("DE", "ctr", "worse"), ("US", "ctr", "better")]
    assert all("overall result is not significant" in t["flag_reason"] for t in data["flagged"])
    assert (data["top"][0]["value"], data["top"][0]["metric"]) == ("DE", "ctr")

    from chalicelib.abtesting.engine import get_ab_engine

    python = get_ab_engine().analyze_segments(experiment_id)
    assert [(t.value, t.metric, t.adjusted_p_value) for t in python.tests] == [
        (t["value"], t["metric"], pytest.approx(t["adjusted_p_value"])) for t in data["tests"]
    ]
    assert [u.metric for u in python.untested] == ["basket_p90"]


def _samples(spec: dict[str, Any], rows: list[dict[str, Any]]) -> np.ndarray:
    if spec.get("source") == "latency_ms":
        return np.array([r["latency_ms"] for r in rows])
    values = [r["custom_metrics"][spec["name"]] for r in rows]
    return np.minimum(values, spec.get("cap_upper", np.inf))
