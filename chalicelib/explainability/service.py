"""Orchestration: one entry point per API operation, the compute backends and job dispatch.

Backends (``SYNAPSE_EXPLANATION_BACKEND``):

* ``inprocess`` (local stack, tests): the engines run in this process.
* ``lambda`` (AWS): shap and numba do not fit the API's zip, so the API function invokes the
  explanation function (``EXPLANATION_FUNCTION``, handler
  ``chalicelib.explainability.handlers.explainer_function_handler``) synchronously for single
  explanations and asynchronously (``InvocationType=Event``) to run queued jobs. The cache is
  consulted before invoking, so a cache hit never leaves the API function.

Every request is estimated before it runs (:mod:`.budget`, :mod:`.planner`): the API counts it
without the model (a lower bound: over ``SYNAPSE_EXPLAIN_JOB_SECONDS`` is a 422 at once), then
the backend measures it with the model. Requests of up to ``SYNC_ROW_LIMIT`` rows whose estimate
fits ``SYNAPSE_EXPLAIN_SYNC_SECONDS`` are answered synchronously (and handed to a job if they
reach ``SYNAPSE_EXPLAIN_SYNC_DEADLINE``); larger batches, global importance over a dataset
version, requests with ``asynchronous=True`` and estimates over the synchronous limit become jobs
(202); estimates over what a job may do are refused (422 ``too_expensive``). A job runs until its
deadline (the function's remaining time less a safety margin) and records ``failed`` with the
reason if it would not finish.
"""

from __future__ import annotations

import cmath
import json
import math
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, TypeVar

from chalicelib.core import aws
from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.config import get_settings
from chalicelib.core.errors import (
    NotFound,
    ServiceUnavailable,
    SynapseError,
    UnprocessableEntity,
    ValidationError,
)
from chalicelib.core.events import EventBus, get_event_bus
from chalicelib.core.principal import Principal
from chalicelib.core.singleton import lazy
from chalicelib.explainability.aggregator import FeatureImportanceAggregator
from chalicelib.explainability.base import collection_paused, require
from chalicelib.explainability.budget import (
    Allowance,
    Estimate,
    Limits,
    admit,
    bounded,
    counted_under,
    current,
    decide,
    on_compute,
    refuse_if_over_job,
    sync_allowance,
)
from chalicelib.explainability.cache import ExplanationCache, cache_key
from chalicelib.explainability.errors import (
    BackgroundNotFound,
    DeadlineExceeded,
    ExplanationJobNotFound,
    NeedsJob,
    out_of_memory,
)
from chalicelib.explainability.inputs import text_input
from chalicelib.explainability.jobs import ExplanationJobs
from chalicelib.explainability.lime_engine import LIMEExplainer, LimeOptions, lime_options
from chalicelib.explainability.loading import ModelDescriptor, ModelLoader, RegistryModelLoader
from chalicelib.explainability.models import (
    IMPLEMENTED_TYPES,
    MAX_JOB_ROWS,
    SYNC_ROW_LIMIT,
    BatchRequest,
    DependenceRequest,
    ExplainOptions,
    ExplanationQuery,
    ExplanationRequest,
    ExplanationType,
    GlobalExplanation,
    GlobalRequest,
    PlanRequest,
    PredictionExplanation,
    Submitted,
    parse_request,
)
from chalicelib.explainability.planner import CostPlanner, input_kind
from chalicelib.explainability.repository import ExplanationRepository, JobRecord
from chalicelib.explainability.shap_engine import SHAPExplainer, ShapOptions, shap_options
from chalicelib.explainability.shap_media import MediaShapOptions, media_shap_options

MEDIA_KINDS = ("text", "image")
RequestT = TypeVar("RequestT", bound=ExplanationQuery)

# What a compute backend runs: an explanation request, or the estimate of one.
Work = ExplanationQuery | PlanRequest


class ComputeBackend(Protocol):
    """Runs a typed request (single, batch, global, dependence, or the estimate of one) under
    the caller's allowance (:func:`.budget.current`)."""

    def run(self, work: Work) -> Any:
        """Runs ``work`` and returns its JSON-ready result.

        Raises:
            NeedsJob: Synchronous work over the synchronous limit or deadline.
        """
        ...

    def dispatch_job(self, job_id: str, seconds_available: float | None = None) -> None:
        """Runs a queued job (here or elsewhere); ``seconds_available`` is what this function
        has left (``None``: no timeout)."""
        ...


