"""The experimentation domain's public face: every experiment operation on behalf of a caller.

The HTTP routes and other domains come here, never to the engine or its repositories. Each
function checks the caller against the experiment with the one rule of
:mod:`chalicelib.core.access` (owner, ``access_groups``, admin): an experiment the caller may not
read is answered exactly like one that does not exist. The model versions an experiment routes
to are references: each must be readable by the caller when the experiment is created, and the
winner's model writable by the caller when a conclusion promotes it. The scheduled monitor acts
as the system on experiments whose references were checked when they were made.

Hot paths (routing, outcomes, metrics, analysis) check against the experiment as this instance
caches it for routing (``SYNAPSE_ROUTE_CACHE_TTL``), so an access change made elsewhere reaches
them within that time, as a pause does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Unpack

from chalicelib.abtesting.errors import (
    ExperimentNotFound,
    LayerNotFound,
    unknown_layer,
    unknown_model_version,
)
from chalicelib.abtesting.explain_guardrails import GuardrailOptions
from chalicelib.abtesting.holdout_analysis import HoldoutAnalysis
from chalicelib.abtesting.models import (
    AnalysisMethod,
    CanaryState,
    CovariateRequest,
    CovariateSource,
    Experiment,
    ExperimentMetrics,
    Holdout,
    Layer,
    LayerSlice,
    ModelVariant,
    Outcome,
    OutcomeReceipt,
    RollbackPolicy,
    new_experiment_id,
)
from chalicelib.abtesting.segments import SegmentAnalysis
from chalicelib.abtesting.statistics import ExperimentAnalysis
from chalicelib.core import access, references
from chalicelib.core.errors import NotFound, SynapseError
from chalicelib.core.principal import Principal
from chalicelib.registry.errors import ModelNotFound


def _engine() -> Any:
    from chalicelib.abtesting.engine import get_ab_engine

    return get_ab_engine()


def _rollback() -> Any:
    from chalicelib.abtesting.rollback import get_rollback_manager

    return get_rollback_manager()


def _layers() -> Any:
    from chalicelib.abtesting.layers import get_layer_service

    return get_layer_service()


def _missing(experiment_id: str) -> Any:
    return lambda: ExperimentNotFound(f"experiment {experiment_id} does not exist")


def _missing_layer(layer_id: str) -> Any:
    return lambda: LayerNotFound(f"layer {layer_id} does not exist")


# ---- access -------------------------------------------------------------------------------


def readable_experiment(principal: Principal, experiment_id: str) -> Experiment:
    """The experiment if the caller may read it (a strongly consistent read).

    Raises:
        ExperimentNotFound: Unknown or not readable (the same answer).
    """
    found = _engine().get_experiment(experiment_id)
    return access.require_read(principal, found, _missing(experiment_id))


def writable_experiment(principal: Principal, experiment_id: str) -> Experiment:
    """The experiment if the caller may change it.

    Raises:
        ExperimentNotFound: Unknown or not readable.
        Forbidden: Readable, but the caller lacks the writer role.
    """
    found = _engine().get_experiment(experiment_id)
    return access.require_write(principal, found, _missing(experiment_id))


def _cached_readable(principal: Principal, experiment_id: str) -> Experiment:
    found = _engine().cached_experiment(experiment_id)
    return access.require_read(principal, found, _missing(experiment_id))


def _cached_writable(principal: Principal, experiment_id: str) -> Experiment:
    found = _engine().cached_experiment(experiment_id)
    return access.require_write(principal, found, _missing(experiment_id))


def _check_variant_models(principal: Principal, variants: Sequence[ModelVariant]) -> None:
    from chalicelib.registry import facade as registry

    for variant in variants:
        try:
            registry.readable_version(principal, variant.model_id, variant.model_version)
        except NotFound:
            raise unknown_model_version(
                variant.variant_id, variant.model_id, variant.model_version
            ) from None


def _check_promotable(principal: Principal, experiment: Experiment, winner: str | None) -> None:
    """The caller must be able to change the model a conclusion promotes: the named winner's,
    or, when the analysis picks it, every variant's."""
    from chalicelib.registry import facade as registry

    candidates = [v for v in experiment.variants if winner is None or v.variant_id == winner]
    for variant in candidates:
        try:
            registry.writable_model(principal, variant.model_id)
        except NotFound:
            raise ModelNotFound(
                f"variant {variant.variant_id}: its model does not exist or you may not promote it"
            ) from None


# ---- experiments --------------------------------------------------------------------------


