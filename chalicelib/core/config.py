"""Configuration read from environment variables.

Every setting has an environment variable; explicit constructor arguments override it. The same
names are set by ``.chalice/config.json`` in AWS and by the local stack on a laptop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_PREFIX = "synapse"


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value else default


def table_name(env_var: str, suffix: str) -> str:
    """Returns the DynamoDB table name for ``env_var``, or ``<prefix>-<suffix>`` when unset.

    Args:
        env_var: Environment variable holding the full table name (e.g. ``EXPERIMENTS_TABLE``).
        suffix: Suffix used with ``SYNAPSE_TABLE_PREFIX`` when the variable is unset.
    """
    prefix = _env("SYNAPSE_TABLE_PREFIX", DEFAULT_PREFIX)
    return _env(env_var, f"{prefix}-{suffix}")


def region() -> str:
    """The AWS region used by every client."""
    return _env("AWS_REGION", _env("AWS_DEFAULT_REGION", "us-east-1"))


def endpoint_url() -> str | None:
    """An endpoint override (the local stack's moto server), or ``None`` for real AWS."""
    return os.environ.get("AWS_ENDPOINT_URL") or None


def max_body_bytes() -> int:
    """``SYNAPSE_MAX_BODY_BYTES``: the largest request body (read alone on every request)."""
    return int(_env("SYNAPSE_MAX_BODY_BYTES", str(6 * 1024 * 1024)))


def max_json_depth() -> int:
    """``SYNAPSE_MAX_JSON_DEPTH``: the deepest JSON nesting accepted (read alone per request)."""
    return int(_env("SYNAPSE_MAX_JSON_DEPTH", "64"))


def _half_memory() -> int:
    """Half the Lambda function's configured memory (1 GiB outside Lambda)."""
    megabytes = _env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
    return int(megabytes) * 1024 * 1024 // 2


@dataclass(frozen=True)
class Settings:
    """Resolved runtime settings.

    Attributes:
        stage: Deployment stage (``local``, ``dev``, ``prod``).
        data_bucket: Bucket holding dataset objects (``incoming/``, ``cas/``, ``rejected/``).
        models_bucket: Bucket holding model artifacts.
        event_bus_name: EventBridge bus for lifecycle events.
        event_source: ``Source`` field of published events.
        max_body_bytes: Largest accepted request body; larger bodies get 413.
        max_model_bytes: Largest size a model artifact may declare once expanded (its members'
            uncompressed sizes and its arrays); larger ones are refused before decompression.
        model_memory_bytes: Memory the loaded models of one instance may take together (cached
            models and loads under way); default half the Lambda function's memory, else 1 GiB.
        presign_seconds: Lifetime of presigned URLs.
        route_cache_ttl_seconds: How long an experiment config is cached by the router.
        explanation_jobs_queue: SQS queue name for asynchronous explanation jobs.
        experiment_monitor_queue: SQS queue the scheduled experiment monitor fans out to.
        explanation_backend: ``inprocess`` or ``lambda`` (see the deployment docs).
        explanation_function: Name of the explanation Lambda when the backend is ``lambda``.
        max_json_depth: Deepest nesting of arrays and objects accepted in a JSON request body
            or a JSON-lines record; deeper is refused (400 for a body, 422 for data).
    """

    stage: str = field(default_factory=lambda: _env("SYNAPSE_STAGE", "dev"))
    data_bucket: str = field(default_factory=lambda: _env("DATA_BUCKET", f"{DEFAULT_PREFIX}-data"))
    models_bucket: str = field(
        default_factory=lambda: _env("MODELS_BUCKET", f"{DEFAULT_PREFIX}-models")
    )
    event_bus_name: str = field(
        default_factory=lambda: _env("EVENT_BUS_NAME", f"{DEFAULT_PREFIX}-events")
    )
    event_source: str = field(default_factory=lambda: _env("EVENT_SOURCE", "synapsenet"))
    max_body_bytes: int = field(default_factory=max_body_bytes)
    max_model_bytes: int = field(
        default_factory=lambda: int(_env("SYNAPSE_MAX_MODEL_BYTES", str(256 * 1024 * 1024)))
    )
    model_memory_bytes: int = field(
        default_factory=lambda: int(_env("SYNAPSE_MODEL_MEMORY_BYTES", str(_half_memory())))
    )
    presign_seconds: int = field(
        default_factory=lambda: int(_env("SYNAPSE_PRESIGN_SECONDS", "900"))
    )
    route_cache_ttl_seconds: float = field(
        default_factory=lambda: float(_env("SYNAPSE_ROUTE_CACHE_TTL", "5"))
    )
    explanation_jobs_queue: str = field(
        default_factory=lambda: _env("EXPLANATION_JOBS_QUEUE", f"{DEFAULT_PREFIX}-explanation-jobs")
    )
    experiment_monitor_queue: str = field(
        default_factory=lambda: _env(
            "EXPERIMENT_MONITOR_QUEUE", f"{DEFAULT_PREFIX}-experiment-monitor"
        )
    )
    explanation_backend: str = field(
        default_factory=lambda: _env("SYNAPSE_EXPLANATION_BACKEND", "inprocess")
    )
    explanation_function: str = field(
        default_factory=lambda: _env("EXPLANATION_FUNCTION", f"{DEFAULT_PREFIX}-explainer")
    )
    max_json_depth: int = field(default_factory=max_json_depth)


def get_settings() -> Settings:
    """Reads the settings from the environment (cheap; call where needed)."""
    return Settings()
