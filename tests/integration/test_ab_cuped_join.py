"""CUPED covariates joined from a dataset version by user id, over HTTP and the Python API:
the adjusted effect equals statsmodels' OLS on the joined data; every way a version cannot
serve is a clear 4xx with nothing created; a dataset the caller may not read is 404 at creation
and its CUPED result is withheld from readers of the experiment who may not read it."""

from __future__ import annotations

import csv
import io
import uuid
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
import statsmodels.api as sm

from tests.conftest import Http, Tokens
from tests.helpers.abtesting import experiment_request, http_model_with_versions

USERS = 600


def _csv(rows: list[tuple[Any, ...]], header: tuple[str, ...] = ("user", "pre_revenue")) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _dataset(http: Http, text: str, groups: list[str] | None = None) -> str:
    body: dict[str, Any] = {"name": f"pre-{uuid.uuid4().hex[:6]}"}
    if groups is not None:
        body["access_groups"] = groups
    dataset_id = http.call("POST", "/datasets", body).data["dataset_id"]
    assert http.call("POST", f"/datasets/{dataset_id}/versions", {"data": text}).status_code == 201
    return dataset_id


def _body(model_id: str, source: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """An experiment on ``revenue`` whose covariates come from ``source``."""
    if source is not None:
        extra["covariate_source"] = source
    return experiment_request(model_id, primary_metric="revenue", minimum_sample_size=10, **extra)


def _source(dataset_id: str, version: str = "1", **extra: str) -> dict[str, str]:
    return {"dataset_id": dataset_id, "version": version, "user_column": "user",
            "covariate_column": "pre_revenue", **extra}  # fmt: skip


def _users(rng: np.random.Generator) -> dict[str, float]:
    return {f"u{i:04d}": round(float(rng.normal(100, 20)), 6) for i in range(USERS)}


def test_joined_covariates_give_the_ols_regression_adjusted_estimate(
    http: Http, tokens: Tokens
) -> None:
    rng = np.random.default_rng(31)
    users = _users(rng)
    dataset_id = _dataset(http, _csv(list(users.items())), groups=[])  # alice's alone
    http.call("PUT", f"/datasets/{dataset_id}/tags/pre-period", {"version": "1"})
    model_id = http_model_with_versions(http)
    created = http.call(
        "POST", "/experiments", _body(model_id, _source(dataset_id, "pre-period"),
                                      access_groups=["ml"]),
    )  # fmt: skip
    assert created.status_code == 201, created.data
    assert created.data["covariate_source"]["version_number"] == 1
    assert created.data["covariate_source"]["version_id"].startswith("dv-")
    experiment_id = created.data["experiment_id"]
    assert http.call("POST", f"/experiments/{experiment_id}/start").status_code == 200
    joined: dict[str, list[tuple[float, float]]] = {"control": [], "treatment": []}
    outcomes = []
    for index, (user, x) in enumerate(users.items()):
        arm = "treatment" if index % 2 else "control"
        y = round(20 + 0.6 * (x - 100) + (1.5 if arm == "treatment" else 0) + rng.normal(0, 8), 6)
        joined[arm].append((x, y))
        outcomes.append({"variant_id": arm, "request_id": f"r-{user}", "success": True,
                         "latency_ms": 10.0, "custom_metrics": {"revenue": y},
                         "user_id": user})  # fmt: skip
    for index in range(40):  # users the version does not list count without a covariate
        outcomes.append({"variant_id": "control", "request_id": f"new-{index}", "success": True,
                         "latency_ms": 10.0, "custom_metrics": {"revenue": 500.0},
                         "user_id": f"newcomer-{index}"})  # fmt: skip
    posted = http.call("POST", f"/experiments/{experiment_id}/outcomes", {"outcomes": outcomes})
    assert posted.data == {"accepted": USERS + 40, "duplicates": 0}

    found = http.call("GET", f"/experiments/{experiment_id}/analysis").data["treatments"][0]

    result = found["cuped"]
    assert (result["units_control"], result["units_treatment"]) == (USERS // 2, USERS // 2)
    x_c, y_c = np.array(joined["control"]).T
    x_t, y_t = np.array(joined["treatment"]).T
    x = np.r_[x_c, x_t]
    treated = np.r_[np.zeros(len(x_c)), np.ones(len(x_t))]
    fit = sm.OLS(np.r_[y_c, y_t], sm.add_constant(np.c_[treated, x - x.mean()])).fit()
    assert result["effect"] == pytest.approx(fit.params[1], rel=1e-9)
    assert result["standard_error"] == pytest.approx(fit.bse[1], rel=1e-9)
    assert result["theta"] == pytest.approx(fit.params[2], rel=1e-9)
    assert result["p_value"] == pytest.approx(fit.pvalues[1], rel=1e-6)
    assert result["variance_reduction"] > 0.5  # rho about 0.83
    # the Python API reads the same result
    from chalicelib.abtesting.engine import get_ab_engine

    python = get_ab_engine().analyze_experiment(experiment_id).treatments[0].cuped
    assert python.effect == pytest.approx(result["effect"], rel=1e-12)
    # a reader of the experiment who may not read the dataset never sees what it computed
    hidden = http.call("GET", f"/experiments/{experiment_id}/analysis", token=tokens.reader)
    assert hidden.status_code == 200
    assert hidden.data["treatments"][0]["cuped"] is None


def test_an_outcome_that_carries_its_own_covariate_is_refused_when_covariates_are_joined(
    http: Http,
) -> None:
    dataset_id = _dataset(http, _csv([("u1", 1.0), ("u2", 2.0)]))
    created = http.call(
        "POST", "/experiments", _body(http_model_with_versions(http), _source(dataset_id))
    )
    experiment_id = created.data["experiment_id"]
    http.call("POST", f"/experiments/{experiment_id}/start")
    batch = {"outcomes": [
        {"variant_id": "control", "request_id": "a", "success": True, "latency_ms": 1.0,
         "user_id": "u1", "custom_metrics": {"revenue": 3.0}},
        {"variant_id": "control", "request_id": "b", "success": True, "latency_ms": 1.0,
         "covariate": 2.0, "custom_metrics": {"revenue": 3.0}},
    ]}  # fmt: skip

    posted = http.call("POST", f"/experiments/{experiment_id}/outcomes", batch)

    assert posted.status_code == 422
    assert posted.data["error"] == "covariate_not_allowed"
    metrics = http.call("GET", f"/experiments/{experiment_id}/metrics").data["variants"]
    assert metrics["control"]["request_count"] == 0


BAD_TABLES = {
    "non-numeric": (_csv([("u1", "1.5"), ("u2", "n/a")]), 422, "invalid_covariate"),
    "infinite": (_csv([("u1", "inf")]), 422, "invalid_covariate"),
    "too big a value": (_csv([("u1", "2e6")]), 422, "invalid_covariate"),
    "duplicate user": (_csv([("u1", 1.0), ("u2", 2.0), ("u1", 3.0)]), 422, "duplicate_user_id"),
    "empty user": (_csv([("", 1.0)]), 422, "invalid_covariate"),
    "no users": (_csv([]), 422, "invalid_covariate"),
    "missing column": (_csv([("u1", 1.0)], ("user", "revenue_before")), 422, "unknown_column"),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_a_version_that_cannot_serve_as_covariates_is_refused_and_nothing_is_created(
    http: Http, case: str
) -> None:
    text, status, code = BAD_TABLES[case]
    dataset_id = _dataset(http, text)
    before = len(http.call("GET", "/experiments").data["experiments"])

    created = http.call(
        "POST", "/experiments", _body(http_model_with_versions(http), _source(dataset_id))
    )

    assert created.status_code == status, created.data
    assert created.data["error"] == code
    assert len(http.call("GET", "/experiments").data["experiments"]) == before


@pytest.mark.parametrize("bound", ["MAX_ROWS", "MAX_BYTES"])
def test_a_version_beyond_the_documented_bound_is_413(
    http: Http, monkeypatch: pytest.MonkeyPatch, bound: str
) -> None:
    from chalicelib.abtesting import covariates

    monkeypatch.setattr(covariates, bound, 10 if bound == "MAX_ROWS" else 64)
    dataset_id = _dataset(http, _csv([(f"u{i}", float(i)) for i in range(11)]))

    created = http.call(
        "POST", "/experiments", _body(http_model_with_versions(http), _source(dataset_id))
    )

    assert created.status_code == 413, created.data
    assert created.data["error"] == "covariates_too_large"


def test_unknown_or_unreadable_datasets_and_versions_are_the_same_404(
    http: Http, tokens: Tokens
) -> None:
    dataset_id = _dataset(http, _csv([("u1", 1.0)]), groups=["ml"])
    model_id = http_model_with_versions(http)
    answers = [
        http.call("POST", "/experiments", _body(model_id, _source("ds-missing"))),
        http.call("POST", "/experiments", _body(model_id, _source(dataset_id, "7"))),
        http.call("POST", "/experiments", _body(model_id, _source(dataset_id, "no-such-tag"))),
    ]
    other_model = http_model_with_versions(Http(http.client, tokens.other_writer))
    answers.append(
        http.call("POST", "/experiments", _body(other_model, _source(dataset_id)),
                  token=tokens.other_writer)
    )  # fmt: skip

    assert [a.status_code for a in answers] == [404, 404, 404, 404]
    leak = answers[3].data["message"]
    assert "pre_revenue" not in leak and "u1" not in leak  # nothing about the content


def test_the_python_api_joins_covariates_by_user_id(http: Http) -> None:
    from chalicelib.abtesting import facade
    from chalicelib.abtesting.engine import get_ab_engine
    from chalicelib.abtesting.models import CovariateRequest, ModelVariant
    from chalicelib.core.principal import Principal

    dataset_id = _dataset(http, _csv([(f"u{i}", float(i)) for i in range(10)]))
    model_id = http_model_with_versions(http)
    alice = Principal("alice", "key-alice", frozenset({"writer"}), frozenset({"ml"}))
    variants = [ModelVariant("control", model_id, 1, Decimal("0.5"), True),
                ModelVariant("treatment", model_id, 2, Decimal("0.5"))]  # fmt: skip
    experiment = facade.create_experiment(
        alice, "py", variants, primary_metric="revenue",
        covariate_request=CovariateRequest(dataset_id, "1", "user", "pre_revenue"),
    )  # fmt: skip
    assert experiment.covariate_source is not None
    engine = get_ab_engine()
    engine.start_experiment(experiment.experiment_id)
    for i in range(10):
        engine.record_outcome(experiment.experiment_id, ["control", "treatment"][i % 2], f"r{i}",
                              True, 1.0, custom_metrics={"revenue": 2.0 * i + i % 3},
                              user_id=f"u{i}")  # fmt: skip

    found = engine.analyze_experiment(experiment.experiment_id).treatments[0].cuped
    assert (found.units_control, found.units_treatment) == (5, 5)


def test_the_covariates_dataset_cannot_be_hidden_from_the_experiments_readers(http: Http) -> None:
    """Naming a version pins its dataset's access, as a variant pins its model's: narrowing the
    dataset away from a group that reads the experiment is 409 ``referenced``."""
    dataset_id = _dataset(http, _csv([("u1", 1.0)]), groups=["ml"])
    model_id = http_model_with_versions(http)
    created = http.call(
        "POST", "/experiments", _body(model_id, _source(dataset_id), access_groups=["ml"])
    )
    assert created.status_code == 201, created.data

    narrowed = http.call("PUT", f"/datasets/{dataset_id}/access", {"access_groups": []})

    assert narrowed.status_code == 409, narrowed.data
    assert narrowed.data["error"] == "referenced"


def _joined_experiment(http: Http, dataset_id: str, **extra: Any) -> str:
    created = http.call(
        "POST", "/experiments", _body(http_model_with_versions(http), _source(dataset_id), **extra)
    )
    assert created.status_code == 201, created.data
    return str(created.data["experiment_id"])


def test_readers_who_may_not_read_the_version_are_not_shown_the_covariate_source(
    http: Http, tokens: Tokens
) -> None:
    dataset_id = _dataset(http, _csv([("u1", 1.0)]), groups=[])  # alice's alone
    experiment_id = _joined_experiment(http, dataset_id, access_groups=["ml"])

    owner = http.call("GET", f"/experiments/{experiment_id}").data["covariate_source"]
    shown = http.call("GET", f"/experiments/{experiment_id}", token=tokens.reader)
    listed = http.call("GET", "/experiments", token=tokens.reader).data["experiments"]

    assert owner["covariate_column"] == "pre_revenue"
    assert shown.status_code == 200
    assert shown.data["covariate_source"] is None
    assert [e["covariate_source"] for e in listed if e["experiment_id"] == experiment_id] == [None]
    for answer in (shown.data, listed):
        assert dataset_id not in str(answer) and "pre_revenue" not in str(answer)


def test_the_refusal_of_a_carried_covariate_does_not_name_the_dataset(http: Http) -> None:
    dataset_id = _dataset(http, _csv([("u1", 1.0)]))
    experiment_id = _joined_experiment(http, dataset_id)
    http.call("POST", f"/experiments/{experiment_id}/start")
    carried = {"variant_id": "control", "request_id": "a", "success": True, "latency_ms": 1.0,
               "covariate": 2.0, "custom_metrics": {"revenue": 3.0}}  # fmt: skip

    posted = http.call("POST", f"/experiments/{experiment_id}/outcomes", {"outcomes": [carried]})

    assert posted.status_code == 422
    assert dataset_id not in posted.data["message"]


def test_a_version_an_experiment_joins_covariates_from_cannot_be_deleted(http: Http) -> None:
    dataset_id = _dataset(http, _csv([("u1", 1.0)]))
    experiment_id = _joined_experiment(http, dataset_id)

    deleted = http.call("DELETE", f"/datasets/{dataset_id}/versions/1")
    usages = http.call("GET", f"/datasets/{dataset_id}/usages?experiment_id={experiment_id}")

    assert deleted.status_code == 409, deleted.data
    assert http.call("GET", f"/datasets/{dataset_id}/versions/1").status_code == 200
    assert [u["purpose"] for u in usages.data["usages"]] == ["cuped_covariates"]


def test_an_erased_covariate_version_stops_being_joined_by_instances_that_read_it(
    http: Http, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.abtesting import covariates
    from chalicelib.abtesting.engine import get_ab_engine

    monkeypatch.setattr(covariates, "RECHECK_SECONDS", 0.0)
    dataset_id = _dataset(http, _csv([("u1", 1.0), ("u2", 2.0)]))
    experiment_id = _joined_experiment(http, dataset_id)
    http.call("POST", f"/experiments/{experiment_id}/start")

    def post(request_id: str) -> None:
        outcome = {
            "variant_id": "control",
            "request_id": request_id,
            "success": True,
            "latency_ms": 1.0,
            "user_id": "u1",
            "custom_metrics": {"revenue": 3.0},
        }
        batch = {"outcomes": [outcome]}  # fmt: skip
        assert http.call("POST", f"/experiments/{experiment_id}/outcomes", batch).status_code == 200

    post("before")  # this instance now holds the table
    sha = http.call("GET", f"/datasets/{dataset_id}/versions/1").data["sha256"]
    erased = http.call("POST", f"/content/{sha}/erase", token=tokens.admin)
    assert erased.status_code == 200, erased.data
    post("after")

    sums = get_ab_engine().get_experiment_metrics(experiment_id)["control"].cuped
    assert sums.n == 1  # only the outcome recorded before the erasure carries u1's value


def test_integer_user_ids_of_a_json_lines_version_join_string_and_integer_ids(http: Http) -> None:
    import json

    from chalicelib.abtesting.engine import get_ab_engine

    lines = "".join(json.dumps({"user": i, "pre_revenue": 10.0 * i}) + "\n" for i in (1, 2))
    body = {"name": f"pre-{uuid.uuid4().hex[:6]}", "format": "json"}
    dataset_id = http.call("POST", "/datasets", body).data["dataset_id"]
    version = http.call("POST", f"/datasets/{dataset_id}/versions", {"data": lines})
    assert version.status_code == 201, version.data
    experiment_id = _joined_experiment(http, dataset_id)
    http.call("POST", f"/experiments/{experiment_id}/start")
    outcome = {"variant_id": "control", "request_id": "http", "success": True,
               "latency_ms": 1.0, "user_id": "1", "custom_metrics": {"revenue": 3.0}}  # fmt: skip
    assert (
        http.call(
            "POST", f"/experiments/{experiment_id}/outcomes", {"outcomes": [outcome]}
        ).status_code
        == 200
    )
    engine = get_ab_engine()
    engine.record_outcome(
        experiment_id, "control", "python", True, 1.0, custom_metrics={"revenue": 4.0}, user_id=2
    )  # type: ignore[arg-type]

    sums = engine.get_experiment_metrics(experiment_id)["control"].cuped
    assert (sums.n, float(sums.sx)) == (2, 30.0)


def test_a_covariate_version_is_read_as_its_two_columns_only(http: Http) -> None:
    """A wide CSV's records are not built as whole dicts (a 32 MiB CSV of 80 narrow columns
    made ~330 MB of dicts beside its rows; two columns make ~46 MB)."""
    from chalicelib.abtesting.engine import _covariate_records
    from chalicelib.abtesting.models import CovariateSource

    wide = ("user", "pre_revenue", *(f"c{i}" for i in range(30)))
    dataset_id = _dataset(http, _csv([(f"u{i}", float(i), *range(30)) for i in range(5)], wide))
    version = http.call("GET", f"/datasets/{dataset_id}/versions/1").data
    source = CovariateSource(dataset_id, version["version_id"], 1, "user", "pre_revenue")

    found = _covariate_records(source)

    assert found.columns == list(wide) and found.total == 5
    assert found.records == [{"user": f"u{i}", "pre_revenue": f"{float(i)}"} for i in range(5)]


def test_a_delete_landing_while_the_experiment_is_stored_finds_the_version_in_use(
    http: Http, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usage is written before the experiment: a delete injected between the two steps is
    409, and the experiment is stored with its version kept."""
    from chalicelib.abtesting.engine import get_ab_engine

    dataset_id = _dataset(http, _csv([("u1", 1.0)]))
    engine = get_ab_engine()
    store = engine.repository.create
    deletes: list[int] = []

    def delete_then_store(experiment: Any) -> None:
        deletes.append(http.call("DELETE", f"/datasets/{dataset_id}/versions/1").status_code)
        store(experiment)

    monkeypatch.setattr(engine.repository, "create", delete_then_store)
    experiment_id = _joined_experiment(http, dataset_id)

    assert deletes == [409]
    assert http.call("GET", f"/datasets/{dataset_id}/versions/1").status_code == 200
    usages = http.call("GET", f"/datasets/{dataset_id}/usages?experiment_id={experiment_id}")
    assert [u["purpose"] for u in usages.data["usages"]] == ["cuped_covariates"]


def test_a_failed_experiment_write_leaves_no_usage_of_the_covariate_version(
    http: Http, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.abtesting.engine import get_ab_engine
    from chalicelib.abtesting.errors import InvalidExperiment

    dataset_id = _dataset(http, _csv([("u1", 1.0)]))
    engine = get_ab_engine()
    written: list[str] = []

    def fail(experiment: Any) -> None:
        written.append(experiment.experiment_id)
        raise InvalidExperiment("injected failure of the experiment write")

    monkeypatch.setattr(engine.repository, "create", fail)
    created = http.call(
        "POST", "/experiments", _body(http_model_with_versions(http), _source(dataset_id))
    )
    monkeypatch.undo()

    assert created.status_code == 422, created.data
    from chalicelib.dataversion.service import get_dataset_service

    assert get_dataset_service().engine.repository.usages(written[0], dataset_id) == []
    assert http.call("DELETE", f"/datasets/{dataset_id}/versions/1").status_code == 200