def create_experiment(
    principal: Principal,
    name: str,
    variants: Sequence[ModelVariant],
    access_groups: Sequence[str] | None = None,
    **settings: Any,
) -> Experiment:
    """Creates a draft experiment owned by the caller, visible to ``access_groups`` (default: the
    caller's groups). Every variant's model version must be readable by the caller; the
    reference pins each model's access (:mod:`chalicelib.core.references`).

    Args:
        principal: The caller.
        name: The experiment's name.
        variants: The arms.
        access_groups: Who may see it besides the owner and admins.
        **settings: The rest of :meth:`ABTestingEngine.create_experiment`'s arguments.

    Raises:
        InvalidExperiment: An inconsistent configuration, or a model version that does not exist
            or that the caller may not read (``unknown_model_version``, the same answer).
    """
    _check_variant_models(principal, variants)
    layer: LayerSlice | None = settings.get("layer")
    _check_layer(principal, layer)
    request: CovariateRequest | None = settings.pop("covariate_request", None)
    if request is not None:
        settings["covariate_source"] = _covariate_source(principal, request)
    groups = access.initial_groups(principal, access_groups)
    targets = [references.Ref("model", variant.model_id) for variant in variants]
    if layer is not None:
        targets.append(references.Ref("layer", layer.layer_id))
    if request is not None:  # the covariates' dataset stays readable by the experiment's readers
        targets.append(references.Ref("dataset", settings["covariate_source"].dataset_id))
    with references.referring(targets, "experiment", groups) as held:
        _check_variant_models(principal, variants)  # again, now that the pins hold
        _check_layer(principal, layer)
        if request is not None:
            _covariate_source(principal, request)
        experiment_id = new_experiment_id()
        with _covariate_usage(principal, settings.get("covariate_source"), experiment_id):
            experiment = _engine().create_experiment(
                name=name,
                variants=variants,
                owner=principal.principal,
                access_groups=groups,
                experiment_id=experiment_id,
                **settings,
            )
        held.bind(experiment.experiment_id)
    return experiment


@contextmanager
def _covariate_usage(
    principal: Principal, source: CovariateSource | None, experiment_id: str
) -> Iterator[None]:
    """Records the experiment's use of its covariate version *before* the experiment is
    stored, so the version is kept while outcomes are joined with it (deleting it is 409, as
    for any version an experiment used) from the moment the experiment exists; removes it
    again if the experiment is not stored (nothing half-written)."""
    if source is None:
        yield
        return
    from chalicelib.dataversion import facade as datasets

    usage = datasets.record_usage_as_system(
        source.version_id, experiment_id, COVARIATE_USAGE, principal.principal
    )
    try:
        yield
    except BaseException:
        datasets.remove_usage_as_system(usage)
        raise


COVARIATE_USAGE = "cuped_covariates"
"""The purpose of the usage record an experiment's covariate version gets."""


def _covariate_source(principal: Principal, request: CovariateRequest) -> CovariateSource:
    """The dataset version a caller names for CUPED covariates, if the caller may read it
    (404 otherwise, the answer for one that does not exist).

    Raises:
        DatasetNotFound: Unknown or not readable dataset.
        DatasetVersionNotFound: No such version or tag.
    """
    from chalicelib.dataversion import facade as datasets

    version = datasets.readable_version_ref(principal, request.dataset_id, request.version)
    return CovariateSource(
        version.dataset_id, version.version_id, version.version_number, request.user_column,
        request.covariate_column,
    )  # fmt: skip


def _check_layer(principal: Principal, layer: LayerSlice | None) -> None:
    """The caller must read the layer an experiment takes a slice of (``unknown_layer`` 422
    otherwise, the answer for a missing layer)."""
    if layer is None:
        return
    try:
        readable_layer(principal, layer.layer_id)
    except NotFound:
        raise unknown_layer(layer.layer_id) from None


def access_groups_as_system(experiment_id: str) -> list[str] | None:
    """An experiment's access groups (``None`` if it does not exist): for deciding whether a
    change of another resource's access would hide it from the experiment's readers."""
    try:
        return list(_engine().get_experiment(experiment_id).access_groups)
    except NotFound:
        return None


def list_experiments(principal: Principal, status: str | None = None) -> list[Experiment]:
    """The experiments the caller may read, newest first."""
    return access.visible(principal, _engine().list_experiments(status))


def set_access_groups(
    principal: Principal, experiment_id: str, access_groups: Sequence[str]
) -> Experiment:
    """Replaces who may see an experiment (needs write access to it)."""
    writable_experiment(principal, experiment_id)
    return _engine().set_access_groups(experiment_id, access_groups)


