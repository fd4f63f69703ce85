"""ExplanationCache: content-hash keys, memory and table levels, TTL, invalidation, stats.

The table level is the in-memory repository (one per test, shared by the test's cache
instances as they would share the DynamoDB table): the DynamoDB repository passes the same
contract (``tests/unit/test_repository_contracts.py``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from chalicelib.core.clock import FixedClock
from chalicelib.explainability.cache import ExplanationCache, cache_key
from chalicelib.explainability.in_memory import InMemoryExplanationRepository
from chalicelib.explainability.loading import ModelDescriptor
from chalicelib.explainability.models import FeatureContribution, PredictionExplanation


@pytest.fixture
def table() -> InMemoryExplanationRepository:
    """The cache table every instance of a test shares."""
    return InMemoryExplanationRepository()


DESCRIPTOR = ModelDescriptor("m1", 1, "regression", ("a", "b"), (), "sha-1")
PARAMS = {"seed": 0, "background_sample_size": 100}


def _explanation(
    model_id: str = "m1", version: int = 1, value: float = 0.25
) -> PredictionExplanation:
    return PredictionExplanation(
        explanation_id="e1",
        prediction_id="p1",
        model_id=model_id,
        model_version=version,
        explanation_type="shap",
        input_kind="tabular",
        algorithm="linear",
        output_space="raw",
        explained_class=None,
        base_prediction=1.0,
        actual_prediction=1.25,
        feature_contributions=[
            FeatureContribution("a", 2.0, value),
            FeatureContribution("b", 1.0, 0.0),
        ],
        top_positive_features=["a"],
        top_negative_features=[],
        additivity_error=0.0,
    )


def test_the_key_changes_with_everything_that_changes_the_result() -> None:
    base = cache_key(DESCRIPTOR, "shap", [1.0, 2.0], PARAMS)
    assert base == cache_key(DESCRIPTOR, "shap", [1.0, 2.0], dict(reversed(PARAMS.items())))
    variants = [
        cache_key(
            ModelDescriptor("m1", 2, "regression", ("a", "b"), (), "sha-1"),
            "shap",
            [1.0, 2.0],
            PARAMS,
        ),
        cache_key(
            ModelDescriptor("m1", 1, "regression", ("a", "b"), (), "sha-2"),
            "shap",
            [1.0, 2.0],
            PARAMS,
        ),
        cache_key(DESCRIPTOR, "lime", [1.0, 2.0], PARAMS),
        cache_key(DESCRIPTOR, "shap", [1.0, 2.5], PARAMS),
        cache_key(DESCRIPTOR, "shap", [1.0, 2.0], {**PARAMS, "seed": 1}),
        cache_key(DESCRIPTOR, "shap", [1.0, 2.0], {**PARAMS, "background_sample_size": 50}),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_memory_only_cache_counts_hits_and_misses_and_expires_entries() -> None:
    clock = FixedClock()
    cache = ExplanationCache(None, max_entries=2, ttl=timedelta(minutes=5), clock=clock)
    assert cache.get("k1", "m1") is None
    cache.set("k1", _explanation())
    found = cache.get("k1", "m1")
    assert found is not None and found.cached
    assert found.contribution_map() == {"a": 0.25, "b": 0.0}
    clock.advance(minutes=6)
    assert cache.get("k1", "m1") is None
    stats = cache.get_cache_stats()
    assert (stats["hits"], stats["misses"], stats["size"]) == (1, 2, 0)
    assert stats["hit_rate"] == pytest.approx(1 / 3)


def test_the_memory_level_is_a_bounded_lru() -> None:
    cache = ExplanationCache(None, max_entries=2)
    for key in ("k1", "k2"):
        cache.set(key, _explanation())
    cache.get("k1", "m1")
    cache.set("k3", _explanation())
    assert cache.get("k2", "m1") is None
    assert cache.get("k1", "m1") is not None
    assert cache.get_cache_stats()["size"] == 2


def test_the_table_level_serves_other_instances_until_the_ttl(
    table: InMemoryExplanationRepository,
) -> None:
    clock = FixedClock()
    writer = ExplanationCache(table, ttl=timedelta(hours=1), clock=clock)
    reader = ExplanationCache(table, ttl=timedelta(hours=1), clock=clock)
    writer.set("k1", _explanation())
    found = reader.get("k1", "m1")
    assert found is not None and found.cached and found.additivity_error == 0.0
    assert reader.get_cache_stats()["table_hits"] == 1
    assert reader.get("k1", "m1") is not None
    assert reader.get_cache_stats()["memory_hits"] == 1
    clock.advance(hours=2)
    assert ExplanationCache(table, clock=clock).get("k1", "m1") is None


def test_invalidate_model_removes_a_version_or_every_version_and_counts_them(
    table: InMemoryExplanationRepository,
) -> None:
    cache = ExplanationCache(table)
    cache.set("a1", _explanation("m1", 1))
    cache.set("a2", _explanation("m1", 1, 0.5))
    cache.set("b1", _explanation("m1", 2))
    cache.set("other", _explanation("m2", 1))
    cache.remember("mem-only", _explanation("m1", 2))
    assert cache.invalidate_model("m1", 1) == 2
    assert cache.get("a1", "m1") is None and cache.get("b1", "m1") is not None
    assert cache.invalidate_model("m1") == 2
    assert cache.get("b1", "m1") is None and cache.get("mem-only", "m1") is None
    assert cache.get("other", "m2") is not None
    assert cache.invalidate_model("m1") == 0


def test_an_oversized_payload_stays_in_memory_only(
    table: InMemoryExplanationRepository, monkeypatch: Any
) -> None:
    from chalicelib.explainability import repository

    monkeypatch.setattr(repository, "INLINE_RESULT_LIMIT", 10)
    cache = ExplanationCache(table)
    cache.set("k1", _explanation())
    assert cache.get("k1", "m1") is not None
    cache.clear_memory()
    assert cache.get("k1", "m1") is None


def test_an_invalidation_reaches_another_instance_within_the_generation_ttl(
    table: InMemoryExplanationRepository,
) -> None:
    clock = FixedClock()
    here = ExplanationCache(table, clock=clock)
    there = ExplanationCache(table, clock=clock)
    there.set("k1", _explanation("m1", 1))
    there.set("k2", _explanation("m1", 2))
    assert there.get("k1", "m1", 1) is not None  # warm in its memory level
    here.invalidate_model("m1", 1)
    clock.advance(seconds=0.5)  # inside the generation TTL the other instance may still serve
    assert there.get("k1", "m1", 1) is not None
    clock.advance(seconds=0.6)
    assert there.get("k1", "m1", 1) is None
    assert there.get("k2", "m1", 2) is not None  # another version is untouched
    here.invalidate_model("m1")
    clock.advance(seconds=1.1)
    assert there.get("k2", "m1", 2) is None
    there.set("k2", _explanation("m1", 2))  # stored in the new generation, found again
    assert here.get("k2", "m1", 2) is not None
    assert table.cache_generations("m1") == {None: 1, 1: 1}


def test_generation_items_are_not_cache_entries(table: InMemoryExplanationRepository) -> None:
    cache = ExplanationCache(table)
    cache.invalidate_model("m1")
    cache.set("a1", _explanation("m1", 1))
    assert cache.invalidate_model("m1") == 1  # the entry, not the generation item
    assert table.cache_generations("m1") == {None: 2}


def test_the_generation_item_uses_the_cache_tables_connection(aws: Any) -> None:
    # The local stack and the tests re-point the listed tables (chalicelib.domains) at their
    # endpoint by dropping each table's connection; the generation item must follow.
    from chalicelib.explainability.repository import (
        ExplanationCacheTable,
        ExplanationGenerationItem,
    )

    ExplanationCacheTable._connection = None
    assert ExplanationGenerationItem._get_connection() is ExplanationCacheTable._get_connection()
