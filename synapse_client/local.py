"""Local assignment and buffered outcomes: a model server routes without an HTTP call per request.

:class:`LocalExperiment` holds an experiment's routing config (``GET
/experiments/{id}/routing-config``) and assigns users with :mod:`synapse_client._assignment`, a
byte-for-byte copy of the service's own assignment code, so it agrees with ``POST /route``. It
refreshes the config when the server's ``ttl_seconds`` has passed, sending the ETag it holds (an
unchanged config costs a 304 with no body); if a refresh fails, it keeps assigning with the
config it has and tries again after ``retry_seconds``. A running bandit (``sticky_store``)
stores each user's first assignment on the service, so sticky users of a bandit are routed
with ``POST /route`` once and then remembered in an LRU, as the service's own router does.
Layers, holdouts and targeting are in the config too: :meth:`LocalExperiment.assign` with the
request's ``attributes`` keeps out exactly the requests ``POST /route`` keeps out (its
``exposure`` says why), and :meth:`OutcomeBuffer.record_assignment` records nothing for a request
that is not an exposure.

:class:`OutcomeBuffer` collects outcomes and posts them in batches (up to 1,000, the API's
limit) when ``batch_size`` is reached, every ``flush_seconds`` from a background thread, and on
``close()``. An outcome recorded from an :class:`Assignment` carries the allocation phase of
the config that assigned it, so a batch flushed after a ramp step still counts in the phase its
users were routed in. Each outcome's ``request_id`` is its idempotency key: a batch retried
after a lost answer is counted once by the service. A batch that still fails stays buffered (up to
``max_buffer`` outcomes; beyond that the oldest are dropped and counted in ``dropped``). A batch
the API refuses for its content (400, 413, 422: a request id over 256 characters, a variant the
experiment does not have) is split in halves until each refused outcome is alone; those are set
aside in ``refused`` (counted in ``rejected``) and the others are posted, so one bad outcome
never holds the rest back.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from synapse_client._assignment import IN_EXPERIMENT, Assigner
from synapse_client._assignment import NotRoutable as _NotRoutable
from synapse_client.errors import ApiError, BadRequest, NotRoutable, SynapseClientError

log = logging.getLogger("synapse_client")
Choice = tuple[str, int]
MAX_ID = 256  # POST /route's limit on a user id and a request id (characters)
# Answers that refuse a batch for what is in it: no retry of the same bytes can succeed.
REFUSED_STATUSES = frozenset({400, 413, 422})


@dataclass(frozen=True)
class Assignment:
    """Where one request goes.

    Attributes:
        experiment_id: The experiment.
        request_id: The request's id (the idempotency key of its outcome).
        variant_id: The variant (``holdout`` for a holdout user; ``None`` for a request the
            targeting or the layer keeps out, which is not an exposure).
        model_id: The variant's model (the control's for a request kept out).
        model_version: The variant's model version (the control's for a request kept out).
        phase: The allocation phase of the config that decided it (sent back with the outcome,
            so the outcome counts in that phase even when it is flushed after a ramp step);
            ``None`` when the server's config names none.
        exposure: ``experiment``, ``holdout``, ``ineligible`` or ``outside_layer``.
    """

    experiment_id: str
    request_id: str
    variant_id: str | None
    model_id: str
    model_version: int
    phase: int | None = None
    exposure: str = IN_EXPERIMENT


class LocalExperiment:
    """Assigns requests of one experiment in-process, as ``POST /route`` would.

    Args:
        client: A :class:`~synapse_client.client.Client`.
        experiment_id: The experiment.
        ttl_seconds: Refresh period (default: the server's ``ttl_seconds``).
        retry_seconds: Wait before retrying a failed refresh.
        lru_size: Bandit users remembered.
        monotonic: Time source (tests pass a fake).
    """

    def __init__(
        self,
        client: Any,
        experiment_id: str,
        ttl_seconds: float | None = None,
        retry_seconds: float = 1.0,
        lru_size: int = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self._ttl = ttl_seconds
        self._retry = retry_seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._lru: OrderedDict[str, Choice] = OrderedDict()
        self._lru_size = lru_size
        self.config: dict[str, Any] = {}
        self.etag = ""
        self.fetches = 0  # config answers with a body
        self.not_modified = 0  # 304 answers
        self.failures = 0  # refreshes that failed (the held config stayed in use)
        self._models: dict[str, str] = {}
        self._default_model = ""
        self._assigner: Assigner | None = None
        self._phase: int | None = None
        self._for_user: Callable[[str], Choice] | None = None
        self._expires = 0.0
        self.refresh()

    @property
    def phase(self) -> int | None:
        """The allocation phase of the config held (pass it to :meth:`OutcomeBuffer.record`
        with the outcome of a user placed by :meth:`variant`)."""
        return self._phase

    @property
    def revision(self) -> int:
        """The experiment revision of the config held."""
        return int(self.config.get("revision", 0))

    def refresh(self) -> bool:
        """Fetches the config if it changed (ETag); returns whether it changed.

        Raises:
            ApiError: The first fetch failed (later failures keep the held config).
        """
        try:
            found, etag = self.client.routing_config(self.experiment_id, self.etag or None)
        except SynapseClientError:
            if self._assigner is None:
                raise
            self.failures += 1
            self._expires = self._monotonic() + self._retry
            log.warning("routing config refresh failed; keeping revision %s", self.revision)
            return False
        ttl = self._ttl
        if found is None:
            self.not_modified += 1
        else:
            assigner = Assigner(found)
            phase = found.get("phase")
            with self._lock:
                self.config, self.etag = found, etag
                self._assigner, self._phase = assigner, None if phase is None else int(phase)
                self._for_user = assigner.user_picker()
                self._models = {v["variant_id"]: v["model_id"] for v in found["variants"]}
                self._default_model = found["variants"][-1]["model_id"]
                self._lru.clear()
            self.fetches += 1
        period = float(self.config.get("ttl_seconds", 5.0)) if ttl is None else ttl
        self._expires = self._monotonic() + period
        return found is not None

    def _current(self) -> tuple[Assigner, int | None]:
        if self._monotonic() >= self._expires:
            self.refresh()
        with self._lock:  # the phase of the very config that assigns
            return self._assigner, self._phase  # type: ignore[return-value]

    def variant(self, user_id: str) -> Choice:
        """``(variant_id, model_version)`` of a user without attributes (the hot path: no HTTP
        call while the config is fresh, except a bandit's first sight of a user); a user the
        experiment keeps out gets the control's.

        Raises:
            NotRoutable: The experiment is a draft.
            BadRequest: An id ``POST /route`` refuses (empty, over 256 characters, a lone
                surrogate).
        """
        if not (0 < len(user_id) <= MAX_ID and user_id.isascii()):  # the common case inline
            _check_id("user_id", user_id)
        if self._monotonic() >= self._expires:
            self.refresh()
        picker = self._for_user
        if picker is None:  # a running bandit: the service's stored assignment decides
            assigner = self._assigner
            if assigner is not None and assigner.gated and assigner.exclusion(user_id):
                return assigner.default  # kept out: the bandit stores nothing for it
            return self._stored(user_id, user_id)
        try:
            return picker(user_id)
        except _NotRoutable as exc:
            raise NotRoutable(str(exc)) from None

    def assign(
        self,
        user_id: str | None = None,
        request_id: str | None = None,
        sticky: bool = True,
        attributes: dict[str, Any] | None = None,
    ) -> Assignment:
        """The assignment of one request, with a request id for its outcome.

        Args:
            user_id: The user (sticky); without one the request id is hashed.
            request_id: The request's id (default: a new UUID).
            sticky: ``False`` hashes the request id even when a user id is given.
            attributes: What the experiment's targeting tests (as sent to ``POST /route``).

        Raises:
            NotRoutable: The experiment is a draft.
        """
        request_id = request_id or uuid.uuid4().hex
        _check_id("request_id", request_id)
        if user_id is not None:
            _check_id("user_id", user_id)
        assigner, phase = self._current()
        try:
            if assigner.needs_store(user_id, sticky) and (
                not assigner.gated or assigner.exclusion(str(user_id), attributes) is None
            ):
                variant_id, version = self._stored(str(user_id), request_id, attributes)
                exposure = IN_EXPERIMENT
            else:
                variant_id, version, exposure = assigner.decide(
                    request_id, user_id, sticky, attributes
                )
        except _NotRoutable as exc:
            raise NotRoutable(str(exc)) from None
        model_id = self._models.get(variant_id or "", self._default_model)
        return Assignment(
            self.experiment_id, request_id, variant_id, model_id, version, phase, exposure
        )

    def _stored(
        self, user_id: str, request_id: str, attributes: dict[str, Any] | None = None
    ) -> Choice:
        """A bandit user's stored variant: ``POST /route`` once, then the LRU."""
        with self._lock:
            found = self._lru.get(user_id)
            if found is not None:
                self._lru.move_to_end(user_id)
                return found
        routed = self.client.route(self.experiment_id, request_id, user_id, attributes=attributes)
        choice = (routed["variant_id"], int(routed["model_version"]))
        with self._lock:
            self._lru[user_id] = choice
            if len(self._lru) > self._lru_size:
                self._lru.popitem(last=False)
        return choice


def _refused_indices(exc: ApiError, size: int) -> set[int]:
    """Positions of the outcomes a validation error names (``OutcomeBatch.outcomes.3.field``)."""
    found = set()
    for detail in exc.details.get("details") or []:
        match = re.search(r"outcomes\.(\d+)\.", str(detail.get("field", "")) + ".")
        if match and int(match.group(1)) < size:
            found.add(int(match.group(1)))
    return found


def _check_id(field: str, value: str) -> None:
    """Refuses an id ``POST /route`` refuses (so local assignment never places a user the
    service would not): 1 to 256 characters of valid Unicode (no lone surrogate).

    Raises:
        BadRequest: As the service would answer (400 ``invalid_request``).
    """
    if 0 < len(value) <= MAX_ID and (value.isascii() or _encodable(value)):
        return
    raise BadRequest(
        400, "invalid_request", f"{field} must be 1 to {MAX_ID} characters of valid Unicode"
    )


def _encodable(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


class OutcomeBuffer:
    """Buffers outcomes of one experiment and posts them in batches.

    Args:
        client: A :class:`~synapse_client.client.Client`.
        experiment_id: The experiment.
        batch_size: Post when this many are buffered (at most 1,000).
        flush_seconds: Post what is buffered this often from a background thread (``None``:
            only on ``batch_size``, ``flush()`` and ``close()``).
        max_buffer: Outcomes kept while the API is unreachable; older ones are dropped.
    """

    def __init__(
        self,
        client: Any,
        experiment_id: str,
        batch_size: int = 500,
        flush_seconds: float | None = 5.0,
        max_buffer: int = 100_000,
    ) -> None:
        if not 1 <= batch_size <= 1000:
            raise ValueError("batch_size must be between 1 and 1000 (the API's batch limit)")
        self.client = client
        self.experiment_id = experiment_id
        self.batch_size = batch_size
        self._pending: deque[dict[str, Any]] = deque()
        self._max = max_buffer
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self.accepted = 0
        self.duplicates = 0
        self.dropped = 0
        self.rejected = 0  # outcomes the API refused (the last 1,000 are kept in ``refused``)
        self.refused: deque[tuple[dict[str, Any], ApiError]] = deque(maxlen=1000)
        self.batches = 0
        self.last_error: Exception | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if flush_seconds is not None:
            self._thread = threading.Thread(
                target=self._run, args=(flush_seconds,), name="synapse-outcomes", daemon=True
            )
            self._thread.start()

    def record(
        self,
        request_id: str,
        variant_id: str,
        success: bool,
        latency_ms: float,
        converted: bool | None = None,
        custom_metrics: dict[str, float] | None = None,
        phase: int | None = None,
        covariate: float | None = None,
        attributes: dict[str, str] | None = None,
    ) -> None:
        """Buffers one outcome (posted with the next batch).

        ``phase`` is the allocation phase the request was assigned in (``Assignment.phase``,
        ``LocalExperiment.phase``); without it the service counts the outcome in the phase in
        force when the batch arrives, which may be a later ramp step than the assignment's.
        ``covariate`` is the unit's pre-experiment value (CUPED) and ``attributes`` the values of
        the experiment's declared dimensions (segments), as ``POST .../outcomes`` takes them.
        """
        outcome: dict[str, Any] = {
            "variant_id": variant_id,
            "request_id": request_id,
            "success": bool(success),
            "latency_ms": float(latency_ms),
        }
        if converted is not None:
            outcome["converted"] = bool(converted)
        if custom_metrics:
            outcome["custom_metrics"] = dict(custom_metrics)
        if phase is not None:
            outcome["phase"] = int(phase)
        if covariate is not None:
            outcome["covariate"] = float(covariate)
        if attributes:
            outcome["attributes"] = dict(attributes)
        with self._lock:
            self._pending.append(outcome)
            while len(self._pending) > self._max:
                self._pending.popleft()
                self.dropped += 1
            full = len(self._pending) >= self.batch_size
        if full:
            self.flush(raise_errors=False)

    def record_assignment(self, assignment: Assignment, **outcome: Any) -> None:
        """Buffers the outcome of an :class:`Assignment` (its request id, variant and phase; a
        holdout user's counts as the holdout). A request the experiment kept out (targeting,
        layer) is not an exposure: nothing is recorded."""
        if assignment.variant_id is None:
            return
        outcome.setdefault("phase", assignment.phase)
        self.record(assignment.request_id, assignment.variant_id, **outcome)

    @property
    def pending(self) -> int:
        """Outcomes not yet accepted by the API."""
        return len(self._pending)

    def flush(self, raise_errors: bool = True) -> int:
        """Posts everything buffered, in batches; returns how many the API took.

        A failed batch goes back to the front of the buffer.
        """
        sent = 0
        with self._send_lock:
            while True:
                with self._lock:
                    batch = [
                        self._pending.popleft()
                        for _ in range(min(self.batch_size, len(self._pending)))
                    ]
                if not batch:
                    return sent
                try:
                    sent += self._post(batch)
                except Exception as exc:  # kept whatever failed: a flush never loses a batch
                    with self._lock:
                        self._pending.extendleft(reversed(batch))
                    self.last_error = exc
                    if raise_errors or not isinstance(exc, SynapseClientError):
                        raise
                    log.warning("outcome batch not posted (kept for the next flush): %s", exc)
                    return sent

    def _post(self, batch: list[dict[str, Any]]) -> int:
        """Posts a batch; returns how many outcomes the API took. A batch refused for its
        content is split in halves (repeats count once: request ids) until each refused outcome
        is alone, and that one is set aside."""
        try:
            receipt = self.client.record_outcomes(self.experiment_id, batch)
        except ApiError as exc:
            if exc.status not in REFUSED_STATUSES:
                raise
            named = _refused_indices(exc, len(batch))
            if named and len(batch) > 1:  # the API named the outcomes it refused: set them aside
                kept = [o for i, o in enumerate(batch) if i not in named]
                for index in sorted(named):
                    self._set_aside(batch[index], exc)
                return self._post(kept) if kept else 0
            if len(batch) > 1:
                middle = len(batch) // 2
                return self._post(batch[:middle]) + self._post(batch[middle:])
            self._set_aside(batch[0], exc)
            return 0
        self.batches += 1
        self.accepted += int(receipt.get("accepted", 0))
        self.duplicates += int(receipt.get("duplicates", 0))
        return len(batch)

    def _set_aside(self, outcome: dict[str, Any], exc: ApiError) -> None:
        self.refused.append((outcome, exc))
        self.rejected += 1
        self.last_error = exc
        log.warning("outcome %s refused (set aside): %s", outcome.get("request_id"), exc)

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                self.flush(raise_errors=False)
            except Exception:  # noqa: BLE001 - the batch is kept; the thread must keep flushing
                log.exception("outcome flush failed (kept for the next flush)")

    def close(self) -> None:
        """Stops the background thread and posts what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()

    def __enter__(self) -> OutcomeBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
