"""The explainability domain's errors (each maps to its HTTP status in core.errors)."""

from __future__ import annotations

from chalicelib.core.errors import NotFound, UnprocessableEntity


class ExplanationJobNotFound(NotFound):
    """No job with that id."""

    code = "job_not_found"


class ModelTooLarge(UnprocessableEntity):
    """Loading the model would exceed the function's model memory budget."""

    code = "model_too_large"
