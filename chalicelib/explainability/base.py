"""What the SHAP and LIME engines share: the cache/event flow, explainer LRU and class handling."""

from __future__ import annotations

import gc
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import compress, islice
from operator import itemgetter
from typing import Any

import numpy as np

from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.errors import UnprocessableEntity, ValidationError
from chalicelib.core.events import EventBus
from chalicelib.core.observability import record_latency
from chalicelib.explainability.budget import before_compute
from chalicelib.explainability.cache import ExplanationCache, cache_key
from chalicelib.explainability.loading import LoadedModel, ModelDescriptor, ModelLoader
from chalicelib.explainability.models import FeatureContribution, PredictionExplanation

TOP_FEATURES = 5
_CLASSIFIER_TASKS = {
    "text_classification": "a text classifier",
    "image_classification": "an image classifier",
}


class ExplainerBase:
    """Shared plumbing of the engines.

    Args:
        model_loader: Resolves and loads model versions.
        cache: Explanation cache (``None``: always compute).
        event_bus: Receives ``ExplanationCompleted`` (``None``: no events).
        clock: Time source.
        explainer_cache_size: Built explainers kept per loaded model.
    """

    explanation_type = ""

    def __init__(
        self,
        model_loader: ModelLoader,
        cache: ExplanationCache | None = None,
        event_bus: EventBus | None = None,
        clock: Clock | None = None,
        explainer_cache_size: int = 16,
    ) -> None:
        self.model_loader = model_loader
        self.cache = cache
        self.event_bus = event_bus
        self.clock = clock or SystemClock()
        self._explainer_cache_size = explainer_cache_size
        self._lock = threading.Lock()

    def _describe_classifier(
        self, model_id: str, model_version: int | None, task: str
    ) -> ModelDescriptor:
        """The version's descriptor if its task is ``task`` (a text or image classifier).

        Raises:
            UnprocessableEntity: The model has another task.
        """
        descriptor = self.model_loader.describe(model_id, model_version)
        require(
            descriptor.task == task,
            f"model '{model_id}' is not {_CLASSIFIER_TASKS[task]} ({descriptor.task})",
        )
        return descriptor

    def _explainer(self, owner: LoadedModel, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        """A built explainer of ``owner``'s LRU, building it on a miss.

        Explainers live with the loaded model they explain (they hold it), so they leave memory
        when the model leaves the loader's byte-bounded cache, and the model is charged for them.
        """
        cache = owner.explainers
        with self._lock:
            found = cache.get(key)
            if found is not None:
                cache.move_to_end(key)
                return found
        built = build()
        with self._lock:
            cache[key] = built
            while len(cache) > self._explainer_cache_size:
                cache.popitem(last=False)
        recharge = getattr(self.model_loader, "recharge", None)
        if recharge is not None:
            recharge(owner)
        return built

    def _cached(
        self,
        descriptor: ModelDescriptor,
        canonical: Any,
        parameters: dict[str, Any],
        compute: Callable[[], PredictionExplanation],
        prediction_id: str | None = None,
    ) -> PredictionExplanation:
        """Returns the cached explanation or computes, stores and announces a new one.

        The prediction id is not part of the key (it does not change the result); a cached
        answer carries the id of the request it answers.
        """
        key = ""
        if self.cache is not None:
            key = cache_key(descriptor, self.explanation_type, canonical, parameters)
            found = self.cache.get(key, descriptor.model_id, descriptor.version)
            if found is not None:
                found.prediction_id = prediction_id
                return found
        before_compute()  # the service's admission of the estimate, if one is pending
        started = time.perf_counter()
        explanation = compute()
        explanation.computation_time_ms = (time.perf_counter() - started) * 1000
        record_latency("ExplanationComputeLatency", started, algorithm=explanation.algorithm)
        if self.cache is not None:
            self.cache.set(key, explanation)
        self._announce([explanation])
        return explanation

    def _cached_rows(
        self,
        descriptor: ModelDescriptor,
        canonicals: list[Any],
        parameters: dict[str, Any],
        compute: Callable[[list[int]], list[PredictionExplanation]],
        prediction_ids: list[str | None],
    ) -> list[PredictionExplanation]:
        """A batch through the per-row cache: each row under the key a single request for it
        uses; only the rows not found are computed (``compute(indices)``, one explainer), stored
        and announced (one event).

        A row's explanation never depends on the other rows of its batch, so a row answered from
        the cache equals the one the batch would have computed.
        """
        n = len(canonicals)
        keys = [""] * n
        found: list[PredictionExplanation | None] = [None] * n
        if self.cache is not None:
            keys = [
                cache_key(descriptor, self.explanation_type, canonical, parameters)
                for canonical in canonicals
            ]
            found = self.cache.get_many(keys, descriptor.model_id, descriptor.version)
        missing = [i for i in range(n) if found[i] is None]
        if missing:
            before_compute()
            started = time.perf_counter()
            computed = compute(missing)
            share = (time.perf_counter() - started) * 1000 / len(computed)
            for i, explanation in zip(missing, computed, strict=True):
                explanation.computation_time_ms = share
                found[i] = explanation
            if self.cache is not None:
                self.cache.set_many([(keys[i], found[i]) for i in missing])  # type: ignore[misc]
            self._announce(computed)
        answers: list[PredictionExplanation] = []
        for held, prediction_id in zip(found, prediction_ids, strict=True):
            assert held is not None
            held.prediction_id = prediction_id
            answers.append(held)
        return answers

    def _announce(self, explanations: list[PredictionExplanation]) -> None:
        if self.event_bus is None or not explanations:
            return
        first = explanations[0]
        self.event_bus.publish(
            "ExplanationCompleted",
            {
                "model_id": first.model_id,
                "model_version": first.model_version,
                "explanation_type": first.explanation_type,
                "algorithm": first.algorithm,
                "count": len(explanations),
                "explanation_ids": [e.explanation_id for e in explanations[:50]],
                "prediction_ids": [e.prediction_id for e in explanations[:50]],
                "computation_time_ms": sum(e.computation_time_ms for e in explanations),
            },
        )

    def _build_explanation(self, **values: Any) -> PredictionExplanation:
        """A :class:`PredictionExplanation` with sorted contributions and top features.

        Args:
            **values: The explanation's fields (``created_at``: default now; a batch's rows
                share one time).

        Raises:
            UnprocessableEntity: ``not_finite``, a number of the result is NaN or infinite.
        """
        contributions: list[FeatureContribution] = values.pop("feature_contributions")
        contributions = sorted(contributions, key=lambda c: -abs(c.contribution))
        _require_finite(values, contributions)
        positive = [c.feature_name for c in contributions if c.contribution > 0][:TOP_FEATURES]
        negative = sorted(
            (c for c in contributions if c.contribution < 0), key=lambda c: c.contribution
        )
        return PredictionExplanation(
            explanation_id=uuid.uuid4().hex,
            explanation_type=self.explanation_type,
            feature_contributions=contributions,
            top_positive_features=positive,
            top_negative_features=[c.feature_name for c in negative][:TOP_FEATURES],
            created_at=values.pop("created_at", None) or self.clock.now(),
            **values,
        )


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a single request 0.4 us
class RankedRows:
    """The contributions of every row of a batch, largest absolute value first, computed for
    all rows at once (one ``argsort``): the order a stable sort by ``-|contribution|`` gives,
    ties in feature order, as single explanations are ordered.

    Attributes:
        names: Per row, the feature names in rank order.
        inputs: Per row, the input values in rank order.
        values: Per row, the contributions in rank order.
    """

    names: list[list[str]]
    inputs: list[list[Any]]
    values: list[list[float]]

    @classmethod
    def of(cls, values: np.ndarray, X: np.ndarray, names: list[str]) -> RankedRows:
        """Ranks ``values`` (rows × features) of the inputs ``X`` (same shape)."""
        if len(values) == 1:
            return cls._of_one(values[0].tolist(), X[0].tolist(), names)
        order = np.argsort(-np.abs(values), axis=1, kind="stable")
        ranked = np.take_along_axis(values, order, axis=1)
        return cls(
            names=np.asarray(names, dtype=object)[order].tolist(),
            inputs=np.take_along_axis(X, order, axis=1).tolist(),
            values=ranked.tolist(),
        )

    @classmethod
    def _of_one(cls, values: list[float], inputs: list[Any], names: list[str]) -> RankedRows:
        """One row ranked in Python (a single request: cheaper than numpy's calls on 1 row).

        Python's sort is stable as numpy's ``kind="stable"``, also when reversed (equal keys
        keep their order), and ``abs(v)`` in reverse orders as ``-np.abs(v)`` does for finite
        values (the only ones ranked here), so the order is the same."""
        order = sorted(range(len(values)), key=list(map(abs, values)).__getitem__, reverse=True)
        # itemgetter of one index gives the item itself: one feature is its own order.
        take: Callable[[list[Any]], Any] = itemgetter(*order) if len(order) > 1 else tuple
        return cls([list(take(names))], [list(take(inputs))], [list(take(values))])

    def contributions(self) -> list[list[FeatureContribution]]:
        """Every row's ``feature_contributions``, in rank order."""
        contribution = FeatureContribution
        return [
            list(map(contribution, names, inputs, values))
            for names, inputs, values in zip(self.names, self.inputs, self.values, strict=True)
        ]

    def top_positive(self) -> list[list[str]]:
        """Every row's ``top_positive_features``: its largest positive contributions."""
        return self._first_names((0.0).__lt__)

    def top_negative(self) -> list[list[str]]:
        """Every row's ``top_negative_features``. Among negative contributions a larger |c| is
        a smaller c, so rank order is already most negative first, ties in feature order (what
        a stable sort by c gives)."""
        return self._first_names((0.0).__gt__)

    def _first_names(self, wanted: Callable[[float], bool]) -> list[list[str]]:
        """Every row's first :data:`TOP_FEATURES` names in rank order whose value is
        ``wanted`` (``0.0 < v``: positive; ``0.0 > v``: negative), tested in C up to the last
        one taken."""
        return [
            list(islice(compress(names, map(wanted, values)), TOP_FEATURES))
            for names, values in zip(self.names, self.values, strict=True)
        ]


def batch_ids(count: int) -> list[str]:
    """Explanation ids for the ``count`` rows of one batch (32 hex digits, like ``uuid4().hex``).

    One random UUID4 per batch, row ``i`` XORed into its last 32 bits (random bits in a UUID4):
    every id is a valid version-4 UUID, the ids of a batch are distinct, and ids of two batches
    meet only if 90 random bits do; one ``uuid4`` per batch instead of one per row.
    """
    if count > 1 << 32:
        raise ValueError("at most 2**32 ids in one batch")
    random = bytearray(os.urandom(16))
    random[6] = random[6] & 0x0F | 0x40  # version 4, as ``uuid.uuid4`` sets it
    random[8] = random[8] & 0x3F | 0x80  # the RFC 4122 variant
    if count == 1:
        return [random.hex()]  # a single request: no integer round trip
    base = int.from_bytes(random, "big")
    return [f"{base ^ i:032x}" for i in range(count)]


_PAUSE_LOCK = threading.Lock()
_pauses = 0
_resume_collection = False


@contextmanager
def collection_paused() -> Iterator[None]:
    """Pauses Python's cyclic garbage collector while a batch's result objects are built.

    Building 1,000 explanations allocates some 25,000 objects that form no reference cycle;
    with the collector on, they trigger dozens of young-generation collections and, every few
    batches, a full collection of the whole heap that costs more than building them. Paused, they
    are collected once when the collector resumes (reference counting frees them as usual). Nested
    and concurrent pauses are counted: the collector resumes when the last one ends, and only if
    it was enabled when the first one began.
    """
    global _pauses, _resume_collection
    with _PAUSE_LOCK:
        if _pauses == 0:
            _resume_collection = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _PAUSE_LOCK:
            _pauses -= 1
            if _pauses == 0 and _resume_collection:
                gc.enable()


def _require_finite(values: dict[str, Any], contributions: list[FeatureContribution]) -> None:
    """Inputs are finite (checked on the way in), but values near the limits of a double (a
    feature of 1.7e308) can overflow a model's arithmetic; such a result is refused, never
    answered with nulls in place of numbers."""
    numbers = [
        values.get("base_prediction"),
        values.get("actual_prediction"),
        values.get("additivity_error"),
        *(c.contribution for c in contributions),
    ]
    interactions = values.get("interactions")
    finite_matrix = interactions is None or bool(np.isfinite(interactions["matrix"]).all())
    if finite_matrix and all(v is None or math.isfinite(v) for v in numbers):
        return  # the common case, checked at C speed
    named = [
        ("base_prediction", numbers[0]),
        ("actual_prediction", numbers[1]),
        ("additivity_error", numbers[2]),
        *((f"contribution of '{c.feature_name}'", c.contribution) for c in contributions),
        ("an interaction value", 0.0 if finite_matrix else float("nan")),
    ]
    where, number = next((w, v) for w, v in named if v is not None and not math.isfinite(v))
    raise UnprocessableEntity(
        f"the explanation is not finite ({where} is {number}): input or background "
        "values this large overflow the model's floating-point arithmetic",
        code="not_finite",
    )


def class_labels(estimator: Any, descriptor: ModelDescriptor) -> list[str]:
    """Display names of the estimator's classes (registered names when they line up)."""
    classes = [str(c) for c in getattr(estimator, "classes_", [])]
    if descriptor.class_names and len(descriptor.class_names) == len(classes):
        return list(descriptor.class_names)
    return classes


def loaded_labels(loaded: LoadedModel) -> list[str]:
    """:func:`class_labels` of a loaded model, worked out once (shared: not to be changed)."""
    labels: list[str] = loaded.remembered(
        ("class-labels",), lambda: class_labels(loaded.estimator, loaded.descriptor)
    )
    return labels


def class_index(estimator: Any, descriptor: ModelDescriptor, class_name: str | None) -> int | None:
    """The index of ``class_name`` in ``estimator.classes_`` (``None``: not given).

    Raises:
        ValidationError: The class is unknown.
    """
    if class_name is None:
        return None
    names = class_labels(estimator, descriptor)
    raw = [str(c) for c in getattr(estimator, "classes_", [])]
    for candidates in (names, raw):
        if class_name in candidates:
            return candidates.index(class_name)
    raise ValidationError(f"unknown class_name '{class_name}'; classes are {names}")


def predicted_indices(estimator: Any, X: np.ndarray) -> np.ndarray:
    """Index in ``classes_`` of each row's predicted class."""
    predictions = estimator.predict(X)
    lookup = {value: i for i, value in enumerate(estimator.classes_.tolist())}
    return np.asarray([lookup[value] for value in predictions.tolist()], dtype=int)


def require(condition: bool, message: str) -> None:
    """Raises a 422 with ``message`` unless ``condition``."""
    if not condition:
        raise UnprocessableEntity(message)