def start(principal: Principal, experiment_id: str) -> Experiment:
    """draft → running."""
    writable_experiment(principal, experiment_id)
    return _engine().start_experiment(experiment_id)


def pause(principal: Principal, experiment_id: str) -> Experiment:
    """running → paused."""
    writable_experiment(principal, experiment_id)
    return _engine().pause_experiment(experiment_id)


def resume(principal: Principal, experiment_id: str) -> Experiment:
    """paused → running."""
    writable_experiment(principal, experiment_id)
    return _engine().resume_experiment(experiment_id)


def conclude(principal: Principal, experiment_id: str, winner: str | None) -> Experiment:
    """Concludes; the winner's model version is promoted, so the caller must be able to change
    that model (every variant's when the analysis picks the winner)."""
    experiment = writable_experiment(principal, experiment_id)
    _check_promotable(principal, experiment, winner)
    return _engine().conclude_experiment(experiment_id, winner)


def resize_slice(principal: Principal, experiment_id: str, start: int, end: int) -> Experiment:
    """Moves a draft's layer slice, or grows a running or paused experiment's, for a caller who
    may change the experiment and read its layer (see :meth:`ABTestingEngine.resize_slice`)."""
    experiment = writable_experiment(principal, experiment_id)
    if experiment.layer is not None:
        _check_layer(principal, experiment.layer)
    return _engine().resize_slice(experiment_id, start, end)


def release_slice(principal: Principal, experiment_id: str) -> Experiment:
    """Gives up the layer slice of an experiment the caller may change, once it is concluded
    or rolled back (or while a draft); see :meth:`ABTestingEngine.release_slice`."""
    writable_experiment(principal, experiment_id)
    return _engine().release_slice(experiment_id)


def rollback(principal: Principal, experiment_id: str, reason: str) -> Experiment:
    """Rolls back now."""
    writable_experiment(principal, experiment_id)
    return _rollback().rollback_now(experiment_id, reason)


# ---- traffic and outcomes -----------------------------------------------------------------


def route(
    principal: Principal, experiment_id: str, request_id: str, user_id: str | None, sticky: bool
) -> tuple[str, int, int]:
    """``(variant_id, model_version, phase)`` for a request to an experiment the caller may
    read."""
    _cached_readable(principal, experiment_id)
    return _engine().assign_request(experiment_id, request_id, user_id, sticky)


def decide(
    principal: Principal,
    experiment_id: str,
    request_id: str,
    user_id: str | None,
    sticky: bool,
    attributes: dict[str, Any] | None = None,
) -> tuple[str | None, int, int, str]:
    """``(variant_id or None, model_version, phase, exposure)`` for a request with attributes
    to an experiment the caller may read (see ``ABTestingEngine.decide_request``)."""
    _cached_readable(principal, experiment_id)
    return _engine().decide_request(experiment_id, request_id, user_id, sticky, attributes)


def routing_config(principal: Principal, experiment_id: str) -> dict[str, Any]:
    """The routing config (for local assignment) of an experiment the caller may read, read
    fresh."""
    from chalicelib.abtesting.routing import routing_config as config_of

    return config_of(readable_experiment(principal, experiment_id))


def record_outcomes(
    principal: Principal, experiment_id: str, outcomes: Sequence[Outcome]
) -> OutcomeReceipt:
    """Records outcomes into an experiment the caller may change."""
    _cached_writable(principal, experiment_id)
    return _engine().record_outcomes(experiment_id, outcomes)


def metrics(principal: Principal, experiment_id: str) -> dict[str, ExperimentMetrics]:
    """Aggregated outcomes per variant."""
    _cached_readable(principal, experiment_id)
    return _engine().get_experiment_metrics(experiment_id)


def analysis(
    principal: Principal, experiment_id: str, method: AnalysisMethod | str | None = None
) -> ExperimentAnalysis:
    """Significance, guardrails, SRM and a recommendation (``method``: the experiment's own
    when ``None``). CUPED results from covariates joined from a dataset version are shown only
    to a caller who may read that version (they are computed from its values)."""
    experiment = _cached_readable(principal, experiment_id)
    found = _engine().analyze_experiment(experiment_id, method)
    if experiment.covariate_source is None or _reads_version(
        principal, experiment.covariate_source.version_id
    ):
        return found
    return dataclasses.replace(
        found, treatments=[dataclasses.replace(t, cuped=None) for t in found.treatments]
    )


