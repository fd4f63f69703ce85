"""SynapseNet's Python client: every API route as a method, local assignment, data push/pull.

::

    from synapse_client import Client

    api = Client("http://127.0.0.1:8000", token="snk_...")
    experiment = api.local_experiment("exp-...")
    variant_id, model_version = experiment.variant("user-42")   # no HTTP call per request

It talks to the public HTTP API only, so it works the same against ``make run`` and a
deployment, and it does not import the service's code (``chalicelib``).
"""

from __future__ import annotations

from synapse_client.client import Client
from synapse_client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    IntegrityError,
    MissingCapability,
    NotFound,
    NotRoutable,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    SynapseClientError,
    TransportError,
    Unauthorized,
    Unprocessable,
)
from synapse_client.local import Assignment, LocalExperiment, OutcomeBuffer

__version__ = "1.0.0"

__all__ = [
    "ApiError",
    "Assignment",
    "BadRequest",
    "Client",
    "Conflict",
    "Forbidden",
    "IntegrityError",
    "LocalExperiment",
    "MissingCapability",
    "NotFound",
    "NotRoutable",
    "OutcomeBuffer",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "ServiceUnavailable",
    "SynapseClientError",
    "TransportError",
    "Unauthorized",
    "Unprocessable",
]
