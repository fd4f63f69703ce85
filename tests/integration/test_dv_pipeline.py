"""End to end over HTTP: a transformation chain, its lineage, replay, reproducibility and
reconstruction for an experiment and at a point in time."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.conftest import Http, Tokens
from tests.security.helpers import experiment

USERS = (
    "id,age,country,income\n"
    "1,34,de,52000\n2,17,fr,0\n3,45,de,61000\n4,29,us,48000\n5,52,fr,75000\n"
    "6,15,us,0\n7,38,us,58000\n8,41,de,66000\n9,23,fr,31000\n10,60,us,90000\n"
)
COUNTRIES = "country,region\nde,eu\nfr,eu\nus,na\n"


def dataset(http: Http, name: str, compatibility: str = "backward") -> str:
    body = {"name": name, "access_groups": ["ml"], "compatibility": compatibility}
    response = http.call("POST", "/datasets", body)
    assert response.status_code == 201, response.data
    return response.data["dataset_id"]


def version(http: Http, dataset_id: str, data: str) -> dict[str, Any]:
    response = http.call("POST", f"/datasets/{dataset_id}/versions", {"data": data})
    assert response.status_code == 201, response.data
    return response.data


def transform(http: Http, dataset_id: str, spec: dict, sources: list[str], **extra: Any) -> Any:
    body = {"transformation": spec, "source_version_ids": sources, **extra}
    return http.call("POST", f"/datasets/{dataset_id}/transformations", body)


def build_chain(http: Http) -> dict[str, Any]:
    raw_ds, countries_ds = dataset(http, "users-raw"), dataset(http, "countries")
    features_ds = dataset(http, "features", "none")  # each step changes the columns
    train_ds, test_ds = dataset(http, "train"), dataset(http, "test")
    raw = version(http, raw_ds, USERS)
    countries = version(http, countries_ds, COUNTRIES)
    adults = transform(
        http,
        features_ds,
        {"type": "filter", "predicates": [{"column": "age", "op": "ge", "value": 18}]},
        [raw["version_id"]],
    )
    assert adults.status_code == 201, adults.data
    adults_v = adults.data["outputs"]["output"]
    joined = transform(
        http,
        features_ds,
        {"type": "join", "on": ["country"], "how": "inner"},
        [adults_v["version_id"], countries["version_id"]],
    ).data["outputs"]["output"]
    scaled = transform(
        http,
        features_ds,
        {"type": "normalization", "columns": ["income"], "method": "zscore"},
        [joined["version_id"]],
    )
    assert scaled.status_code == 201, scaled.data
    fitted = scaled.data["fitted_params"]["columns"]["income"]
    split = transform(
        http,
        train_ds,
        {"type": "split", "test_fraction": 0.25, "seed": 7},
        [scaled.data["outputs"]["output"]["version_id"]],
        output_dataset_ids={"test": test_ds},
    )
    assert split.status_code == 201, split.data
    return {
        "raw": raw,
        "countries": countries,
        "adults": adults_v,
        "joined": joined,
        "scaled": scaled.data["outputs"]["output"],
        "fitted": fitted,
        "train": split.data["outputs"]["train"],
        "test": split.data["outputs"]["test"],
        "train_ds": train_ds,
        "test_ds": test_ds,
        "features_ds": features_ds,
    }


def test_chain_records_outputs_fitted_params_and_lineage(http: Http) -> None:
    chain = build_chain(http)
    assert chain["adults"]["row_count"] == 8
    assert chain["joined"]["schema"]["columns"]["region"] == "string"
    assert chain["fitted"]["mean"] == 60125.0
    assert chain["train"]["row_count"] + chain["test"]["row_count"] == 8
    assert chain["train"]["tags"] == {"split": "train"}
    assert chain["test"]["dataset_id"] == chain["test_ds"]
    lineage = http.call("GET", f"/lineage/{chain['train']['version_id']}").data["upstream"]
    ids = {node["version_id"] for node in lineage["nodes"]}
    assert {chain["raw"]["version_id"], chain["countries"]["version_id"]} <= ids
    types = {edge["transformation_type"] for edge in lineage["edges"]}
    assert types == {"filter", "join", "normalization", "split"}
    shallow = http.call("GET", f"/lineage/{chain['train']['version_id']}?max_depth=1").data
    assert [n["version_id"] for n in shallow["upstream"]["nodes"]] == [
        chain["train"]["version_id"],
        chain["scaled"]["version_id"],
    ]
    assert shallow["upstream"]["truncated"] is True
    down = http.call(
        "GET", f"/lineage/{chain['raw']['version_id']}?direction=downstream&max_depth=10"
    ).data["downstream"]
    assert chain["test"]["version_id"] in {node["version_id"] for node in down["nodes"]}


def test_replay_on_original_data_reproduces_the_same_hash(http: Http) -> None:
    chain = build_chain(http)
    for target in ("train", "test"):
        replay = http.call(
            "POST",
            f"/versions/{chain[target]['version_id']}/replay",
            {"source_version_id": chain["raw"]["version_id"], "data": USERS},
        )
        assert replay.status_code == 200, replay.data
        assert replay.data["matches_target"] is True
        assert replay.data["sha256"] == chain[target]["sha256"]
        assert len(replay.data["steps"]) == 4


def test_replay_on_new_data_yields_new_content(http: Http) -> None:
    chain = build_chain(http)
    newer = USERS + "11,33,de,40000\n12,27,us,45000\n"
    replay = http.call(
        "POST",
        f"/versions/{chain['train']['version_id']}/replay",
        {"source_version_id": chain["raw"]["version_id"], "data": newer},
    ).data
    assert replay["matches_target"] is False
    assert replay["sha256"] != chain["train"]["sha256"]


def test_replay_of_unrelated_versions_is_400(http: Http) -> None:
    chain = build_chain(http)
    response = http.call(
        "POST",
        f"/versions/{chain['raw']['version_id']}/replay",
        {"source_version_id": chain["train"]["version_id"], "data": USERS},
    )
    assert response.status_code == 400


def test_reproducibility_reports_external_steps_and_missing_objects(http: Http) -> None:
    chain = build_chain(http)
    report = http.call("GET", f"/versions/{chain['train']['version_id']}/reproducibility").data
    assert report["reproducible"] is True
    assert report["chain"][-1] == chain["train"]["version_id"]
    assert report["chain"].index(chain["raw"]["version_id"]) < report["chain"].index(
        chain["adults"]["version_id"]
    )
    augmented = transform(
        http,
        chain["features_ds"],
        {"type": "augmentation", "code_hash": "sha256:abcdef0123456789"},
        [chain["scaled"]["version_id"]],
        data="id,age,country,income,region\n1,34,de,0.1,eu\n",
    )
    assert augmented.status_code == 201, augmented.data
    assert augmented.data["replayable"] is False
    out = augmented.data["outputs"]["output"]
    report = http.call("GET", f"/versions/{out['version_id']}/reproducibility").data
    assert report["reproducible"] is False
    assert (
        report["non_replayable_steps"][0]["transformation_id"]
        == augmented.data["transformation_id"]
    )
    replay = http.call(
        "POST",
        f"/versions/{out['version_id']}/replay",
        {"source_version_id": chain["raw"]["version_id"], "data": USERS},
    )
    assert replay.status_code == 422

    from chalicelib.dataversion.service import get_versioning_engine

    engine = get_versioning_engine()
    engine.store.delete(engine.get_version_by_id(chain["raw"]["version_id"]).storage_key)
    report = http.call("GET", f"/versions/{chain['train']['version_id']}/reproducibility").data
    assert report["reproducible"] is False
    assert [m["version_id"] for m in report["missing_objects"]] == [chain["raw"]["version_id"]]


def test_reconstruct_for_an_experiment_and_at_a_time(http: Http, tokens: Tokens) -> None:
    chain = build_chain(http)
    train_ds = chain["train_ds"]
    exp = experiment(http)
    used = http.call(
        "POST",
        f"/datasets/{train_ds}/versions/{chain['train']['version_id']}/usages",
        {"experiment_id": exp},
    )
    assert used.status_code == 201, used.data
    version(http, train_ds, "id,age,country,income,region\n99,30,de,0.5,eu\n")
    found = http.call("GET", f"/datasets/{train_ds}/reconstruct?experiment_id={exp}").data
    assert [r["version"]["version_id"] for r in found["reconstructions"]] == [
        chain["train"]["version_id"]
    ]
    assert found["reconstructions"][0]["usage"]["experiment_id"] == exp
    at = quote(chain["train"]["created_at"])
    then = http.call("GET", f"/datasets/{train_ds}/reconstruct?as_of={at}").data
    assert then["reconstructions"][0]["version"]["version_number"] == 1
    usages = http.call("GET", f"/datasets/{train_ds}/usages?experiment_id={exp}").data
    assert len(usages["usages"]) == 1
    missing = http.call("GET", f"/datasets/{train_ds}/reconstruct?experiment_id=exp-0")
    assert missing.status_code == 404 and missing.data["error"] == "experiment_not_found"
    unused = experiment(http)
    never = http.call("GET", f"/datasets/{train_ds}/reconstruct?experiment_id={unused}")
    assert never.status_code == 404 and never.data["error"] == "usage_not_found"
    now = http.call("GET", f"/datasets/{train_ds}/reconstruct").data  # as_of defaults to now
    assert now["reconstructions"][0]["version"]["version_number"] == 2  # the row added above
    both = http.call("GET", f"/datasets/{train_ds}/reconstruct?as_of={at}&experiment_id={exp}")
    assert both.status_code == 400


def test_invalid_transformation_spec_is_400_and_bad_column_422(http: Http) -> None:
    ds = dataset(http, "x")
    v = version(http, ds, USERS)
    bad = transform(http, ds, {"type": "filter", "predicates": []}, [v["version_id"]])
    assert bad.status_code == 400
    unknown = transform(http, ds, {"type": "explode"}, [v["version_id"]])
    assert unknown.status_code == 400
    column = transform(
        http,
        ds,
        {"type": "filter", "predicates": [{"column": "nope", "op": "eq", "value": 1}]},
        [v["version_id"]],
    )
    assert column.status_code == 422
    assert "nope" in column.data["message"]


def test_replaying_a_version_onto_itself_is_400_not_a_crash(http: Http) -> None:
    ds = dataset(http, "self-replay")
    v = version(http, ds, USERS)
    body = {"source_version_id": v["version_id"], "data": USERS}
    response = http.call("POST", f"/versions/{v['version_id']}/replay", body)
    assert response.status_code == 400, response.data
    assert "does not derive from" in response.data["message"]
