"""Two-level explanation cache: an in-memory LRU per Lambda instance over a DynamoDB table.

The key is the sha256 of canonical JSON over everything that decides the result: model id,
version, artifact sha256 (so a re-registered artifact can never hit an old entry), the canonical
input, the explanation type and every result-changing parameter (seed, samples, background size,
class, algorithm...). Requests without a version are resolved to the production version *before*
the key is built, so promoting a version changes the key and never serves a stale answer.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chalicelib.core.clock import Clock, SystemClock
from chalicelib.explainability.loading import ModelDescriptor
from chalicelib.explainability.models import PredictionExplanation
from chalicelib.explainability.ports import ExplanationCacheStore
from chalicelib.explainability.repository import CachedItem

DEFAULT_TTL = timedelta(days=1)
# How long an instance trusts a model's generation before reading it again (one GetItem).
GENERATION_TTL = timedelta(seconds=1)
# Bumped when the engines change how a result is computed, so no answer of the old code is
# served: 2 = the whole background for linear models, per-row KernelSHAP seeds.
RESULT_REVISION = 2


def cache_key(
    descriptor: ModelDescriptor,
    explanation_type: str,
    canonical_input: Any,
    parameters: dict[str, Any],
) -> str:
    """The content hash identifying one explanation.

    Args:
        descriptor: The resolved model version.
        explanation_type: ``shap`` or ``lime``.
        canonical_input: The validated input (feature vector, text or image).
        parameters: Every parameter that changes the result.
    """
    material = {
        "revision": RESULT_REVISION,
        "model_id": descriptor.model_id,
        "version": descriptor.version,
        "artifact_sha256": descriptor.artifact_sha256,
        "background": descriptor.background_dataset_version_id,
        "type": explanation_type,
        "input": canonical_input,
        "parameters": parameters,
    }
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class _Entry:
    model_id: str
    model_version: int
    payload: dict[str, Any]
    expires_at: datetime


class ExplanationCache:
    """Caches explanations in memory and in DynamoDB.

    Every stored key also holds the model's *generation*, a counter kept in DynamoDB that each
    invalidation bumps: another instance reads it (with one GetItem at most every
    ``generation_ttl``) and from then on looks for keys of the new generation, so what it cached
    before is never served again.

    Args:
        repository: The table level (DynamoDB's :class:`~.repository.ExplanationRepository`
            or, in tests, :class:`~.in_memory.InMemoryExplanationRepository`; ``None``: memory
            only).
        max_entries: In-memory LRU size.
        ttl: Lifetime of an entry (DynamoDB TTL attribute and memory expiry).
        clock: Time source.
        generation_ttl: How long an instance trusts the generation it read.
    """

    def __init__(
        self,
        repository: ExplanationCacheStore | None = None,
        max_entries: int = 2048,
        ttl: timedelta = DEFAULT_TTL,
        clock: Clock | None = None,
        generation_ttl: timedelta = GENERATION_TTL,
    ) -> None:
        self.repository = repository
        self.max_entries = max_entries
        self.ttl = ttl
        self.clock = clock or SystemClock()
        self.generation_ttl = generation_ttl
        self._memory: OrderedDict[str, _Entry] = OrderedDict()
        self._generations: dict[str, tuple[dict[int | None, int], datetime]] = {}
        self._lock = threading.Lock()
        self._stats = {"hits": 0, "misses": 0, "memory_hits": 0, "table_hits": 0, "sets": 0}

    def generations(self, model_id: str) -> dict[int | None, int]:
        """The model's explanation generations (``None``: the model's; a version: that
        version's), read from DynamoDB at most every ``generation_ttl`` (empty without a
        repository or before any invalidation)."""
        if self.repository is None:
            return {}
        now = self.clock.now()
        with self._lock:
            found = self._generations.get(model_id)
        if found is not None and now - found[1] < self.generation_ttl:
            return found[0]
        value = self.repository.cache_generations(model_id)
        with self._lock:
            self._generations[model_id] = (value, now)
            while len(self._generations) > self.max_entries:
                self._generations.pop(next(iter(self._generations)))
        return value

    def _suffix(self, model_id: str, model_version: int | None) -> str:
        """What the current generations add to a key (nothing before any invalidation)."""
        generations = self.generations(model_id)
        model = generations.get(None, 0)
        version = 0 if model_version is None else generations.get(model_version, 0)
        return "" if model == version == 0 else f"-g{model}.{version}"

    def get(
        self, key: str, model_id: str, model_version: int | None = None
    ) -> PredictionExplanation | None:
        """The cached explanation for ``key`` (marked ``cached=True``), or ``None``.

        ``model_version`` (the version the key was built for) lets an invalidation of that
        version alone reach this lookup; without it only model-wide invalidations do.
        """
        key += self._suffix(model_id, model_version)
        now = self.clock.now()
        entry = self._memory_get(key, now)
        if entry is not None:
            self._count("hits", "memory_hits")
            return _restore(entry.payload)
        item = self.repository.cache_get(model_id, key, now) if self.repository else None
        if item is None:
            self._count("misses")
            return None
        self._memory_put(key, _Entry(model_id, item.model_version, item.payload, item.expires_at))
        self._count("hits", "table_hits")
        return _restore(item.payload)

    def get_many(
        self, keys: list[str], model_id: str, model_version: int | None = None
    ) -> list[PredictionExplanation | None]:
        """The cached explanation of each key (``None`` where missing): memory first, then one
        batched table read for the rest."""
        if keys:
            suffix = self._suffix(model_id, model_version)
            keys = [key + suffix for key in keys]
        now = self.clock.now()
        entries = [self._memory_get(key, now) for key in keys]
        answers = [None if e is None else _restore(e.payload) for e in entries]
        rest = [key for key, entry in zip(keys, entries, strict=True) if entry is None]
        items = {}
        if rest and self.repository is not None:
            items = self.repository.cache_get_many(model_id, rest, now)
        for i, key in enumerate(keys):
            if answers[i] is not None:
                self._count("hits", "memory_hits")
            elif key in items:
                item = items[key]
                entry = _Entry(model_id, item.model_version, item.payload, item.expires_at)
                self._memory_put(key, entry)
                answers[i] = _restore(item.payload)
                self._count("hits", "table_hits")
            else:
                self._count("misses")
        return answers

    def set_many(self, pairs: list[tuple[str, PredictionExplanation]]) -> None:
        """Stores explanations under their keys in both levels (batched table writes)."""
        now = self.clock.now()
        items = []
        for key, explanation in pairs:
            key += self._suffix(explanation.model_id, explanation.model_version)
            payload = explanation.to_dict()
            payload["cached"] = False
            model_id, version = explanation.model_id, explanation.model_version
            self._memory_put(key, _Entry(model_id, version, payload, now + self.ttl))
            items.append(CachedItem(model_id, key, version, payload, now + self.ttl))
        if self.repository is not None and items:
            self.repository.cache_put_many(items, now)
        self._count(*["sets"] * len(items))

    def set(self, key: str, explanation: PredictionExplanation) -> None:
        """Stores an explanation under ``key`` in both levels."""
        key += self._suffix(explanation.model_id, explanation.model_version)
        payload = explanation.to_dict()
        payload["cached"] = False
        expires_at = self.clock.now() + self.ttl
        model_id, version = explanation.model_id, explanation.model_version
        self._memory_put(key, _Entry(model_id, version, payload, expires_at))
        if self.repository is not None:
            item = CachedItem(model_id, key, version, payload, expires_at)
            self.repository.cache_put(item, self.clock.now())
        self._count("sets")

    def remember(self, key: str, explanation: PredictionExplanation) -> None:
        """Keeps an explanation in the memory level only (another process stored the table item)."""
        key += self._suffix(explanation.model_id, explanation.model_version)
        payload = explanation.to_dict()
        payload["cached"] = False
        entry = _Entry(
            explanation.model_id, explanation.model_version, payload, self.clock.now() + self.ttl
        )
        self._memory_put(key, entry)

    def invalidate_model(self, model_id: str, model_version: int | None = None) -> int:
        """Removes every cached explanation of a model (or of one version).

        The model's (or version's) generation is bumped first, so every instance stops serving
        what it cached within ``generation_ttl``; then this instance's memory entries and the
        table items are deleted.

        Returns:
            How many distinct entries were removed (memory and table together).
        """
        if self.repository is not None:
            self.repository.bump_cache_generation(model_id, model_version)
            with self._lock:
                self._generations.pop(model_id, None)  # read the new generations on next use
        removed: set[str] = set()
        with self._lock:
            for key, entry in list(self._memory.items()):
                same_version = model_version is None or entry.model_version == model_version
                if entry.model_id == model_id and same_version:
                    del self._memory[key]
                    removed.add(key)
        if self.repository is not None:
            removed |= self.repository.cache_delete_model(model_id, model_version)
        return len(removed)

    def get_cache_stats(self) -> dict[str, Any]:
        """Hits, misses, hit rate and in-memory size of this instance."""
        with self._lock:
            stats = dict(self._stats)
            size = len(self._memory)
        lookups = stats["hits"] + stats["misses"]
        return {
            **stats,
            "hit_rate": stats["hits"] / lookups if lookups else 0.0,
            "size": size,
            "max_entries": self.max_entries,
            "ttl_seconds": int(self.ttl.total_seconds()),
        }

    def clear_memory(self) -> None:
        """Drops the in-memory level (the table level stays)."""
        with self._lock:
            self._memory.clear()

    def _memory_get(self, key: str, now: datetime) -> _Entry | None:
        with self._lock:
            entry = self._memory.get(key)
            if entry is None:
                return None
            if entry.expires_at <= now:
                del self._memory[key]
                return None
            self._memory.move_to_end(key)
            return entry

    def _memory_put(self, key: str, entry: _Entry) -> None:
        with self._lock:
            self._memory[key] = entry
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_entries:
                self._memory.popitem(last=False)

    def _count(self, *names: str) -> None:
        with self._lock:
            for name in names:
                self._stats[name] += 1


def _restore(payload: dict[str, Any]) -> PredictionExplanation:
    explanation = PredictionExplanation.from_dict(payload)
    explanation.cached = True
    return explanation
