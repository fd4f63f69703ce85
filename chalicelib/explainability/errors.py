"""The explainability domain's errors (each maps to its HTTP status in core.errors)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.core.errors import NotFound, UnprocessableEntity

if TYPE_CHECKING:
    from chalicelib.explainability.budget import Estimate


class ExplanationJobNotFound(NotFound):
    """No job with that id."""

    code = "job_not_found"


class ModelTooLarge(UnprocessableEntity):
    """Loading the model would exceed the function's model memory budget."""

    code = "model_too_large"


class TooExpensive(UnprocessableEntity):
    """The estimated work is over what the request may do (422 ``too_expensive``).

    ``details`` holds the estimate (seconds, model rows, values per row, the counts) and the
    limit it was compared with.
    """

    code = "too_expensive"

    @classmethod
    def over(cls, cost: Estimate, limit_seconds: float, limit_name: str) -> TooExpensive:
        """The error for ``cost`` over ``limit_seconds`` (named ``limit_name`` in the message)."""
        how = "measured on the model" if cost.measured else "the cheapest model's speed"
        message = (
            f"this explanation would take about {cost.seconds:,.1f} s ({cost.summary}; "
            f"{cost.model_calls:,} model calls, {cost.model_row_seconds * 1e6:,.2f} µs per model "
            f"row, {how}), over the limit of {limit_seconds:,.1f} s ({limit_name}); ask for "
            "fewer inputs, samples, evaluations, background rows or a smaller image"
        )
        details: dict[str, Any] = {
            "estimate": cost.to_dict(),
            "limit_seconds": limit_seconds,
            "limit": limit_name,
        }
        return cls(message, details=details)

    @classmethod
    def too_large(cls, cost: Estimate, max_values: int) -> TooExpensive:
        """The error for work that would build an array over ``max_values`` values."""
        message = (
            f"this explanation would build an array of {cost.peak_values:,} values "
            f"({cost.summary}), over the limit of {max_values:,} (1 GiB of float64); ask for "
            "fewer samples, background rows or superpixels"
        )
        details: dict[str, Any] = {
            "estimate": cost.to_dict(),
            "limit_values": max_values,
            "limit": "MAX_VALUES",
        }
        return cls(message, details=details)


def out_of_memory() -> TooExpensive:
    """The error for an explanation during which memory ran out (``MemoryError``)."""
    return TooExpensive(
        "this explanation ran out of memory (the model builds more per row than the function "
        "has); ask for fewer inputs, samples, background rows or a smaller image, or register a "
        "model that builds less per row",
        details={"limit": "memory"},
    )


class DeadlineExceeded(UnprocessableEntity):
    """The work ran out of its time (a job's deadline before the function's timeout)."""

    code = "deadline_exceeded"

    @classmethod
    def now(cls, mode: str) -> DeadlineExceeded:
        """The error raised at a checkpoint after the deadline."""
        where = "the job's deadline" if mode == "job" else "the synchronous deadline"
        return cls(
            f"the explanation was stopped at {where} (the function's time limit less a safety "
            "margin) before it finished; ask for less work"
        )


class NeedsJob(Exception):
    """Internal: synchronous work over the synchronous limit; the service makes it a job.

    Attributes:
        estimate: The estimate that did not fit (``None`` when the deadline passed instead).
    """

    def __init__(self, estimate: Estimate | None = None) -> None:
        super().__init__("the work is over the synchronous limit")
        self.estimate = estimate


class BackgroundNotFound(NotFound):
    """The model version explains against a dataset version the caller may not read (or that
    no longer exists); the answer names neither."""

    code = "background_not_found"
