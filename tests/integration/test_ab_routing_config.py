"""``GET /experiments/{id}/routing-config``: what local assignment runs on, cacheable by ETag."""

from __future__ import annotations

import pytest

from chalicelib.abtesting.assignment import Assigner
from tests.conftest import Http, Tokens
from tests.helpers.client import in_process_client, model_with_versions, two_arms


def test_routing_config_is_readable_by_a_reader_and_carries_an_etag_and_max_age(
    http: Http, client: object, tokens: Tokens
) -> None:
    api = in_process_client(client, tokens.writer)
    model_id = model_with_versions(api)
    experiment_id = api.create_experiment("cfg", two_arms(model_id, "0.75", "0.25"))[
        "experiment_id"
    ]
    api.start_experiment(experiment_id)

    answer = http.call("GET", f"/experiments/{experiment_id}/routing-config", token=tokens.reader)

    assert answer.status_code == 200, answer.data
    assert answer.headers["ETag"].startswith('"') and len(answer.headers["ETag"]) == 34
    assert answer.headers["Cache-Control"] == "private, max-age=5"
    config = answer.data
    assert [(v["variant_id"], v["weight"]) for v in config["variants"]] == [
        ("treatment", "0.25"),
        ("control", "0.75"),
    ]
    assert (config["hash"], config["salt"], config["fixed"], config["blocked"]) == (
        "blake2b-64", experiment_id, None, None,
    )  # fmt: skip
    assert config["ttl_seconds"] == 5


def test_routing_config_needs_a_token_and_an_existing_experiment(http: Http) -> None:
    assert http.call("GET", "/experiments/exp-missing/routing-config").status_code == 404
    assert http.call("GET", "/experiments/x/routing-config", token="").status_code == 401


def test_openapi_documents_the_304_without_a_body(http: Http) -> None:
    document = http.call("GET", "/openapi.json").data
    responses = document["paths"]["/experiments/{experiment_id}/routing-config"]["get"]["responses"]
    assert responses["304"] == {"description": "unchanged since the ETag sent in If-None-Match"}


def test_an_assigner_refuses_a_config_with_another_hash() -> None:
    config = {"salt": "s", "variants": [{"variant_id": "a", "model_version": 1, "weight": "1"}]}
    assert Assigner(config).route("r-1") == ("a", 1)
    with pytest.raises(ValueError, match="unknown hash"):
        Assigner({**config, "hash": "fnv32"})
