"""The registry domain's errors (each maps to its HTTP status in core.errors)."""

from __future__ import annotations

from chalicelib.core.errors import NotFound, UnprocessableEntity


class ModelNotFound(NotFound):
    """No model with that id."""

    code = "model_not_found"


class ModelVersionNotFound(NotFound):
    """No such version of the model."""

    code = "model_version_not_found"


class UnsafeArtifactError(UnprocessableEntity):
    """The artifact is not a safe skops file."""

    code = "unsafe_artifact"
