"""Posted inputs: a bounded uniform sample of the inputs an experiment served, for its
explanation guardrails (``"source": "posted_inputs"``).

Clients post the ``input_data`` of routed requests with their ``request_id``
(``POST /experiments/{id}/explanation-inputs``). Each request id gets a priority, the first 16
hex digits of ``sha256(experiment_id, request_id)``; the experiment keeps only the rows whose
``priority#request_id`` keys are the ``MAX_POSTED_INPUTS`` smallest (bottom-k sampling). A hash
is as good as a random draw, so the kept rows are a uniform sample without replacement of every
distinct request id ever posted, whatever the order, the batching or the number of writers; a
retried post writes the same key again (idempotent). Storage stays bounded: each post writes only
rows below the current k-th key and trims the partition back to ``MAX_POSTED_INPUTS`` rows.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.core.errors import UnprocessableEntity

if TYPE_CHECKING:
    from chalicelib.abtesting.ports import ExplanationInputRecords

MAX_POSTED_INPUTS = 500
MAX_FEATURES = 200
MAX_TEXT = 256
MAX_ROW_BYTES = 16_384


def sample_key(experiment_id: str, request_id: str) -> str:
    """``<16 hex digits of sha256>#<request_id>``: ascending keys are a uniform random order."""
    digest = hashlib.sha256(f"{experiment_id}\x1f{request_id}".encode()).hexdigest()
    return f"{digest[:16]}#{request_id}"


def check_row(index: int, row: Any, features: tuple[str, ...] = ()) -> str:
    """A posted row as stored JSON: flat, finite numbers, booleans or short strings, holding
    every name of ``features`` with a number or a string (what an explanation accepts: a row
    the models cannot be explained on would fail every evaluation it is sampled into).

    Raises:
        UnprocessableEntity: Another shape, a value that is not finite, too long or too many
            features; a feature missing or a boolean.
    """
    where = f"inputs[{index}].input_data"
    if not isinstance(row, dict) or not 1 <= len(row) <= MAX_FEATURES:
        raise UnprocessableEntity(f"{where} must be an object of 1 to {MAX_FEATURES} features")
    for name in features:
        if name not in row or isinstance(row[name], bool):
            raise UnprocessableEntity(
                f"{where}: '{name}', a feature of the experiment's models, must be a number or a "
                "string"
            )
    for name, value in row.items():
        if isinstance(value, bool) or (isinstance(value, str) and len(value) <= MAX_TEXT):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            continue
        raise UnprocessableEntity(
            f"{where}: each value must be a finite number, a boolean or a string of at most "
            f"{MAX_TEXT} characters ('{name}' is not)"
        )
    text = json.dumps(row, sort_keys=True)
    if len(text) > MAX_ROW_BYTES:
        raise UnprocessableEntity(f"{where} is over {MAX_ROW_BYTES} bytes of JSON")
    return text


@dataclass(frozen=True)
class PostedReceipt:
    """What one post did.

    Attributes:
        received: Rows in the post.
        sampled: Rows written now (their keys were below the sample's k-th key).
        held: Rows the sample holds after the post (at most ``MAX_POSTED_INPUTS``).
    """

    received: int
    sampled: int
    held: int


class PostedInputs:
    """Keeps the bottom-k sample of posted inputs per experiment.

    Args:
        store: The rows (default: DynamoDB's ``ExplanationInputStore``; tests pass
            :class:`~chalicelib.abtesting.memory.InMemoryExplanationInputStore`).
    """

    def __init__(self, store: ExplanationInputRecords | None = None) -> None:
        if store is None:
            from chalicelib.abtesting.repository import ExplanationInputStore

            store = ExplanationInputStore()
        self.store: ExplanationInputRecords = store

    def post(
        self, experiment_id: str, inputs: list[tuple[str, Any]], features: tuple[str, ...] = ()
    ) -> PostedReceipt:
        """Offers ``(request_id, input_data)`` rows to the sample (checked first: a bad row
        stores nothing); each must hold every name of ``features`` (the arms' models').

        Raises:
            UnprocessableEntity: A bad row (:func:`check_row`).
        """
        rows = {
            sample_key(experiment_id, request_id): check_row(index, row, features)
            for index, (request_id, row) in enumerate(inputs)
        }
        held = self.store.keys(experiment_id, MAX_POSTED_INPUTS)
        known = set(held)
        full = len(held) >= MAX_POSTED_INPUTS
        new = {
            key: row
            for key, row in rows.items()
            if key not in known and (not full or key < held[-1])
        }
        if new:
            self.store.add(experiment_id, new)
        total = len(held) + len(new)
        if total > MAX_POSTED_INPUTS:
            self.store.trim(experiment_id, MAX_POSTED_INPUTS)
        return PostedReceipt(len(inputs), len(new), min(total, MAX_POSTED_INPUTS))

    def sample(self, experiment_id: str, rows: int) -> list[dict[str, Any]]:
        """The ``rows`` rows of smallest key (a uniform sample of the posted request ids)."""
        return list(self.store.rows(experiment_id, min(rows, MAX_POSTED_INPUTS)))

    def count(self, experiment_id: str) -> int:
        """Rows held (at most ``MAX_POSTED_INPUTS``)."""
        return len(self.store.keys(experiment_id, MAX_POSTED_INPUTS))
