"""The Python client against the app: an in-process transport (Chalice's test client behind
``requests``) and builders of models and arms through the client."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import requests
from requests.adapters import BaseAdapter

from tests.helpers.models import skops_artifact


class InProcessAdapter(BaseAdapter):
    """A ``requests`` adapter that answers from Chalice's test client (the Lambda handler)."""

    def __init__(self, chalice_client: Any) -> None:
        super().__init__()
        self.chalice = chalice_client

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        from urllib.parse import urlsplit

        parts = urlsplit(request.url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        answer = self.chalice.http.request(
            request.method, path, headers=dict(request.headers), body=body
        )
        response = requests.Response()
        response.status_code = answer.status_code
        response.headers = requests.structures.CaseInsensitiveDict(answer.headers)
        response._content = answer.body or b""
        response.url = request.url
        response.request = request
        return response

    def close(self) -> None:
        return None


def in_process_client(chalice_client: Any, token: str) -> Any:
    """A ``synapse_client.Client`` whose requests go to the app in this process."""
    from synapse_client import Client

    client = Client("http://in-process", token)
    client.transport.session.mount("http://in-process", InProcessAdapter(chalice_client))
    return client


def model_with_versions(api: Any, count: int = 2) -> str:
    """A model with ``count`` registered versions, created through the client."""
    model_id = api.create_model(f"ranker-{uuid.uuid4().hex[:8]}")["model_id"]
    for seed in range(count):
        api.register_version(
            model_id,
            format="skops",
            task="classification",
            feature_names=["a", "b", "c"],
            artifact_base64=skops_artifact(seed),
            background_sample=np.random.default_rng(seed).normal(size=(20, 3)).round(3).tolist(),
        )
    return model_id


def two_arms(model_id: str, control: str = "0.5", treatment: str = "0.5") -> list[dict[str, Any]]:
    """A control on version 1 and a treatment on version 2."""
    return [
        {"variant_id": "control", "model_id": model_id, "model_version": 1,
         "traffic_weight": control, "is_control": True},
        {"variant_id": "treatment", "model_id": model_id, "model_version": 2,
         "traffic_weight": treatment},
    ]  # fmt: skip
