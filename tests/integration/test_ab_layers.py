"""Layers, global holdouts and targeting over HTTP: slices never overlap (409, nothing stored),
references follow the access rule, hostile targeting is a 4xx, holdout users are counted as the
holdout and ineligible requests are not exposures."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import Http, Tokens
from tests.helpers.abtesting import http_model_with_versions


def _model(http: Http, token: str | None = None) -> str:
    return http_model_with_versions(http if token is None else Http(http.client, token))


def _body(model_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": f"exp-{uuid.uuid4().hex[:8]}",
        "variants": [
            {"variant_id": "control", "model_id": model_id, "model_version": 1,
             "traffic_weight": "0.5", "is_control": True},
            {"variant_id": "treatment", "model_id": model_id, "model_version": 2,
             "traffic_weight": "0.5"},
        ],
        **extra,
    }  # fmt: skip


def _layer(http: Http, token: str | None = None, **extra: Any) -> str:
    created = http.call("POST", "/layers", {"name": "ranking", **extra}, token=token)
    assert created.status_code == 201, created.data
    return created.data["layer_id"]


@pytest.fixture
def model_id(http: Http) -> str:
    return _model(http)


def test_slices_of_one_layer_never_overlap_and_a_refused_one_stores_nothing(
    http: Http, model_id: str
) -> None:
    layer_id = _layer(http)
    first = http.call(
        "POST",
        "/experiments",
        _body(model_id, layer={"layer_id": layer_id, "start": 0, "end": 3000}),
    )
    assert first.status_code == 201, first.data
    assert first.data["layer"] == {"layer_id": layer_id, "start": 0, "end": 3000}
    before = {e["experiment_id"] for e in http.call("GET", "/experiments").data["experiments"]}

    clash = http.call(
        "POST",
        "/experiments",
        _body(model_id, layer={"layer_id": layer_id, "start": 2999, "end": 5000}),
    )

    assert clash.status_code == 409, clash.data
    assert clash.data["error"] == "layer_slice_taken"
    assert "free: [3000, 10000)" in clash.data["message"]
    after = {e["experiment_id"] for e in http.call("GET", "/experiments").data["experiments"]}
    assert after == before
    second = http.call(
        "POST",
        "/experiments",
        _body(model_id, layer={"layer_id": layer_id, "start": 3000, "end": 6000}),
    )
    assert second.status_code == 201, second.data
    layer = http.call("GET", f"/layers/{layer_id}").data
    assert layer["slices"] == [
        {"start": 0, "end": 3000, "experiment_id": first.data["experiment_id"], "free_at": None},
        {
            "start": 3000,
            "end": 6000,
            "experiment_id": second.data["experiment_id"],
            "free_at": None,
        },
    ]
    assert layer["free"] == [[6000, 10000]] and layer["buckets"] == 10000


@pytest.mark.parametrize(
    ("start", "end", "status"), [(5000, 5000, 422), (7000, 6000, 422), (0, 10001, 400)]
)
def test_an_empty_or_out_of_range_slice_is_refused(
    http: Http, model_id: str, start: int, end: int, status: int
) -> None:
    layer_id = _layer(http)
    body = _body(model_id, layer={"layer_id": layer_id, "start": start, "end": end})
    refused = http.call("POST", "/experiments", body)
    assert refused.status_code == status, refused.data
    assert http.call("GET", f"/layers/{layer_id}").data["slices"] == []


def test_a_layer_the_caller_may_not_read_is_answered_like_a_missing_one(
    http: Http, tokens: Tokens
) -> None:
    theirs = _layer(http, token=tokens.other_writer)
    bob_model = _model(http, token=tokens.other_writer)
    mine = _model(http)
    for layer_id in (theirs, "layer-0000000000000000"):
        body = _body(mine, layer={"layer_id": layer_id, "start": 0, "end": 10})
        refused = http.call("POST", "/experiments", body)
        assert refused.status_code == 422, refused.data
        assert refused.data == {
            "error": "unknown_layer",
            "message": f"layer {layer_id} does not exist",
        }
    assert http.call("GET", f"/layers/{theirs}").status_code == 404
    assert http.call("GET", f"/layers/{theirs}", token=tokens.other_writer).status_code == 200
    body = _body(bob_model, layer={"layer_id": theirs, "start": 0, "end": 10})
    assert http.call("POST", "/experiments", body, token=tokens.other_writer).status_code == 201


def test_a_layer_is_deleted_only_when_empty(http: Http, model_id: str, tokens: Tokens) -> None:
    layer_id = _layer(http)
    body = _body(model_id, layer={"layer_id": layer_id, "start": 0, "end": 10})
    assert http.call("POST", "/experiments", body).status_code == 201
    busy = http.call("DELETE", f"/layers/{layer_id}")
    assert (busy.status_code, busy.data["error"]) == (409, "layer_in_use")
    empty = _layer(http)
    assert http.call("DELETE", f"/layers/{empty}", token=tokens.reader).status_code == 403
    assert http.call("DELETE", f"/layers/{empty}").data == {"id": empty, "deleted": True}
    assert http.call("GET", f"/layers/{empty}").status_code == 404


def test_the_slice_of_a_layer_and_its_experiments_never_share_a_user_over_http(
    http: Http, model_id: str
) -> None:
    layer_id = _layer(http)
    ids = []
    for start, end in ((0, 5000), (5000, 10000)):
        body = _body(model_id, layer={"layer_id": layer_id, "start": start, "end": end})
        created = http.call("POST", "/experiments", body).data["experiment_id"]
        assert http.call("POST", f"/experiments/{created}/start").status_code == 200
        ids.append(created)
    for user in (f"u-{index}" for index in range(300)):
        exposures = [
            http.call("POST", f"/experiments/{e}/route", {"request_id": "r", "user_id": user}).data[
                "exposure"
            ]
            for e in ids
        ]
        assert sorted(exposures) == ["experiment", "outside_layer"], (user, exposures)


def test_ineligible_requests_get_the_control_model_and_no_variant(
    http: Http, model_id: str
) -> None:
    targeting = {"all": [{"attribute": "country", "in": ["DE", "FR"]},
                         {"attribute": "age", "gte": 18}]}  # fmt: skip
    created = http.call("POST", "/experiments", _body(model_id, targeting=targeting))
    assert created.status_code == 201, created.data
    assert created.data["targeting"] == targeting
    experiment_id = created.data["experiment_id"]
    http.call("POST", f"/experiments/{experiment_id}/start")
    route = f"/experiments/{experiment_id}/route"

    out = http.call("POST", route, {"request_id": "r", "user_id": "u",
                                    "attributes": {"country": "US", "age": 40}}).data  # fmt: skip
    assert (out["variant_id"], out["model_version"], out["exposure"]) == (None, 1, "ineligible")
    none = http.call("POST", route, {"request_id": "r", "user_id": "u"}).data
    assert none["exposure"] == "ineligible"
    adult = {"request_id": "r", "user_id": "u", "attributes": {"country": "DE", "age": 18}}
    eligible = http.call("POST", route, adult).data
    assert eligible["exposure"] == "experiment"
    assert eligible["variant_id"] in ("control", "treatment")
    config = http.call("GET", f"/experiments/{experiment_id}/routing-config").data
    assert config["targeting"] == targeting and config["layer"] is None


def _deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"attribute": "a", "equals": 1}
    for _ in range(levels):
        node = {"all": [node]}
    return node


# (targeting, status): one experiment's creation each, in one account with one model.
_TARGETING_CASES: list[tuple[dict[str, Any], int]] = [
    (_deep(3), 201),
    (_deep(4), 422),
    (_deep(200), 400),  # the JSON reader refuses it before the grammar
    ({"any": [{"attribute": "a", "equals": i} for i in range(64)]}, 422),
    ({"attribute": "a", "in": list(range(101))}, 422),
    ({"attribute": "a", "in": []}, 422),
    ({"attribute": "a", "equals": "x" * 257}, 422),
    ({"attribute": "a", "equals": [1]}, 422),
    ({"attribute": "a", "gt": "5"}, 422),
    ({"attribute": "a", "gt": 1, "gte": 2}, 422),
    ({"attribute": "a", "equals": 1, "in": [1]}, 422),
    ({"attribute": "not a name!", "equals": 1}, 422),
    ({"all": []}, 422),
    ({"all": {"attribute": "a", "equals": 1}}, 422),
    ({"none": [{"attribute": "a", "equals": 1}]}, 422),
    ({"attribute": "a", "equals": 2**60}, 422),
    ({"any": [{"attribute": "a", "in": [f"{i:0256d}" for i in range(100)]}] * 2}, 422),
]


def test_targeting_outside_the_grammar_is_refused_with_a_4xx_and_nothing_stored(
    http: Http, model_id: str, subtests: pytest.Subtests
) -> None:
    for case, (targeting, status) in enumerate(_TARGETING_CASES):
        with subtests.test(case=case, status=status):
            before = len(http.call("GET", "/experiments").data["experiments"])
            answer = http.call("POST", "/experiments", _body(model_id, targeting=targeting))
            assert answer.status_code == status, answer.data
            stored = len(http.call("GET", "/experiments").data["experiments"]) - before
            assert stored == (1 if status == 201 else 0)
            if status == 422:
                assert answer.data["error"] == "invalid_targeting", answer.data


# Route attributes refused with 400, each posted to one started experiment.
_HOSTILE_ATTRIBUTES: list[dict[str, Any]] = [
    {f"k{i}": 1 for i in range(51)},
    {"a": "x" * 257},
    {"a": [1, 2]},
    {"a": {"b": 1}},
    {"bad name": 1},
    {"a": 2**60},
    # One past 2**53: float() would round it onto 2**53 and admit it where local
    # assignment, comparing the exact integer, does not.
    {"a": 2**53 + 1},
    {"a": -(2**53) - 1},
]


def test_hostile_route_attributes_are_a_400(
    http: Http, model_id: str, subtests: pytest.Subtests
) -> None:
    experiment_id = http.call("POST", "/experiments", _body(model_id)).data["experiment_id"]
    assert http.call("POST", f"/experiments/{experiment_id}/start").status_code == 200
    for case, attributes in enumerate(_HOSTILE_ATTRIBUTES):
        with subtests.test(case=case):
            body = {"request_id": "r", "user_id": "u", "attributes": attributes}
            answer = http.call("POST", f"/experiments/{experiment_id}/route", body)
            assert answer.status_code == 400, answer.data
    # the same experiment routes the same request with fair attributes
    body = {"request_id": "r", "user_id": "u", "attributes": {"a": 2**53}}
    assert http.call("POST", f"/experiments/{experiment_id}/route", body).status_code == 200


def test_holdout_users_see_the_control_and_are_counted_as_the_holdout(
    http: Http, model_id: str, tokens: Tokens
) -> None:
    refused = http.call("POST", "/holdouts", {"name": "h", "share": "0.1"})
    assert refused.status_code == 403
    for share in ("0.6", "0", "1"):
        bad = http.call("POST", "/holdouts", {"name": "h", "share": share}, token=tokens.admin)
        assert bad.status_code in (400, 422), (share, bad.data)
    holdout = http.call("POST", "/holdouts", {"name": "h", "share": "0.5"}, token=tokens.admin)
    assert holdout.status_code == 201, holdout.data
    holdout_id = holdout.data["holdout_id"]
    assert http.call("GET", f"/holdouts/{holdout_id}", token=tokens.reader).data == holdout.data
    experiment = http.call("POST", "/experiments", _body(model_id)).data
    assert experiment["holdouts"] == [{"holdout_id": holdout_id, "salt": holdout_id,
                                       "share": "0.5"}]  # fmt: skip
    experiment_id = experiment["experiment_id"]
    http.call("POST", f"/experiments/{experiment_id}/start")

    answers = [
        http.call("POST", f"/experiments/{experiment_id}/route",
                  {"request_id": f"r-{i}", "user_id": f"u-{i}"}).data
        for i in range(200)
    ]  # fmt: skip
    held = [a for a in answers if a["exposure"] == "holdout"]
    assert 60 <= len(held) <= 140  # 0.5 of 200, far beyond 5 standard deviations otherwise
    assert {(a["variant_id"], a["model_version"]) for a in held} == {("holdout", 1)}
    outcome = {"variant_id": "holdout", "request_id": "r-h", "success": True, "latency_ms": 3}
    assert http.call("POST", f"/experiments/{experiment_id}/outcomes", outcome).status_code == 200
    metrics = http.call("GET", f"/experiments/{experiment_id}/metrics").data["variants"]
    assert metrics["holdout"]["request_count"] == 1
    assert metrics["control"]["request_count"] == 0

    assert http.call("DELETE", f"/holdouts/{holdout_id}", token=tokens.admin).status_code == 200
    later = http.call("POST", "/experiments", _body(model_id)).data
    assert later["holdouts"] == []
    http.call("POST", f"/experiments/{later['experiment_id']}/start")
    rejected = http.call("POST", f"/experiments/{later['experiment_id']}/outcomes", outcome)
    assert rejected.status_code == 422


def test_a_holdout_scoped_to_a_layer_covers_only_that_layers_experiments(
    http: Http, model_id: str, tokens: Tokens
) -> None:
    layer_id = _layer(http)
    body = {"name": "h", "share": "0.05", "layer_ids": [layer_id]}
    holdout = http.call("POST", "/holdouts", body, token=tokens.admin).data
    inside = _body(model_id, layer={"layer_id": layer_id, "start": 0, "end": 100})
    assert [
        h["holdout_id"] for h in http.call("POST", "/experiments", inside).data["holdouts"]
    ] == [holdout["holdout_id"]]
    assert http.call("POST", "/experiments", _body(model_id)).data["holdouts"] == []
    missing = {"name": "h", "share": "0.05", "layer_ids": ["layer-0000000000000000"]}
    assert http.call("POST", "/holdouts", missing, token=tokens.admin).status_code == 422


def test_variant_id_holdout_is_reserved(http: Http, model_id: str) -> None:
    body = _body(model_id)
    body["variants"][1]["variant_id"] = "holdout"
    answer = http.call("POST", "/experiments", body)
    assert answer.status_code == 422 and "reserved" in answer.data["message"]


def test_a_layer_cannot_be_hidden_from_the_readers_of_an_experiment_in_it(
    http: Http, model_id: str
) -> None:
    layer_id = _layer(http, access_groups=["ml"])
    body = _body(model_id, layer={"layer_id": layer_id, "start": 0, "end": 10})
    assert http.call("POST", "/experiments", body).status_code == 201
    narrowed = http.call("PUT", f"/layers/{layer_id}/access", {"access_groups": []})
    assert (narrowed.status_code, narrowed.data["error"]) == (409, "referenced"), narrowed.data
    assert http.call("GET", f"/layers/{layer_id}").data["access_groups"] == ["ml"]
    widened = http.call("PUT", f"/layers/{layer_id}/access", {"access_groups": ["ml", "x"]})
    assert widened.status_code == 200 and widened.data["access_groups"] == ["ml", "x"]


def _post_rates(http: Http, experiment_id: str, variant: str, converted: int, n: int) -> None:
    outcomes = [
        {"variant_id": variant, "request_id": f"{variant}-{i}", "success": True,
         "latency_ms": 5, "converted": i < converted}
        for i in range(n)
    ]  # fmt: skip
    posted = http.call("POST", f"/experiments/{experiment_id}/outcomes", {"outcomes": outcomes})
    assert posted.status_code == 200, posted.data


def test_the_holdout_analysis_compares_holdout_users_with_shipped_variants_over_http(
    http: Http, model_id: str, tokens: Tokens
) -> None:
    from statsmodels.stats import proportion as sm_proportion

    holdout = http.call("POST", "/holdouts", {"name": "h", "share": "0.5"}, token=tokens.admin)
    holdout_id = holdout.data["holdout_id"]
    experiment_id = http.call("POST", "/experiments", _body(model_id)).data["experiment_id"]
    http.call("POST", f"/experiments/{experiment_id}/start")
    _post_rates(http, experiment_id, "holdout", 40, 300)
    _post_rates(http, experiment_id, "treatment", 75, 300)
    _post_rates(http, experiment_id, "control", 44, 300)
    # another group's experiment under the same holdout: left out of this reader's analysis
    other = Http(http.client, tokens.other_writer)
    hidden = other.call("POST", "/experiments", _body(_model(http, tokens.other_writer))).data
    other.call("POST", f"/experiments/{hidden['experiment_id']}/start")
    _post_rates(other, hidden["experiment_id"], "treatment", 300, 300)

    path = f"/holdouts/{holdout_id}/analysis?method=fixed"
    found = http.call("GET", path, token=tokens.reader)
    assert found.status_code == 200, found.data
    body = found.data
    assert [e["experiment_id"] for e in body["experiments"]] == [experiment_id]
    assert body["experiments"][0]["shipped"] == ["treatment"]
    assert (body["holdout_requests"], body["exposed_requests"]) == (300, 300)
    expected = sm_proportion.test_proportions_2indep(75, 300, 40, 300, method="wald")
    low, high = sm_proportion.confint_proportions_2indep(75, 300, 40, 300, method="wald")
    assert body["test"] == "z" and body["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert body["interval"] == pytest.approx([low, high], rel=1e-9)
    assert body["significant"] and body["direction"] == "better"
    assert 0.99 < body["bayesian"]["chance_to_win"] <= 1.0
    assert http.call("GET", "/holdouts/nope/analysis").status_code == 404
    assert http.call("GET", f"/holdouts/{holdout_id}/analysis?metric=1x").status_code == 400
    empty = http.call("GET", f"/holdouts/{holdout_id}/analysis?metric=revenue").data
    assert (empty["test"], empty["p_value"], empty["significant"]) == ("no_data", 1.0, False)


def test_a_concluded_experiment_releases_its_slice_over_http_and_the_layer_frees_it_later(
    http: Http, model_id: str, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNAPSE_ROUTE_CACHE_TTL", "30")
    layer_id = _layer(http)
    wanted = {"layer_id": layer_id, "start": 0, "end": 4000}
    created = http.call("POST", "/experiments", _body(model_id, layer=wanted))
    experiment_id = created.data["experiment_id"]
    http.call("POST", f"/experiments/{experiment_id}/start")
    users = [f"user-{i}" for i in range(400)]
    routed = {
        u: http.call("POST", f"/experiments/{experiment_id}/route",
                     {"request_id": f"r-{u}", "user_id": u}).data["exposure"]
        for u in users
    }  # fmt: skip
    inside = [u for u, exposure in routed.items() if exposure == "experiment"]
    assert 100 < len(inside) < 220

    running = http.call("POST", f"/experiments/{experiment_id}/release-slice")
    assert running.status_code == 409 and running.data["error"] == "invalid_state"
    outsider = http.call(
        "POST", f"/experiments/{experiment_id}/release-slice", token=tokens.other_writer
    )
    assert outsider.status_code == 404
    http.call("POST", f"/experiments/{experiment_id}/rollback", {"reason": "done"})

    released = http.call("POST", f"/experiments/{experiment_id}/release-slice")

    assert released.status_code == 200, released.data
    assert released.data["layer"] == {"layer_id": layer_id, "start": 0, "end": 0}
    after = {
        http.call("POST", f"/experiments/{experiment_id}/route",
                  {"request_id": f"s-{u}", "user_id": u}).data["exposure"]
        for u in inside
    }  # fmt: skip
    assert after == {"outside_layer"}
    layer = http.call("GET", f"/layers/{layer_id}").data
    assert layer["slices"][0]["free_at"] is not None and layer["free"] == [[4000, 10000]]
    held = http.call("POST", "/experiments", _body(model_id, layer=wanted))
    assert held.status_code == 409 and held.data["error"] == "layer_slice_taken"
    again = http.call("POST", f"/experiments/{experiment_id}/release-slice")  # idempotent
    assert again.status_code == 200
    assert http.call("GET", f"/layers/{layer_id}").data["slices"] == layer["slices"]
    stored = http.call("GET", f"/experiments/{experiment_id}").data["layer"]
    assert stored == {"layer_id": layer_id, "start": 0, "end": 0}


def test_a_draft_whose_slice_was_released_cannot_start_over_http(http: Http, model_id: str) -> None:
    layer_id = _layer(http)
    wanted = {"layer_id": layer_id, "start": 0, "end": 4000}
    experiment_id = http.call("POST", "/experiments", _body(model_id, layer=wanted)).data[
        "experiment_id"
    ]
    assert http.call("POST", f"/experiments/{experiment_id}/release-slice").status_code == 200

    started = http.call("POST", f"/experiments/{experiment_id}/start")

    assert started.status_code == 409, started.data
    assert started.data["error"] == "invalid_state" and "released" in started.data["message"]
    assert http.call("GET", f"/experiments/{experiment_id}").data["status"] == "draft"


def test_a_running_slice_grows_over_http_and_a_shrink_is_refused(
    http: Http, model_id: str, tokens: Tokens
) -> None:
    layer_id = _layer(http)
    created = http.call(
        "POST", "/experiments", _body(model_id, layer={"layer_id": layer_id, "start": 0, "end": 10})
    )
    experiment_id = created.data["experiment_id"]
    http.call("POST", f"/experiments/{experiment_id}/start")
    path = f"/experiments/{experiment_id}/resize-slice"

    grown = http.call("POST", path, {"start": 0, "end": 500})

    assert grown.status_code == 200, grown.data
    assert grown.data["layer"] == {"layer_id": layer_id, "start": 0, "end": 500}
    assert http.call("GET", f"/layers/{layer_id}").data["free"] == [[500, 10000]]
    shrink = http.call("POST", path, {"start": 0, "end": 100})
    assert shrink.status_code == 409 and shrink.data["error"] == "slice_would_move_users"
    assert http.call("POST", path, {"start": 5, "end": 2}).status_code == 422
    assert http.call("POST", path, {"start": 0, "end": 10001}).status_code == 400
    assert (
        http.call("POST", path, {"start": 0, "end": 900}, token=tokens.other_writer).status_code
        == 404
    )
    assert http.call("GET", f"/experiments/{experiment_id}").data["layer"]["end"] == 500
