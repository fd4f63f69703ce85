"""A cached explanation is no way around the access rule: a cache hit checks the caller's right
to read the model on every request, with the model's access groups as they are now."""

from __future__ import annotations

from tests.conftest import Http, Tokens
from tests.security.helpers import model, model_version

ROW = {"a": 0.2, "b": -0.1, "c": 0.4}


def test_a_cached_explanation_is_refused_as_soon_as_the_callers_group_loses_the_model(
    http: Http, tokens: Tokens
) -> None:
    from chalicelib.auth.service import get_auth_service

    member = get_auth_service().create_key("member", ["reader"], ["ml"]).token
    model_id = model(http, groups=["ml"])
    model_version(http, model_id, background_sample=[[0.1, 0.2, 0.3], [-0.5, 0.4, 1.0]])
    body = {"model_id": model_id, "model_version": 1, "input_data": ROW}
    first = http.call("POST", "/explanations", body, token=member)
    assert first.status_code == 200, first.data
    hit = http.call("POST", "/explanations", body, token=member)
    assert hit.status_code == 200 and hit.data["cached"] is True

    moved = http.call("PUT", f"/models/{model_id}/access", {"access_groups": ["risk"]})
    assert moved.status_code == 200, moved.data

    refused = http.call("POST", "/explanations", body, token=member)
    assert refused.status_code == 404, refused.data
    assert refused.data["message"] == f"model {model_id} does not exist"  # as if unknown
    assert http.call("POST", "/explanations", body, token=tokens.other_writer).status_code == 404
    owner = http.call("POST", "/explanations", body)  # the owner still reads the cached answer
    assert owner.status_code == 200 and owner.data["cached"] is True