def shown(principal: Principal, experiment: Experiment) -> Experiment:
    """An experiment as the caller may see it: its ``covariate_source`` (which names a dataset
    version and two of its columns) is withheld (``None``) unless the caller may read that
    version now, as its CUPED result is in :func:`analysis`."""
    source = experiment.covariate_source
    if source is None or _reads_version(principal, source.version_id):
        return experiment
    return dataclasses.replace(experiment, covariate_source=None)


def _reads_version(principal: Principal, version_id: str) -> bool:
    """Whether the caller may read a dataset version."""
    from chalicelib.dataversion import facade as datasets

    try:
        datasets.readable_version(principal, version_id)
    except SynapseError:
        return False
    return True


def segments(
    principal: Principal, experiment_id: str, method: AnalysisMethod | str | None = None
) -> SegmentAnalysis:
    """The primary metric per segment, corrected across segments, with the top and flagged
    segments (``method``: the experiment's own when ``None``)."""
    _cached_readable(principal, experiment_id)
    return _engine().analyze_segments(experiment_id, method)


# ---- rollback policy ----------------------------------------------------------------------


def put_policy(principal: Principal, experiment_id: str, **settings: Any) -> RollbackPolicy:
    """Stores the automatic-rollback policy of an experiment the caller may change."""
    writable_experiment(principal, experiment_id)
    return _rollback().register_experiment(experiment_id, **settings)


def get_policy(principal: Principal, experiment_id: str) -> RollbackPolicy:
    """The policy in force for an experiment the caller may read."""
    readable_experiment(principal, experiment_id)
    return _rollback().get_policy(experiment_id)


def latest_check(
    principal: Principal, experiment_id: str
) -> tuple[CanaryState | None, RollbackPolicy]:
    """The monitor's latest canary check (``None`` before the first) and the policy in force,
    for an experiment the caller may read."""
    readable_experiment(principal, experiment_id)
    manager = _rollback()
    return manager.get_check(experiment_id), manager.get_policy(experiment_id)


# ---- explanation guardrails ---------------------------------------------------------------


def put_explanation_guardrails(
    principal: Principal,
    experiment_id: str,
    guardrails: list[dict[str, Any]],
    dataset_version_id: str | None,
    **options: Unpack[GuardrailOptions],
) -> Any:
    """Declares the explanation guardrails of an experiment the caller may change; every arm's
    model and the dataset version (when one is named) must be readable by the caller (checked
    now; the monitor follows them as the system). ``options`` as
    ``AutoRollbackManager.register_explanation_guardrails`` takes them.

    Raises:
        ExperimentNotFound: Unknown or not readable experiment.
        Forbidden: Readable, but the caller lacks the writer role.
        InvalidExperiment: An arm's model the caller may not read (``unknown_model_version``).
        DatasetVersionNotFound: Unknown or not readable dataset version.
        UnprocessableEntity: Bad guardrails (:mod:`.explain_guardrails`).
    """
    from chalicelib.dataversion import facade as datasets

    experiment = writable_experiment(principal, experiment_id)
    _check_variant_models(principal, experiment.variants)
    if dataset_version_id:
        datasets.readable_version(principal, dataset_version_id)
    return _rollback().explanations.declare(
        experiment, guardrails, dataset_version_id, declared_by=principal.principal, **options
    )


def post_explanation_inputs(
    principal: Principal, experiment_id: str, inputs: list[tuple[str, Any]]
) -> Any:
    """Offers served inputs (``(request_id, input_data)``) to the bottom-k sample that
    ``posted_inputs`` explanation guardrails explain (:mod:`.explain_inputs`), for an
    experiment the caller may change.

    Raises:
        ExperimentNotFound: Unknown or not readable experiment.
        Forbidden: Readable, but the caller lacks the writer role.
        UnprocessableEntity: A row that is not flat, finite and small, or lacks a feature of
            the experiment's models.
    """
    experiment = _cached_writable(principal, experiment_id)
    return _rollback().explanations.post_inputs(experiment, inputs)


def explanation_guardrails(principal: Principal, experiment_id: str) -> tuple[Any, Any]:
    """An experiment's explanation guardrails and their latest evaluation (``None`` before the
    monitor's first tick), for a caller who may read the experiment, every arm's model and the
    declared dataset version (the attributions describe the models and the version's rows).

    Raises:
        ExplanationGuardrailsNotFound: None declared, or a model or dataset version the caller
            may not read (the same answer, naming neither).
    """
    from chalicelib.abtesting.explain_guardrails import ExplanationGuardrailsNotFound

    experiment = readable_experiment(principal, experiment_id)
    missing = ExplanationGuardrailsNotFound(
        f"experiment {experiment_id} has no explanation guardrails"
    )
    try:
        _check_variant_models(principal, experiment.variants)
    except SynapseError:
        raise missing from None
    found = _rollback().explanations.get(experiment_id)
    if found is None:
        raise missing
    if found[0].dataset_version_id:
        # The attributions describe the version's rows too (as /explanations/drift, 404).
        from chalicelib.dataversion import facade as datasets

        try:
            datasets.readable_version(principal, found[0].dataset_version_id)
        except SynapseError:
            raise missing from None
    return found