class ExplanationService:
    """The explainability service behind the HTTP API and the event handlers.

    Args:
        model_loader: Resolves and loads model versions.
        cache: Explanation cache.
        repository: Jobs and large results.
        event_bus: Receives ``ExplanationCompleted``.
        clock: Time source.
        backend: Where computation runs (default: from settings).
        limits: Work limits (default: from the environment, read on each request).
    """

    def __init__(
        self,
        model_loader: ModelLoader,
        cache: ExplanationCache,
        repository: ExplanationRepository,
        event_bus: EventBus,
        clock: Clock | None = None,
        backend: ComputeBackend | str | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.model_loader = model_loader
        self.cache = cache
        self.clock = clock or SystemClock()
        self.shap = SHAPExplainer(model_loader, cache, event_bus, self.clock)
        self.lime = LIMEExplainer(model_loader, cache, event_bus, self.clock)
        self.aggregator = FeatureImportanceAggregator()
        self.planner = CostPlanner(model_loader, self.shap.tree_explainer, dataset_row_count)
        self._limits = limits
        self.jobs = ExplanationJobs(repository, self.execute, self.clock, self._job_limits)
        self.backend: ComputeBackend = (
            backend
            if backend is not None and not isinstance(backend, str)
            else backend_from_settings(self, backend)
        )

    @property
    def limits(self) -> Limits:
        """The work limits (given, or read from the environment now)."""
        return self._limits or Limits()

    def _job_limits(self) -> Limits:
        return self.limits

    # --- single ------------------------------------------------------------------------------
    def explain(
        self, request: ExplanationRequest, principal: Principal | None = None
    ) -> PredictionExplanation:
        """Explains one prediction and waits for it (the Python API; HTTP uses
        :meth:`explain_or_submit`): access, then the cache, then the backend. The work may cost
        up to the job limit.

        Raises:
            ModelNotFound: The caller may not read the model (as if it did not exist).
            BackgroundNotFound: The caller may not read the version's background dataset.
            UnprocessableEntity: An unimplemented type, or a model the method cannot explain.
            ValidationError: Invalid input or parameters.
            TooExpensive: The estimate is over what a job may do.
        """
        check_type(request.explanation_type)
        self.authorize(principal, request.model_id, request.model_version)
        with bounded(waiting_allowance(self.limits)):
            if isinstance(self.backend, InProcessBackend):
                try:
                    return self.explain_here(request)
                except MemoryError:
                    raise out_of_memory() from None
            descriptor, key = self.request_key(request)
            found = self.cache.get(key, descriptor.model_id)
            if found is not None:
                return found
            pinned = request.pinned(descriptor.version)
            explanation = PredictionExplanation.from_dict(self.backend.run(pinned))
        self.cache.remember(key, explanation)
        return explanation

    def explain_or_submit(
        self, request: ExplanationRequest, owner: str = "", principal: Principal | None = None
    ) -> PredictionExplanation | Submitted:
        """Explains one prediction now, or submits a job when its estimate is over the synchronous
        limit or ``request.asynchronous`` is set; a cached answer is always returned at once.
        With a ``principal``, access is checked before the cache (:meth:`authorize`).

        Raises:
            ModelNotFound: The caller may not read the model (as if it did not exist).
            BackgroundNotFound: The caller may not read the version's background dataset.
            TooExpensive: The estimate is over what a job may do (422).
            ValidationError: Invalid input or parameters.
        """
        check_type(request.explanation_type)
        self.authorize(principal, request.model_id, request.model_version)
        submitter = Submitter(owner, principal)
        descriptor = self.model_loader.describe(request.model_id, request.model_version)
        pinned = request.pinned(descriptor.version)
        static = self.planner.static(pinned, descriptor)
        to_job = decide(static, self.limits) == "job" or request.asynchronous
        remote = not isinstance(self.backend, InProcessBackend)
        key = ""
        if to_job or remote:  # in process, the engine looks the cache up itself
            descriptor, key = self.request_key(request)
            found = self.cache.get(key, descriptor.model_id)
            if found is not None:
                return found
        if to_job:
            return self._submit(pinned, submitter)
        answer = self._run_now(pinned, submitter)
        if isinstance(answer, Submitted):
            return answer
        explanation = PredictionExplanation.from_dict(answer)
        if remote:
            self.cache.remember(key, explanation)
        return explanation

    def explain_here(self, request: ExplanationRequest) -> PredictionExplanation:
        """Explains one prediction in this process (the engines handle cache and events); on a
        cache miss, the running allowance must admit its measured cost first."""
        check_type(request.explanation_type)
        descriptor = self.model_loader.describe(request.model_id, request.model_version)
        pinned = request.pinned(descriptor.version)
        with on_compute(lambda: admit(self.planner.measured(pinned, descriptor))):
            return self._explain_one(request)

    def _explain_one(self, request: ExplanationRequest) -> PredictionExplanation:
        """Explains one prediction in this process without estimating it again."""
        descriptor = self.model_loader.describe(request.model_id, request.model_version)
        kind = input_kind(descriptor)
        version = descriptor.version
        if request.explanation_type is ExplanationType.SHAP:
            if kind in MEDIA_KINDS:
                return self._explain_media_with_shap(request, kind, version)
            return self.shap.explain_prediction(
                request.model_id,
                version,
                request.input_data,
                request.prediction_id,
                options=shap_options_of(request),
            )
        options = lime_options_of(request, kind)
        if kind == "text":
            text = text_input(request.input_data)
            return self.lime.explain_text_prediction(
                request.model_id, version, text, request.prediction_id, options=options
            )
        if kind == "image":
            image = (request.input_data or {}).get("image")
            return self.lime.explain_image_prediction(
                request.model_id, version, image, request.prediction_id, options=options
            )
        return self.lime.explain_prediction(
            request.model_id, version, request.input_data, request.prediction_id, options=options
        )

    def _explain_media_with_shap(
        self, request: ExplanationRequest, kind: str, version: int
    ) -> PredictionExplanation:
        """SHAP (Partition explainer) of a text or image model."""
        options = media_shap_options_of(request, kind)
        data = request.input_data or {}
        if kind == "text":
            return self.shap.explain_text_prediction(
                request.model_id, version, text_input(data), request.prediction_id, options=options
            )
        return self.shap.explain_image_prediction(
            request.model_id, version, data.get("image"), request.prediction_id, options=options
        )

    def request_key(self, request: ExplanationRequest) -> tuple[ModelDescriptor, str]:
        """The resolved version and cache key of a single request (no heavy imports)."""
        from chalicelib.explainability.inputs import canonical_input

        descriptor = self.model_loader.describe(request.model_id, request.model_version)
        kind = input_kind(descriptor)
        if request.explanation_type is ExplanationType.SHAP and kind in MEDIA_KINDS:
            parameters = media_shap_options_of(request, kind).as_parameters(kind)
        elif request.explanation_type is ExplanationType.SHAP:
            parameters = shap_options_of(request).as_parameters()
        else:
            parameters = lime_options_of(request, kind).as_parameters()
        canonical = canonical_input(kind, request.input_data, descriptor.feature_names)
        key = cache_key(descriptor, request.explanation_type.value, canonical, parameters)
        return descriptor, key

    # --- batch, global, dependence -----------------------------------------------------------
    def explain_batch(
        self,
        request: BatchRequest | dict[str, Any],
        owner: str = "",
        principal: Principal | None = None,
    ) -> dict[str, Any] | Submitted:
        """Explains many predictions, or submits a job (over ``SYNC_ROW_LIMIT`` inputs, over
        the synchronous limit, or asked to). With a ``principal``, the model and its background
        must be readable by the caller (404 otherwise). A dict is read as a
        :class:`BatchRequest` (the Python API's older form)."""
        batch = as_request(BatchRequest, request)
        check_type(batch.explanation_type)
        self.authorize_request(principal, batch)
        rows = len(batch.inputs)
        _check_rows(rows)
        force = batch.asynchronous or rows > SYNC_ROW_LIMIT
        return self._run_or_submit(batch, Submitter(owner, principal), force)

    def global_importance(
        self,
        request: GlobalRequest | dict[str, Any],
        owner: str = "",
        principal: Principal | None = None,
    ) -> dict[str, Any] | Submitted:
        """Global importance, stability and interactions (a job above the synchronous limits).

        With a ``principal``, the model and a ``dataset_version_id`` must be readable by the
        caller (otherwise 404, as for ones that do not exist). A dict is read as a
        :class:`GlobalRequest`.
        """
        summary = as_request(GlobalRequest, request)
        check_type(summary.explanation_type)
        self.authorize_request(principal, summary)
        return self._run_or_submit(summary, Submitter(owner, principal), _needs_job(summary))

    def dependence(
        self,
        request: DependenceRequest | dict[str, Any],
        owner: str = "",
        principal: Principal | None = None,
    ) -> dict[str, Any] | Submitted:
        """SHAP dependence-plot data (a job above the synchronous limits). A dict is read as a
        :class:`DependenceRequest`."""
        plot = as_request(DependenceRequest, request)
        self.authorize_request(principal, plot)
        return self._run_or_submit(plot, Submitter(owner, principal), _needs_job(plot))

    def plan(self, request: ExplanationQuery) -> Estimate:
        """The measured estimate of a request (loads the model; see :mod:`.planner`)."""
        descriptor = self.model_loader.describe(request.model_id, request.model_version)
        return self.planner.measured(request, descriptor)

    def _run_or_submit(
        self, request: ExplanationQuery, submitter: Submitter, force_job: bool
    ) -> dict[str, Any] | Submitted:
        """Answers now or submits a job, by the estimate (422 over what a job may do)."""
        descriptor = self.model_loader.describe(request.model_id, request.model_version)
        pinned = request.pinned(descriptor.version)
        static = self.planner.static(pinned, descriptor)
        if decide(static, self.limits) == "job" or force_job:
            return self._submit(pinned, submitter)
        return self._run_now(pinned, submitter)

    def _run_now(self, request: ExplanationQuery, submitter: Submitter) -> Any:
        """Runs synchronously under the synchronous allowance; a job if it does not fit."""
        try:
            with bounded(sync_allowance(self.limits)):
                return self.backend.run(request)
        except NeedsJob as over:
            return self._submitted(request, submitter, over.estimate)

    def _submit(self, request: ExplanationQuery, submitter: Submitter) -> Submitted:
        """Submits a job once its measured estimate fits what a job may do (else 422).

        The request is estimated as the job will run it (the ``plan`` operation counts
        TreeSHAP's calls under a job's deadline): the job's own estimate is the same when its
        function has the job limit left, and counts no fewer calls when it has less."""
        measured = Estimate.from_dict(self.backend.run(PlanRequest(request)))
        refuse_if_over_job(measured, self.limits.job_seconds)
        return self._submitted(request, submitter, measured)

    def _submitted(
        self, request: ExplanationQuery, submitter: Submitter, cost: Estimate | None
    ) -> Submitted:
        """Stores the job: the version is pinned, and the submitter is kept so the job's reads
        are checked again with the submitter's rights when it runs. The job carries the
        request serialised (:meth:`ExplanationQuery.to_dict`), parsed back when it runs."""
        job_payload = submitter.job_payload(replace(request, asynchronous=False).to_dict())
        job = self.jobs.submit(request.operation, job_payload, submitter.name)
        return Submitted(job, None if cost is None else cost.seconds)

    # --- access ------------------------------------------------------------------------------
    def authorize(
        self,
        principal: Principal | None,
        model_id: str,
        model_version: int | None,
        dataset_version_id: str | None = None,
    ) -> None:
        """Checks every resource an explanation reads with the caller's rights, before the cache.

        The model must be readable; so must the version's background dataset version and the
        request's ``dataset_version_id``. Without a ``principal`` (work acting as the system)
        nothing is checked.

        Raises:
            ModelNotFound: The model is unknown or not readable.
            BackgroundNotFound: The background dataset version is gone or not readable (the
                message names neither).
            DatasetVersionNotFound: ``dataset_version_id`` is unknown or not readable.
        """
        if principal is None:
            return
        from chalicelib.dataversion import facade as datasets
        from chalicelib.registry import facade as registry

        registry.require_readable_model(principal, model_id)
        if dataset_version_id is not None:
            datasets.readable_version(principal, dataset_version_id)
        descriptor = self.model_loader.describe(model_id, model_version)
        background = descriptor.background_dataset_version_id
        if background is None:
            return
        try:
            datasets.readable_version(principal, background)
        except NotFound:
            raise BackgroundNotFound(
                f"model {model_id} version {descriptor.version} explains against a dataset "
                "version that does not exist or that you may not read"
            ) from None

    def authorize_request(self, principal: Principal | None, request: ExplanationQuery) -> None:
        """:meth:`authorize` for every resource a request reads."""
        self.authorize(
            principal, request.model_id, request.model_version, request.dataset_version()
        )

    # --- jobs, cache -------------------------------------------------------------------------
    def get_job(self, job_id: str, principal: Principal | str | None = None) -> JobRecord:
        """A job's status and result.

        With a ``principal``: a job the caller may read (its submitter, the submitter's groups,
        admins) whose model, background and dataset version the caller may still read; otherwise
        404, as for a job that does not exist. A plain owner name only compares owners; ``None``
        reads any job.
        """
        record = self.jobs.get(job_id, principal)
        if isinstance(principal, Principal):
            try:
                self.authorize_request(principal, parse_request(record.kind, record.request))
            except NotFound:
                raise ExplanationJobNotFound(f"explanation job '{job_id}' not found") from None
        return record

    def handle_job(self, job_id: str, seconds_available: float | None = None) -> None:
        """Called by the queue worker: runs the job here (with the worker's remaining
        ``seconds_available``) or hands it to the backend."""
        self.backend.dispatch_job(job_id, seconds_available)

    def invalidate(
        self, model_id: str, model_version: int | None = None, principal: Principal | None = None
    ) -> int:
        """Drops cached explanations of a model (or one version); returns how many.

        With a ``principal``, the caller must be able to change the model (404 otherwise).
        """
        if principal is not None:
            from chalicelib.registry import facade as registry

            registry.writable_model(principal, model_id)
        return self.cache.invalidate_model(model_id, model_version)

    def cache_stats(self) -> dict[str, Any]:
        """This instance's cache statistics."""
        return self.cache.get_cache_stats()

    # --- execution (in this process) ---------------------------------------------------------
    def execute(self, operation: str, payload: dict[str, Any]) -> Any:
        """Runs a serialised operation here (the Lambda event's or a job's): the payload is
        parsed back into its typed request first, and nothing past this point sees a dict.

        A job payload carries its submitter (``caller``): the resources it reads are checked
        again with the submitter's rights when the job runs, not only when it was submitted.

        Raises:
            ValidationError: An unknown operation or a malformed payload.
            NeedsJob: Synchronous work over the synchronous limit, or stopped at its deadline.
        """
        if operation == "run_job":
            return self.jobs.run(str(payload["job_id"]), payload.get("seconds_available"))
        caller = payload.get(CALLER)
        data = {key: value for key, value in payload.items() if key != CALLER}
        work: Work = (
            PlanRequest.from_dict(data) if operation == "plan" else parse_request(operation, data)
        )
        if caller is not None:
            target = work.request if isinstance(work, PlanRequest) else work
            self.authorize_request(caller_principal(caller), target)
        return self.compute(work)

    def compute(self, work: Work) -> Any:
        """Runs a typed request here under the running allowance; returns its JSON-ready result.

        Raises:
            NeedsJob: Synchronous work over the synchronous limit, or stopped at its deadline.
        """
        try:
            return require_finite(self._compute(work))
        except DeadlineExceeded:
            allowance = current()
            if allowance is not None and allowance.mode == "sync":
                raise NeedsJob() from None  # the estimate was wrong: finish it as a job
            raise
        except MemoryError:
            # Whatever allocated it is gone by now; the request, not the server, is at fault.
            raise out_of_memory() from None

    def _compute(self, work: Work) -> Any:
        if isinstance(work, PlanRequest):  # the estimate of a job about to be submitted
            with counted_under(self._job_limits().job_seconds):
                return self.plan(work.request).to_dict()
        if isinstance(work, ExplanationRequest):
            return self.explain_here(work).to_dict()
        if isinstance(work, BatchRequest):
            explanations = self._batch_explanations(work)
            with collection_paused():  # ~25,000 new dicts and lists, no cycle among them
                rows = [e.to_dict() for e in explanations]
            return {"count": len(explanations), "explanations": rows}
        if isinstance(work, GlobalRequest):
            return self._run_global(work)
        if isinstance(work, DependenceRequest):
            return self._run_dependence(work)
        raise ValidationError(f"unknown request {type(work).__name__}")

    def _batch_explanations(
        self, request: BatchRequest | GlobalRequest
    ) -> list[PredictionExplanation]:
        """Explanations of the request's inputs, once the allowance admits their estimate."""
        check_type(request.explanation_type)
        descriptor = self.model_loader.describe(request.model_id, request.model_version)
        admit(self.planner.measured(request, descriptor))
        if input_kind(descriptor) != "tabular":
            return self._media_batch(request, descriptor.version)
        inputs = request.explained_inputs()
        ids = request.prediction_ids if isinstance(request, BatchRequest) else None
        args = (request.model_id, descriptor.version, inputs, ids)
        if request.explanation_type is ExplanationType.SHAP:
            return self.shap.explain_batch(*args, options=shap_options_of(request))
        return self.lime.explain_batch(*args, options=lime_options_of(request, "tabular"))

    def _media_batch(
        self, request: BatchRequest | GlobalRequest, version: int
    ) -> list[PredictionExplanation]:
        """Text or image inputs, one explanation each (each one cached), in input order."""
        inputs = request.explained_inputs()
        found = request.prediction_ids if isinstance(request, BatchRequest) else None
        ids = list(found or [None] * len(inputs))
        if len(ids) != len(inputs):
            raise ValidationError("prediction_ids must have one id per input")
        return [
            self._explain_one(single_request(request, version, item, pid))
            for item, pid in zip(inputs, ids, strict=True)
        ]

    def _run_global(self, request: GlobalRequest) -> dict[str, Any]:
        import time

        started = time.perf_counter()
        descriptor = self.model_loader.describe(request.model_id, request.model_version)
        require(
            input_kind(descriptor) != "image",
            f"model '{descriptor.model_id}' classifies images: superpixels differ from image to "
            "image, so they have no global importance; explain images one by one or in a batch",
        )
        inputs = self.shap.resolve_inputs(
            request.model_id,
            descriptor.version,
            request.inputs,
            request.dataset_version_id,
            MAX_JOB_ROWS,
        )
        pinned = replace(request, model_version=descriptor.version, inputs=inputs)
        explanations = self._batch_explanations(pinned)
        method = request.aggregation_method
        result: GlobalExplanation = self.aggregator.summarize(
            explanations, method, request.top_k, request.interaction_threshold
        )
        result.computation_time_ms = (time.perf_counter() - started) * 1000
        data = result.to_dict()
        bins = request.prediction_bins
        data["segments"] = (
            self.aggregator.segment_by_prediction(explanations, bins, method) if bins else None
        )
        return data

    def _run_dependence(self, request: DependenceRequest) -> dict[str, Any]:
        descriptor = self.model_loader.describe(request.model_id, request.model_version)
        inputs = request.inputs
        if inputs is None and request.dataset_version_id is not None:
            inputs = self.shap.resolve_inputs(
                request.model_id,
                descriptor.version,
                None,
                request.dataset_version_id,
                MAX_JOB_ROWS,
            )
        admit(self.planner.measured(request, descriptor, inputs))
        return self.shap.get_feature_dependence(
            request.model_id,
            descriptor.version,
            request.feature,
            inputs=inputs,
            dataset_version_id=None if inputs is not None else request.dataset_version_id,
            interaction_feature=request.interaction_feature,
            class_name=request.class_name,
            max_rows=MAX_JOB_ROWS,
            background_sample_size=request.background_sample_size,
            background_method=request.background_method,
            algorithm=request.algorithm,
            seed=request.seed,
        )


class InProcessBackend:
    """Runs everything in this process."""

    def __init__(self, service: ExplanationService) -> None:
        self.service = service

    def run(self, work: Work) -> Any:
        """Runs the request here (under the caller's allowance), typed all the way."""
        return self.service.compute(work)

    def dispatch_job(self, job_id: str, seconds_available: float | None = None) -> None:
        """Runs the job here, within ``seconds_available``."""
        self.service.jobs.run(job_id, seconds_available)


class LambdaBackend:
    """Invokes the explanation function (synchronously; jobs asynchronously).

    The function answers ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {...}}``;
    errors come back as the same status and code they had there.

    Args:
        function_name: The explanation function (default: ``EXPLANATION_FUNCTION``).
        client: A boto3 Lambda client (default: the shared one).
    """

    def __init__(self, function_name: str | None = None, client: Any = None) -> None:
        self.function_name = function_name or get_settings().explanation_function
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or aws.client("lambda")

    def run(self, work: Work) -> Any:
        """Invokes the function (with the caller's allowance) and returns its result: the
        request travels serialised (``{"operation", "payload"}``) and is parsed back into the
        same type there (:meth:`ExplanationService.execute`).

        Raises:
            NeedsJob: The function found the work over the synchronous limit or deadline.
            SynapseError: The function's error, with its status and code.
        """
        operation = "plan" if isinstance(work, PlanRequest) else work.operation
        event: dict[str, Any] = {"operation": operation, "payload": work.to_dict()}
        allowance = current()
        if allowance is not None:
            event["allowance"] = allowance.to_dict()
        response = self.client.invoke(
            FunctionName=self.function_name,
            InvocationType="RequestResponse",
            Payload=json.dumps(event).encode(),
        )
        answer = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError") or not isinstance(answer, dict):
            raise ServiceUnavailable("the explanation function failed; try again")
        if "needs_job" in answer:
            found = answer["needs_job"]
            raise NeedsJob(Estimate.from_dict(found) if found else None)
        if not answer.get("ok"):
            raise remote_error(answer.get("error") or {})
        return answer.get("result")

    def dispatch_job(self, job_id: str, seconds_available: float | None = None) -> None:
        """Starts the job in the explanation function without waiting (it has its own time)."""
        body = json.dumps({"operation": "run_job", "payload": {"job_id": job_id}}).encode()
        self.client.invoke(FunctionName=self.function_name, InvocationType="Event", Payload=body)


def remote_error(error: dict[str, Any]) -> SynapseError:
    """The local equivalent of an error reported by the explanation function."""
    found = SynapseError(str(error.get("message", "explanation failed")), code=error.get("error"))
    found.status = int(error.get("status", 500))
    found.details = error.get("details")
    return found


def backend_from_settings(service: ExplanationService, name: str | None = None) -> ComputeBackend:
    """The backend called ``name`` (default: ``SYNAPSE_EXPLANATION_BACKEND``).

    Raises:
        ValueError: An unknown backend name.
    """
    name = name or get_settings().explanation_backend
    if name == "inprocess":
        return InProcessBackend(service)
    if name == "lambda":
        return LambdaBackend()
    raise ValueError(f"SYNAPSE_EXPLANATION_BACKEND must be inprocess or lambda, not '{name}'")


def require_finite(result: Any) -> Any:
    """Returns ``result`` if every number in it is finite.

    Inputs are finite (checked on the way in), but values near the limits of a double (a
    feature of 1.7e308, a background row of -1e308) can overflow a model's arithmetic; such an
    explanation would be answered with nulls in place of numbers.

    Raises:
        UnprocessableEntity: Naming the first value that is not finite.
    """
    if _all_finite(result):
        return result
    pending: list[tuple[Any, str]] = [(result, "")]
    while pending:
        value, where = pending.pop()
        if hasattr(value, "tolist"):  # a numpy array or scalar: its Python values
            value = value.tolist()
        if not isinstance(value, _CONTAINERS) and not _finite(value):
            raise UnprocessableEntity(
                f"the explanation is not finite ({where.lstrip('.')} is {value}): input or "
                "background values this large overflow the model's floating-point arithmetic",
                code="not_finite",
            )
        if isinstance(value, dict):
            pending.extend((item, f"{where}.{key}") for key, item in value.items())
        elif isinstance(value, list | tuple):
            pending.extend((item, f"{where}[{index}]") for index, item in enumerate(value))
    return result


_SCALARS = (str, int, bool, type(None))
_CONTAINERS = (*_SCALARS, dict, list, tuple)  # what the named walk looks into or skips


def _all_finite(result: Any) -> bool:
    """Whether every float in ``result`` (dicts, lists and tuples of values) is finite: the
    common case, walked without keeping the paths :func:`require_finite` names (a 1,000-row
    batch holds ~130,000 values)."""
    pending = [result]
    pop, extend, isfinite = pending.pop, pending.extend, math.isfinite
    while pending:
        value = pop()
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind is float:
            if not isfinite(value):
                return False
        elif kind is dict or isinstance(value, dict):
            extend(value.values())
        elif isinstance(value, list | tuple):
            extend(value)
        elif hasattr(value, "tolist"):  # a numpy array or scalar
            extend((value.tolist(),))
        elif not _finite(value):
            return False
    return True


def _finite(value: Any) -> bool:
    """Whether a value that is neither a container, a string, an int nor ``None`` is finite:
    any number (a float subclass, a Decimal, a complex); ``True`` for what is not a number."""
    try:
        return cmath.isfinite(complex(value))
    except (TypeError, ValueError, OverflowError):
        return True


def check_type(explanation_type: ExplanationType) -> None:
    """Raises the 422 for explanation types that exist but are not implemented."""
    if explanation_type not in IMPLEMENTED_TYPES:
        raise UnprocessableEntity(
            f"explanation_type '{explanation_type.value}' is not implemented yet; use shap or lime",
            code="unsupported_explanation_type",
        )


# The submitter of a job, stored in its payload so its reads are checked again when it runs.
CALLER = "caller"


def caller_snapshot(principal: Principal) -> dict[str, Any]:
    """What a job payload keeps of its submitter (neither token nor key id)."""
    return {
        "principal": principal.principal,
        "roles": sorted(principal.roles),
        "groups": sorted(principal.groups),
    }


def caller_principal(snapshot: dict[str, Any]) -> Principal:
    """The :class:`Principal` a job payload's ``caller`` describes."""
    return Principal(
        principal=str(snapshot.get("principal", "")),
        key_id="",
        roles=frozenset(snapshot.get("roles") or ()),
        groups=frozenset(snapshot.get("groups") or ()),
    )


@dataclass(frozen=True)
class Submitter:
    """Who submits a job: an owner's name (the Python API) or the API's caller.

    Attributes:
        owner: The owner's name when there is no principal.
        principal: The caller; kept in the job's payload so its reads are checked again with
            the caller's rights when it runs.
    """

    owner: str = ""
    principal: Principal | None = None

    @property
    def name(self) -> str:
        """The job's owner."""
        return self.principal.principal if self.principal is not None else self.owner

    def job_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` with the caller kept (``caller``), if there is one."""
        if self.principal is None:
            return payload
        return {**payload, CALLER: caller_snapshot(self.principal)}


def dataset_row_count(dataset_version_id: str) -> int | None:
    """The row count recorded for a dataset version (``None`` if unknown or unreadable).

    Read as the system: the planner estimates only versions the caller was checked against
    (:meth:`ExplanationService.authorize`)."""
    from chalicelib.dataversion.facade import row_count_as_system

    try:
        return row_count_as_system(dataset_version_id)
    except SynapseError:
        return None


def waiting_allowance(limits: Limits) -> Allowance:
    """The allowance of a caller that waits for the answer in process: up to the job limit."""
    return Allowance("job", float("inf"), limits.job_seconds, limits.job_seconds)


def as_request(kind: type[RequestT], request: RequestT | dict[str, Any]) -> RequestT:
    """``request`` as a typed request of ``kind`` (a dict is parsed: the Python API's older
    form).

    Raises:
        ValidationError: A dict that is not a request of that kind.
    """
    if isinstance(request, kind):
        return request
    if not isinstance(request, dict):
        raise ValidationError(f"expected a {kind.__name__}, not {type(request).__name__}")
    found = parse_request(kind.operation, request)
    assert isinstance(found, kind)
    return found


def single_request(
    request: ExplanationQuery, version: int, input_data: Any, prediction_id: str | None
) -> ExplanationRequest:
    """One input of a batch as a single request with the batch's options."""
    options = {item.name: getattr(request, item.name) for item in fields(ExplainOptions)}
    return ExplanationRequest(
        request.model_id,
        version,
        request.explanation_type,
        input_data,
        prediction_id,
        **options,
    )


def shap_options_of(request: ExplainOptions) -> ShapOptions:
    """The request's tabular SHAP options, validated.

    Raises:
        ValidationError: A value out of range or an unknown name.
    """
    return shap_options(
        request.background_sample_size,
        request.background_method,
        request.algorithm,
        request.class_name,
        request.seed,
        request.include_interactions,
    )


def lime_options_of(request: ExplainOptions, kind: str) -> LimeOptions:
    """The request's LIME options, validated (``hide_color`` applies to images only).

    Raises:
        ValidationError: A value out of range or an unknown name.
    """
    return lime_options(
        request.num_samples,
        request.num_features,
        request.class_name,
        request.seed,
        request.segmentation,
        request.n_segments,
        request.hide_color if kind == "image" else None,
    )


def media_shap_options_of(request: ExplainOptions, kind: str) -> MediaShapOptions:
    """The request's text/image SHAP options, validated (text uses ``max_evals``,
    ``class_name`` and ``seed`` only).

    Raises:
        ValidationError: A value out of range or an unknown name.
    """
    if kind == "text":
        return media_shap_options(request.max_evals, request.class_name, request.seed)
    return media_shap_options(
        request.max_evals,
        request.class_name,
        request.seed,
        request.segmentation,
        request.n_segments,
        request.hide_color,
    )


def _needs_job(request: GlobalRequest | DependenceRequest) -> bool:
    """Whether a global or dependence request is a job whatever its estimate: a dataset
    version, more than ``SYNC_ROW_LIMIT`` inputs, or asked to (400 over ``MAX_JOB_ROWS``)."""
    rows = len(request.inputs or [])
    _check_rows(rows)
    big = request.dataset_version_id is not None or rows > SYNC_ROW_LIMIT
    return big or request.asynchronous


def _check_rows(rows: int) -> None:
    if rows > MAX_JOB_ROWS:
        raise ValidationError(f"at most {MAX_JOB_ROWS} inputs are accepted in one request")


def build_service(backend: str | None = None) -> ExplanationService:
    """A service over the registry, the DynamoDB cache and the event bus."""
    repository = ExplanationRepository()
    return ExplanationService(
        model_loader=RegistryModelLoader(),
        cache=ExplanationCache(repository),
        repository=repository,
        event_bus=get_event_bus(),
        backend=backend,
    )


@lazy
def get_explanation_service() -> ExplanationService:
    """The process-wide explanation service (backend from settings)."""
    return build_service()
