"""``Client``: a typed method for every route of the SynapseNet API, over HTTP only.

::

    from synapse_client import Client

    api = Client("http://127.0.0.1:8000", token="snk_...")   # or Client.from_config()
    experiment = api.local_experiment("exp-...")              # local assignment
    variant_id, model_version = experiment.variant("user-42")

Every method returns the API's decoded JSON; errors raise :mod:`synapse_client.errors`
exceptions carrying the API's error code. The same code works against ``make run`` and a
deployment: it only uses the public routes (``GET /openapi.json`` lists them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from synapse_client.errors import ApiError, MissingCapability
from synapse_client.operations import Operation, operation
from synapse_client.transport import Reply, Transport

Json = dict[str, Any]


class Client:
    """The SynapseNet API.

    Args:
        url: Base URL (``http://127.0.0.1:8000``, or a deployment's API Gateway URL).
        token: An API token (``snk_...``); public routes work without.
        timeout: Seconds per request.
        retries: Extra attempts for 429/503 answers and connection failures of safe requests.
        backoff: First retry delay in seconds (doubled per attempt, with jitter).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.25,
    ) -> None:
        self.transport = Transport(url, token, timeout=timeout, retries=retries, backoff=backoff)
        self._routes: set[tuple[str, str]] | None = None

    @classmethod
    def from_config(cls, path: str | None = None, **overrides: Any) -> Client:
        """A client from ``synapse login``'s config file, overridden by ``SYNAPSE_URL`` and
        ``SYNAPSE_TOKEN`` (see :mod:`synapse_client.config`)."""
        from synapse_client.config import load_settings

        settings = load_settings(path)
        return cls(settings.url, settings.token, **overrides)

    @property
    def url(self) -> str:
        """The API's base URL."""
        return self.transport.url

    def _call(self, spec: Operation, path: str, fields: dict[str, Any]) -> Any:
        body = fields if spec.send == "body" else None
        if spec.send == "body" and not fields and spec.method in ("POST", "PUT"):
            body = {}
        params = fields if spec.send == "query" else None
        return self.request(spec.method, path, body, params, idempotent=spec.idempotent).data

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
        ok: tuple[int, ...] = (),
    ) -> Reply:
        """One request to any path (retries and errors as for every method)."""
        return self.transport.request(method, path, body, params, headers, idempotent, ok)

    # ------------------------------------------------------------------ capabilities

    def routes(self, refresh: bool = False) -> set[tuple[str, str]]:
        """``(METHOD, path template)`` of every route the server declares (cached)."""
        if self._routes is None or refresh:
            document = self.openapi()
            self._routes = {
                (method.upper(), path)
                for path, item in document.get("paths", {}).items()
                for method in item
                if method.lower() in ("get", "post", "put", "delete", "patch")
            }
        return self._routes

    def require(self, method: str, path: str, capability: str) -> None:
        """Raises :class:`MissingCapability` unless the server declares the route."""
        if (method.upper(), path) not in self.routes():
            raise MissingCapability(f"{method.upper()} {path}", capability)

    # ------------------------------------------------------------------ system and auth

    @operation("GET", "/health")
    def health(self) -> Json:
        """Liveness (public)."""

    @operation("GET", "/openapi.json")
    def openapi(self) -> Json:
        """The OpenAPI 3.1 document of every route (public)."""

    @operation("POST", "/auth/keys")
    def create_key(
        self,
        principal: str,
        roles: Sequence[str],
        groups: Sequence[str] | None = None,
        description: str | None = None,
    ) -> Json:
        """Creates an API key (admin); the answer holds the token, shown once."""

    @operation("GET", "/auth/keys")
    def list_keys(self) -> Json:
        """Every API key (admin), without tokens."""

    @operation("DELETE", "/auth/keys/{key_id}")
    def revoke_key(self, key_id: str) -> Json:
        """Revokes a key (admin)."""

    @operation("GET", "/auth/whoami")
    def whoami(self) -> Json:
        """The caller's principal, roles and groups."""

    # ------------------------------------------------------------------ models

    @operation("POST", "/models")
    def create_model(
        self,
        name: str,
        description: str | None = None,
        access_groups: Sequence[str] | None = None,
    ) -> Json:
        """Creates a model (writer); ``access_groups`` default to the caller's groups."""

    @operation("PUT", "/models/{model_id}/access")
    def set_model_access(self, model_id: str, access_groups: Sequence[str]) -> Json:
        """Replaces the groups that may see a model (its owner and admins always may)."""

    @operation("GET", "/models")
    def list_models(self) -> Json:
        """Models."""

    @operation("GET", "/models/{model_id}")
    def get_model(self, model_id: str) -> Json:
        """A model."""

    @operation("POST", "/models/{model_id}/uploads", send=None)
    def create_model_upload(self, model_id: str) -> Json:
        """A presigned PUT for an artifact over the request-body limit."""

    @operation("POST", "/models/{model_id}/versions")
    def register_version(
        self,
        model_id: str,
        task: str,
        format: str | None = None,  # noqa: A002 - the API's field name
        feature_names: Sequence[str] | None = None,
        artifact_base64: str | None = None,
        artifact_upload_key: str | None = None,
        class_names: Sequence[str] | None = None,
        background_sample: Sequence[Sequence[Any]] | None = None,
        background_dataset_version_id: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Json:
        """Registers a model version (a skops artifact, inline or uploaded)."""

    @operation("GET", "/models/{model_id}/versions")
    def list_model_versions(self, model_id: str) -> Json:
        """A model's versions."""

    @operation("GET", "/models/{model_id}/versions/{version}")
    def get_model_version(self, model_id: str, version: int) -> Json:
        """One model version."""

    @operation("POST", "/models/{model_id}/versions/{version}/stage")
    def set_stage(self, model_id: str, version: int, stage: str) -> Json:
        """Moves a version to ``staging``, ``production`` or ``archived``."""

    @operation("DELETE", "/models/{model_id}/explanations")
    def invalidate_explanations(self, model_id: str, version: int | None = None) -> Json:
        """Drops cached explanations of a model (or one version)."""

    # ------------------------------------------------------------------ experiments

    @operation("POST", "/experiments")
    def create_experiment(
        self,
        name: str,
        variants: Sequence[dict[str, Any]],
        description: str | None = None,
        allocation_strategy: str | None = None,
        minimum_sample_size: int | None = None,
        confidence_level: float | None = None,
        primary_metric: str | None = None,
        guardrail_metrics: Sequence[str] | None = None,
        ramp: dict[str, Any] | None = None,
        bandit: dict[str, Any] | None = None,
        access_groups: Sequence[str] | None = None,
        **options: Any,
    ) -> Json:
        """Creates a draft experiment (weights are decimal strings summing to exactly 1);
        ``access_groups`` default to the caller's groups."""

    @operation("PUT", "/experiments/{experiment_id}/access")
    def set_experiment_access(self, experiment_id: str, access_groups: Sequence[str]) -> Json:
        """Replaces the groups that may see an experiment (its owner and admins always may)."""

    @operation("GET", "/experiments")
    def list_experiments(self, status: str | None = None) -> Json:
        """Experiments, newest first (optionally one status)."""

    @operation("GET", "/experiments/{experiment_id}")
    def get_experiment(self, experiment_id: str) -> Json:
        """One experiment."""

    @operation("POST", "/experiments/{experiment_id}/start", send=None)
    def start_experiment(self, experiment_id: str) -> Json:
        """draft → running."""

    @operation("POST", "/experiments/{experiment_id}/pause", send=None)
    def pause_experiment(self, experiment_id: str) -> Json:
        """running → paused (everyone to the control)."""

    @operation("POST", "/experiments/{experiment_id}/resume", send=None)
    def resume_experiment(self, experiment_id: str) -> Json:
        """paused → running."""

    @operation("POST", "/experiments/{experiment_id}/conclude")
    def conclude_experiment(
        self, experiment_id: str, winning_variant_id: str | None = None, **options: Any
    ) -> Json:
        """Concludes (the winner gets all traffic and is promoted); ``None`` lets the analysis
        pick."""

    @operation("POST", "/experiments/{experiment_id}/resize-slice")
    def resize_slice(self, experiment_id: str, start: int, end: int) -> Json:
        """Moves a draft's layer slice, or grows a running or paused experiment's slice."""

    @operation("POST", "/experiments/{experiment_id}/release-slice", send=None)
    def release_slice(self, experiment_id: str) -> Json:
        """Gives up a concluded, rolled-back or draft experiment's layer slice."""

    @operation("POST", "/experiments/{experiment_id}/rollback")
    def rollback_experiment(self, experiment_id: str, reason: str) -> Json:
        """Rolls back now (everyone to the control), storing the reason."""

    @operation("POST", "/experiments/{experiment_id}/route")
    def route(
        self,
        experiment_id: str,
        request_id: str,
        user_id: str | None = None,
        sticky: bool = True,
        attributes: dict[str, Any] | None = None,
    ) -> Json:
        """Assigns one request over HTTP (see :meth:`local_experiment` for local assignment);
        ``attributes`` are what the experiment's targeting tests. ``exposure`` says whether
        the request is in the experiment (``variant_id`` is ``None`` when it is not counted)."""

    # ------------------------------------------------------------------ layers and holdouts

    @operation("POST", "/layers")
    def create_layer(
        self,
        name: str,
        description: str | None = None,
        access_groups: Sequence[str] | None = None,
    ) -> Json:
        """Creates an empty layer (10,000 buckets) whose experiments never share a user."""

    @operation("GET", "/layers")
    def list_layers(self) -> Json:
        """The layers the caller may read, newest first."""

    @operation("GET", "/layers/{layer_id}")
    def get_layer(self, layer_id: str) -> Json:
        """One layer: its taken slices and free bucket ranges."""

    @operation("PUT", "/layers/{layer_id}/access")
    def set_layer_access(self, layer_id: str, access_groups: Sequence[str]) -> Json:
        """Replaces the groups that may see a layer (and place experiments in it)."""

    @operation("DELETE", "/layers/{layer_id}")
    def delete_layer(self, layer_id: str) -> Json:
        """Deletes an empty layer (409 while an experiment takes a slice of it)."""

    @operation("POST", "/holdouts")
    def create_holdout(self, name: str, share: str, layer_ids: Sequence[str] | None = None) -> Json:
        """Creates a global holdout (admin): ``share`` (a decimal string, at most "0.5") of
        users see only the controls of experiments created from now on (``layer_ids``: only
        those in these layers)."""

    @operation("GET", "/holdouts")
    def list_holdouts(self) -> Json:
        """Every holdout."""

    @operation("GET", "/holdouts/{holdout_id}")
    def get_holdout(self, holdout_id: str) -> Json:
        """One holdout."""

    @operation("GET", "/holdouts/{holdout_id}/analysis")
    def holdout_analysis(
        self,
        holdout_id: str,
        metric: str | None = None,
        method: str | None = None,
        confidence_level: float | None = None,
    ) -> Json:
        """The cumulative effect of shipped models: the holdout's users against the users of
        the shipped variants of the experiments it covers that the caller may read
        (``metric``: a rate, ``latency_ms`` or a custom metric; ``method``: ``sequential``, the
        default, or ``fixed``)."""

    @operation("DELETE", "/holdouts/{holdout_id}")
    def delete_holdout(self, holdout_id: str) -> Json:
        """Deletes a holdout (admin); experiments that carry it keep it."""

    @operation("GET", "/experiments/{experiment_id}/routing-config", register_only=True)
    def routing_config(
        self, experiment_id: str, etag: str | None = None
    ) -> tuple[Json | None, str]:
        """The routing config for local assignment and its ETag.

        Args:
            experiment_id: The experiment.
            etag: The ETag of the config held; an unchanged config then answers ``None``.

        Returns:
            ``(config or None when unchanged, etag)``.
        """
        headers = {"If-None-Match": etag} if etag else None
        reply = self.request(
            "GET", f"/experiments/{_q(experiment_id)}/routing-config", headers=headers, ok=(304,)
        )
        found = reply.headers.get("ETag") or etag or ""
        return (None if reply.status == 304 else reply.data), found

    @operation("POST", "/experiments/{experiment_id}/outcomes", register_only=True)
    def record_outcomes(self, experiment_id: str, outcomes: Sequence[dict[str, Any]]) -> Json:
        """Records outcomes, at most 1,000 per call (idempotent by each ``request_id``).

        Each outcome: ``variant_id``, ``request_id``, ``success``, ``latency_ms`` and optionally
        ``converted``, ``custom_metrics`` and ``phase`` (the allocation phase the request was
        assigned in, so it counts there even when posted after a ramp step). Retried on
        connection failures too: the request ids make a repeated batch count once.
        """
        path = f"/experiments/{_q(experiment_id)}/outcomes"
        return self.request("POST", path, {"outcomes": list(outcomes)}, idempotent=True).data

    @operation("GET", "/experiments/{experiment_id}/metrics")
    def metrics(self, experiment_id: str) -> Json:
        """Aggregated outcomes per variant."""

    @operation("GET", "/experiments/{experiment_id}/analysis")
    def analysis(self, experiment_id: str, method: str | None = None) -> Json:
        """Decisions per treatment, guardrails, SRM per phase and a recommendation with its
        reason (``method``: ``sequential``, the default, or ``fixed``)."""

    @operation("GET", "/experiments/{experiment_id}/segments")
    def segments(self, experiment_id: str, method: str | None = None) -> Json:
        """The primary metric per segment of each declared dimension, with the segment tests
        corrected across segments, the top and the flagged ones (``method`` as for
        :meth:`analysis`)."""

    @operation("PUT", "/experiments/{experiment_id}/rollback-policy")
    def set_rollback_policy(
        self,
        experiment_id: str,
        error_rate_threshold: float | None = None,
        latency_degradation_threshold: float | None = None,
        min_requests_before_rollback: int | None = None,
        latency_percentile: str | None = None,
        enabled: bool | None = None,
        **options: Any,
    ) -> Json:
        """Stores the automatic-rollback policy."""

    @operation("GET", "/experiments/{experiment_id}/rollback-policy")
    def get_rollback_policy(self, experiment_id: str) -> Json:
        """The rollback policy in force."""

    @operation("GET", "/experiments/{experiment_id}/checks")
    def latest_check(self, experiment_id: str) -> Json:
        """The monitor's latest canary check (pass / fail / inconclusive, tests and bounds)."""

    @operation("PUT", "/experiments/{experiment_id}/explanation-guardrails")
    def set_explanation_guardrails(
        self,
        experiment_id: str,
        explanation_guardrails: list[dict[str, Any]],
        dataset_version_id: str | None = None,
        action: str | None = None,
        sample_size: int | None = None,
        seed: int | None = None,
        source: str | None = None,
        reevaluate_minutes: int | None = None,
    ) -> Json:
        """Declares explanation guardrails (``ndcg`` / ``feature_not_in_top_k``) evaluated by
        the monitor on a sample of a dataset version (or, with ``source="posted_inputs"``, of
        the inputs posted with :meth:`post_explanation_inputs`); ``action``: ``hold`` or
        ``rollback``."""

    @operation("POST", "/experiments/{experiment_id}/explanation-inputs")
    def post_explanation_inputs(self, experiment_id: str, inputs: list[dict[str, Any]]) -> Json:
        """Offers served inputs (``{"request_id", "input_data"}``) to the experiment's uniform
        sample for ``posted_inputs`` explanation guardrails."""

    @operation("GET", "/experiments/{experiment_id}/explanation-guardrails")
    def get_explanation_guardrails(self, experiment_id: str) -> Json:
        """The declared explanation guardrails and their latest evaluation."""

    @operation("DELETE", "/experiments/{experiment_id}/explanation-guardrails")
    def delete_explanation_guardrails(self, experiment_id: str) -> Json:
        """Removes the explanation guardrails (the ramp is no longer held by them)."""

    @operation("GET", "/stats/sample-size")
    def sample_size(
        self,
        baseline_rate: float,
        minimum_detectable_effect: float,
        confidence_level: float | None = None,
        power: float | None = None,
        variants: int | None = None,
        daily_traffic: int | None = None,
        method: str | None = None,
        tuning_sample_size: int | None = None,
    ) -> Json:
        """Requests per arm (and days) to detect a relative change of a rate (``method``:
        ``sequential``, the default, or ``fixed``)."""

    # ------------------------------------------------------------------ datasets

    @operation("POST", "/datasets")
    def create_dataset(
        self,
        name: str,
        format: str | None = None,  # noqa: A002 - the API's field name
        description: str | None = None,
        compatibility: str | None = None,
        access_groups: Sequence[str] | None = None,
        schema: dict[str, Any] | None = None,
        **options: Any,
    ) -> Json:
        """Creates a dataset (writer)."""

    @operation("GET", "/datasets")
    def list_datasets(self, limit: int | None = None, next_token: str | None = None) -> Json:
        """A page of the datasets the caller may read, by name (``next_token`` in the answer
        asks for the next page; see :meth:`iter_datasets`)."""

    def iter_datasets(self, page_size: int = 100) -> Iterator[Json]:
        """Every dataset the caller may read, by name, following the pages."""
        token = None
        while True:
            page = self.list_datasets(limit=page_size, next_token=token)
            yield from page["datasets"]
            token = page.get("next_token")
            if not token:
                return

    @operation("GET", "/datasets/{dataset_id}")
    def get_dataset(self, dataset_id: str) -> Json:
        """A dataset."""

    @operation("PUT", "/datasets/{dataset_id}/access")
    def set_dataset_access(self, dataset_id: str, access_groups: Sequence[str]) -> Json:
        """Replaces the groups that may see a dataset (its owner and admins always may)."""

    @operation("POST", "/datasets/{dataset_id}/versions")
    def create_version(
        self,
        dataset_id: str,
        data: str | None = None,
        data_base64: str | None = None,
        format: str | None = None,  # noqa: A002 - the API's field name
        schema: dict[str, Any] | None = None,
        parent_version_id: str | None = None,
        tags: dict[str, str] | None = None,
        **options: Any,
    ) -> Json:
        """A version from inline content (up to the request-body limit; see :meth:`push`)."""

    @operation("GET", "/datasets/{dataset_id}/versions")
    def list_versions(
        self,
        dataset_id: str,
        limit: int | None = None,
        offset: int | None = None,
        as_of: datetime | str | None = None,
    ) -> Json:
        """A page of versions (ascending)."""

    def iter_versions(self, dataset_id: str, page: int = 200) -> Iterator[Json]:
        """Every version of a dataset, following ``next_offset``."""
        offset: int | None = 0
        while offset is not None:
            found = self.list_versions(dataset_id, limit=page, offset=offset)
            yield from found["versions"]
            offset = found.get("next_offset")

    @operation("POST", "/datasets/{dataset_id}/uploads")
    def create_upload(
        self,
        dataset_id: str,
        filename: str | None = None,
        size_bytes: int | None = None,
        sha256: str | None = None,
    ) -> Json:
        """Presigned upload URL(s): direct (``sha256``), single PUT, or multipart."""

    @operation("POST", "/datasets/{dataset_id}/uploads/complete")
    def complete_upload(
        self, dataset_id: str, key: str, upload_id: str, parts: Sequence[dict[str, Any]]
    ) -> Json:
        """Completes a multipart upload with the parts' ETags."""

    @operation("GET", "/datasets/{dataset_id}/versions/{version}")
    def get_version(
        self, dataset_id: str, version: int | str, as_of: datetime | str | None = None
    ) -> Json:
        """A version by number, id or tag (``as_of``: where the tag pointed then)."""

    @operation("POST", "/datasets/{dataset_id}/versions/{version}/restore")
    def restore_version(self, dataset_id: str, version: int | str) -> Json:
        """Makes an earlier version current again (a new version over the same stored object,
        recorded in lineage as restored from it)."""

    @operation("DELETE", "/datasets/{dataset_id}/versions/{version}")
    def delete_version(self, dataset_id: str, version: int | str) -> Json:
        """Deletes a version (a tombstone: reads answer 410; 409 if tagged or used)."""

    @operation("PUT", "/datasets/{dataset_id}/tags/{tag}")
    def move_tag(self, dataset_id: str, tag: str, version: str) -> Json:
        """Points ``tag`` at a version (a number as text, an id or another tag), recorded in
        its history."""

    @operation("GET", "/datasets/{dataset_id}/tags")
    def list_tags(self, dataset_id: str) -> Json:
        """Where every tag of a dataset points."""

    @operation("GET", "/datasets/{dataset_id}/tags/{tag}")
    def get_tag(self, dataset_id: str, tag: str, as_of: datetime | str | None = None) -> Json:
        """A tag: where it points (or pointed at ``as_of``) and every move, oldest first."""

    @operation("GET", "/datasets/{dataset_id}/drift")
    def drift(self, dataset_id: str, a: int | str, b: int | str) -> Json:
        """Per-column drift (PSI; KS or chi-square) and the schema diff from ``a`` to ``b``."""

    @operation("GET", "/datasets/{dataset_id}/versions/{version}/profile")
    def profile(self, dataset_id: str, version: int | str) -> Json:
        """The column profile computed when a version (number, id or tag) was ingested."""

    @operation("PUT", "/datasets/{dataset_id}/drift-limits")
    def set_drift_limits(
        self,
        dataset_id: str,
        psi: float | None = None,
        p_value: float | None = None,
        columns: list[str] | None = None,
    ) -> Json:
        """Sets the drift limits new versions are checked against (psi and p_value both
        ``None``: no limits)."""

    @operation("PUT", "/datasets/{dataset_id}/retention")
    def set_retention(
        self, dataset_id: str, keep_last: int | None = None, keep_days: int | None = None
    ) -> Json:
        """Sets a dataset's retention policy (both ``None``: keep every version)."""

    @operation("POST", "/content/{sha256}/erase")
    def erase_content(self, sha256: str) -> Json:
        """Erases content everywhere (admin): every live version holding it, and its bytes."""

    @operation("GET", "/datasets/{dataset_id}/versions/{version}/content")
    def content_url(self, dataset_id: str, version: int | str) -> Json:
        """A presigned GET of a version's bytes with their sha256 (see :meth:`pull`)."""

    @operation("GET", "/datasets/{dataset_id}/compare")
    def compare(self, dataset_id: str, a: int | str, b: int | str) -> Json:
        """Schema, row-count and row differences between versions ``a`` and ``b``."""

    @operation("GET", "/lineage/{version_id}")
    def lineage(
        self, version_id: str, direction: str | None = None, max_depth: int | None = None
    ) -> Json:
        """Upstream / downstream lineage of a version."""

    @operation("POST", "/datasets/{dataset_id}/transformations")
    def transform(
        self,
        dataset_id: str,
        transformation: dict[str, Any],
        source_version_ids: Sequence[str],
        tags: dict[str, str] | None = None,
        output_dataset_ids: dict[str, str] | None = None,
        data: str | None = None,
        **options: Any,
    ) -> Json:
        """Applies a declarative transformation."""

    @operation("POST", "/versions/{version_id}/replay")
    def replay(
        self,
        version_id: str,
        source_version_id: str,
        data: str | None = None,
        data_version_id: str | None = None,
        **options: Any,
    ) -> Json:
        """Replays a recorded chain of transformations on new data."""

    @operation("GET", "/versions/{version_id}/reproducibility")
    def reproducibility(self, version_id: str) -> Json:
        """Missing objects and non-replayable steps of a version's lineage."""

    @operation("POST", "/datasets/{dataset_id}/versions/{version}/usages")
    def record_usage(
        self, dataset_id: str, version: int | str, experiment_id: str, purpose: str | None = None
    ) -> Json:
        """Records that an experiment used a version."""

    @operation("GET", "/datasets/{dataset_id}/usages")
    def list_usages(self, dataset_id: str, experiment_id: str | None = None) -> Json:
        """Usages of a dataset's versions."""

    @operation("GET", "/datasets/{dataset_id}/reconstruct")
    def reconstruct(
        self,
        dataset_id: str,
        as_of: datetime | str | None = None,
        experiment_id: str | None = None,
    ) -> Json:
        """The version in force at a time, or the one an experiment used."""

    @operation("GET", "/dataset-rejections")
    def list_rejections(self, limit: int | None = None) -> Json:
        """Files the S3 trigger refused, with reasons (admin)."""

    # ------------------------------------------------------------------ explanations

    @operation("POST", "/explanations")
    def explain(
        self,
        model_id: str,
        input_data: Any,
        explanation_type: str | None = None,
        model_version: int | None = None,
        **options: Any,
    ) -> Json:
        """One SHAP or LIME explanation (options: ``seed``, ``num_samples``, ...)."""

    @operation("POST", "/explanations/batch")
    def explain_batch(
        self,
        model_id: str,
        inputs: Sequence[Any],
        explanation_type: str | None = None,
        model_version: int | None = None,
        **options: Any,
    ) -> Json:
        """Explanations of several inputs (a job above the synchronous limit)."""

    @operation("POST", "/explanations/global")
    def explain_global(
        self,
        model_id: str,
        inputs: Sequence[Any] | None = None,
        dataset_version_id: str | None = None,
        model_version: int | None = None,
        **options: Any,
    ) -> Json:
        """Global importance over inputs or a dataset version."""

    @operation("POST", "/explanations/dependence")
    def explain_dependence(
        self,
        model_id: str,
        feature: str,
        inputs: Sequence[Any] | None = None,
        dataset_version_id: str | None = None,
        model_version: int | None = None,
        **options: Any,
    ) -> Json:
        """A SHAP dependence plot's data for one feature."""

    @operation("POST", "/explanations/drift")
    def attribution_drift(
        self, baseline: dict[str, Any], current: dict[str, Any], **options: Any
    ) -> Json:
        """Attribution drift (NDCG of the top features) between two sides, each a model version
        with inputs, a dataset version or its baseline (options: ``top_k``, ``threshold``,
        ``seed``)."""

    @operation("POST", "/explanations/bias")
    def bias_metrics(
        self,
        model_id: str,
        facet_values: Sequence[Any],
        positive_label: Any,
        model_version: int | None = None,
        **options: Any,
    ) -> Json:
        """Clarify's pre- and post-training bias metrics for a facet (options: ``inputs``,
        ``labels``, ``facet``, ``facet_name`` or ``dataset_version_id``, ``label_column``,
        ``facet_column``)."""

    @operation("POST", "/explanations/permutation-importance")
    def permutation_importance(
        self,
        model_id: str,
        inputs: Sequence[Any],
        labels: Sequence[Any],
        model_version: int | None = None,
        **options: Any,
    ) -> Json:
        """Permutation importance of each feature (options: ``n_repeats``, ``seed``)."""

    @operation("POST", "/explanations/partial-dependence")
    def partial_dependence(
        self,
        model_id: str,
        feature: str,
        inputs: Sequence[Any],
        model_version: int | None = None,
        **options: Any,
    ) -> Json:
        """Partial dependence and ICE curves of one feature (options: ``grid_resolution``,
        ``grid``, ``class_name``)."""

    @operation("GET", "/explanations/jobs/{job_id}")
    def get_job(self, job_id: str) -> Json:
        """An explanation job's status and result."""

    def wait_job(self, job_id: str, timeout: float = 600.0, poll: float = 0.5) -> Json:
        """Polls a job until it succeeds; returns its result.

        Raises:
            ApiError: The job failed (code ``job_failed``).
            TimeoutError: Not finished within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job["status"] == "succeeded":
                return job["result"]
            if job["status"] == "failed":
                raise ApiError(200, "job_failed", str(job.get("error")), "GET", f"/jobs/{job_id}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout:.0f} s")
            time.sleep(poll)

    @operation("GET", "/explanations/cache/stats")
    def cache_stats(self) -> Json:
        """Explanation cache hits, misses and size."""

    # ------------------------------------------------------------------ higher level

    def local_experiment(self, experiment_id: str, **options: Any) -> Any:
        """A :class:`~synapse_client.local.LocalExperiment`: assigns users in-process with the
        service's hashing, refreshing the routing config by ETag."""
        from synapse_client.local import LocalExperiment

        return LocalExperiment(self, experiment_id, **options)

    def outcome_buffer(self, experiment_id: str, **options: Any) -> Any:
        """An :class:`~synapse_client.local.OutcomeBuffer` that posts outcomes in batches."""
        from synapse_client.local import OutcomeBuffer

        return OutcomeBuffer(self, experiment_id, **options)

    def push(self, path: str, dataset_id: str, **options: Any) -> Json:
        """Uploads a file as a new version (see :func:`synapse_client.data.push`)."""
        from synapse_client.data import push

        return push(self, path, dataset_id, **options)

    def pull(self, dataset_id: str, version: int | str, path: str, **options: Any) -> Json:
        """Downloads a version and verifies its sha256 (see :func:`synapse_client.data.pull`)."""
        from synapse_client.data import pull

        return pull(self, dataset_id, version, path, **options)


def _q(value: str) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")