def remove_explanation_guardrails(principal: Principal, experiment_id: str) -> None:
    """Drops the explanation guardrails of an experiment the caller may change.

    Raises:
        ExplanationGuardrailsNotFound: None declared.
    """
    from chalicelib.abtesting.explain_guardrails import ExplanationGuardrailsNotFound

    writable_experiment(principal, experiment_id)
    if not _rollback().explanations.remove(experiment_id):
        raise ExplanationGuardrailsNotFound(
            f"experiment {experiment_id} has no explanation guardrails"
        )


# ---- layers and holdouts ------------------------------------------------------------------


def readable_layer(principal: Principal, layer_id: str) -> Layer:
    """The layer if the caller may read it.

    Raises:
        LayerNotFound: Unknown or not readable (the same answer).
    """
    return access.require_read(principal, _layers().get_layer(layer_id), _missing_layer(layer_id))


def writable_layer(principal: Principal, layer_id: str) -> Layer:
    """The layer if the caller may change it (404 when not readable, 403 without the writer
    role)."""
    found = _layers().get_layer(layer_id)
    return access.require_write(principal, found, _missing_layer(layer_id))


def create_layer(
    principal: Principal,
    name: str,
    description: str = "",
    access_groups: Sequence[str] | None = None,
) -> Layer:
    """Creates an empty layer owned by the caller, visible to ``access_groups`` (default: the
    caller's groups)."""
    return _layers().create_layer(
        name, description, principal.principal, access.initial_groups(principal, access_groups)
    )


def list_layers(principal: Principal) -> list[Layer]:
    """The layers the caller may read, newest first."""
    return access.visible(principal, _layers().list_layers())


def set_layer_access(principal: Principal, layer_id: str, access_groups: Sequence[str]) -> Layer:
    """Replaces who may see a layer (needs write access to it)."""
    writable_layer(principal, layer_id)
    return _layers().set_access_groups(layer_id, access_groups)


def delete_layer(principal: Principal, layer_id: str) -> None:
    """Deletes an empty layer the caller may change (409 while an experiment takes a slice)."""
    writable_layer(principal, layer_id)
    _layers().delete_layer(layer_id)


def visible_slices(principal: Principal, layer: Layer) -> list[tuple[LayerSlice, str | None]]:
    """The layer's slices in bucket order, each with its experiment's id when the caller may
    read that experiment (``None`` otherwise: the range is shown as taken, nothing more)."""
    found = []
    for experiment_id, taken in sorted(layer.slices.items(), key=lambda item: item[1].start):
        try:
            shown: str | None = readable_experiment(principal, experiment_id).experiment_id
        except NotFound:
            shown = None
        found.append((taken, shown))
    return found


def create_holdout(
    principal: Principal, name: str, share: Any, layer_ids: Sequence[str] = ()
) -> Holdout:
    """Creates a global holdout (the route is admin-only; an admin reads every layer).

    Raises:
        InvalidExperiment: A scope layer that does not exist (``unknown_layer``, 422).
    """
    for layer_id in layer_ids:
        try:
            readable_layer(principal, layer_id)
        except NotFound:
            raise unknown_layer(layer_id) from None
    return _layers().create_holdout(name, share, layer_ids, principal.principal)


def list_holdouts(principal: Principal) -> list[Holdout]:
    """Every holdout (platform-wide settings that every routing config carries)."""
    return _layers().list_holdouts()


def get_holdout(principal: Principal, holdout_id: str) -> Holdout:
    """One holdout."""
    return _layers().get_holdout(holdout_id)


def holdout_analysis(
    principal: Principal,
    holdout_id: str,
    metric: str = "conversion_rate",
    method: str = "sequential",
    confidence_level: float = 0.95,
) -> HoldoutAnalysis:
    """The holdout's users against users of shipped variants, over the experiments it covers
    that the caller may read (the others are left out, unnamed)."""
    readable = list_experiments(principal)
    return _engine().analyze_holdout(holdout_id, metric, method, confidence_level, readable)


def delete_holdout(principal: Principal, holdout_id: str) -> None:
    """Deletes a holdout (admin-only route)."""
    _layers().delete_holdout(holdout_id)
