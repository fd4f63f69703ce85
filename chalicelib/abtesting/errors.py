"""The abtesting domain's errors (each maps to its HTTP status in core.errors)."""

from __future__ import annotations

from chalicelib.core.errors import Conflict, NotFound, UnprocessableEntity


class ExperimentNotFound(NotFound):
    """No experiment with that id."""

    code = "experiment_not_found"


class ExperimentNotRunning(Conflict):
    """The experiment has not been started, so it has no traffic to route."""

    code = "experiment_not_started"


class ExperimentStateConflict(Conflict):
    """The experiment is not in a state that allows the operation."""

    code = "invalid_state"


def slice_changed(experiment_id: str) -> ExperimentStateConflict:
    """The answer when an experiment's layer slice changed under a transition that needs it
    (a draft whose slice was released cannot start: it would route nobody)."""
    return ExperimentStateConflict(
        f"experiment {experiment_id}'s layer slice was released; an experiment with a released "
        "slice routes nobody and cannot start (create a new experiment for the layer)"
    )


class InvalidExperiment(UnprocessableEntity):
    """The experiment configuration is inconsistent."""

    code = "invalid_experiment"


def unknown_model_version(variant_id: str, model_id: str, version: int) -> InvalidExperiment:
    """The answer for a variant whose model version does not exist, or that the caller may not
    read (the two are indistinguishable)."""
    return InvalidExperiment(
        f"variant {variant_id}: model {model_id} has no version {version} in the registry",
        code="unknown_model_version",
    )


class LayerNotFound(NotFound):
    """No layer with that id (or one the caller may not read)."""

    code = "layer_not_found"


class HoldoutNotFound(NotFound):
    """No holdout with that id."""

    code = "holdout_not_found"


class SliceTaken(Conflict):
    """The slice overlaps a slice another experiment of the layer takes."""

    code = "layer_slice_taken"


def unknown_layer(layer_id: str) -> InvalidExperiment:
    """The answer for a slice of a layer that does not exist or that the caller may not read
    (the two are indistinguishable)."""
    return InvalidExperiment(f"layer {layer_id} does not exist", code="unknown_layer")
