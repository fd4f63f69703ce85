"""Lineage DAG: upstream/downstream traversal, depth limits, common ancestors, cycle refusal,
reproducibility order, and reads proportional to the visited subgraph."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from chalicelib.dataversion.errors import LineageCycleError
from chalicelib.dataversion.lineage import LineageGraph
from chalicelib.dataversion.memory import InMemoryLineageRepository
from chalicelib.dataversion.models import (
    DatasetFormat,
    DatasetVersion,
    TransformationRecord,
    TransformationType,
)

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


class CountingRepository(InMemoryLineageRepository):
    """Counts the edge queries a traversal makes (in memory: the DynamoDB repository passes
    the same contract, ``tests/unit/test_repository_contracts.py``)."""

    def __init__(self) -> None:
        super().__init__()
        self.edge_queries = 0

    def edges(self, node_id: str, direction: str) -> Any:
        self.edge_queries += 1
        return super().edges(node_id, direction)


def version(name: str, minute: int) -> DatasetVersion:
    return DatasetVersion(
        version_id=name,
        dataset_id=f"ds-{name[0]}",
        version_number=minute + 1,
        sha256=name * 4,
        size_bytes=1,
        storage_key="k",
        format=DatasetFormat.CSV,
        schema=None,
        row_count=1,
        parent_version_ids=[],
        transformation_id=None,
        tags={},
        created_by="",
        created_at=START + timedelta(minutes=minute),
    )


def record(kind: TransformationType) -> TransformationRecord:
    return TransformationRecord(
        transformation_id=f"tr-{kind.value}",
        type=kind,
        params={},
        source_version_ids=[],
        output_version_ids={},
        fitted_params={},
        replayable=True,
        code_hash=None,
        created_by="",
        created_at=START,
    )


@pytest.fixture
def counting() -> CountingRepository:
    """The lineage repository of ``graph``, counting its edge queries."""
    return CountingRepository()


@pytest.fixture
def graph(counting: CountingRepository) -> LineageGraph:
    """raw → clean → joined ← lookup; joined → train, joined → test; train → model_input."""
    built = LineageGraph(counting)
    for minute, name in enumerate(["raw", "lookup", "clean", "joined", "train", "test", "mi"]):
        built.add_version_node(version(name, minute))
    built.add_transformation_edge(["raw"], "clean", record(TransformationType.FILTER))
    built.add_transformation_edge(["clean", "lookup"], "joined", record(TransformationType.JOIN))
    split = record(TransformationType.SPLIT)
    built.add_transformation_edge(["joined"], "train", split)
    built.add_transformation_edge(["joined"], "test", split)
    built.add_transformation_edge(["train"], "mi")
    return built


def test_upstream_lineage_lists_every_ancestor_with_its_depth(graph: LineageGraph) -> None:
    view = graph.get_upstream_lineage("mi")
    depths = {node.version_id: node.depth for node in view.nodes}
    assert depths == {"mi": 0, "train": 1, "joined": 2, "clean": 3, "lookup": 3, "raw": 4}
    assert view.ids[0] == "mi"
    assert view.truncated is False
    join_edges = [e for e in view.edges if e.child_id == "joined"]
    assert {e.parent_id for e in join_edges} == {"clean", "lookup"}
    assert {e.transformation_type for e in join_edges} == {"join"}
    assert view.nodes[0].dataset_id == "ds-m" and view.nodes[0].created_at is not None


def test_downstream_lineage_lists_every_descendant(graph: LineageGraph) -> None:
    view = graph.get_downstream_lineage("raw")
    assert {node.version_id: node.depth for node in view.nodes} == {
        "raw": 0,
        "clean": 1,
        "joined": 2,
        "train": 3,
        "test": 3,
        "mi": 4,
    }
    plain = [e for e in view.edges if e.child_id == "mi"]
    assert plain[0].transformation_id is None


def test_max_depth_limits_the_traversal_and_says_so(graph: LineageGraph) -> None:
    view = graph.get_upstream_lineage("mi", max_depth=2)
    assert view.ids == ["mi", "train", "joined"]
    assert view.truncated is True
    assert graph.get_upstream_lineage("mi", max_depth=0).ids == ["mi"]
    whole = graph.get_upstream_lineage("mi", max_depth=4)
    assert whole.truncated is False and len(whole.nodes) == 6
    leaf = graph.get_downstream_lineage("mi", max_depth=1)
    assert leaf.ids == ["mi"] and leaf.truncated is False


def test_traversal_reads_only_the_visited_subgraph(
    graph: LineageGraph, counting: CountingRepository
) -> None:
    repository = counting
    for index in range(30):  # an unrelated part of the graph
        graph.add_transformation_edge([f"other-{index}"], f"other-{index + 1}")
    repository.edge_queries = 0
    graph.get_upstream_lineage("train")
    assert repository.edge_queries == 5  # train, joined, clean, lookup, raw


def test_common_ancestors_are_listed_nearest_first(graph: LineageGraph) -> None:
    common = graph.find_common_ancestors("train", "test")
    assert [node.version_id for node in common] == ["joined", "clean", "lookup", "raw"]
    assert common[0].depth == 1
    assert [n.version_id for n in graph.find_common_ancestors("mi", "train")][0] == "train"
    assert graph.find_common_ancestors("raw", "lookup") == []


def test_an_edge_that_would_close_a_cycle_is_refused(graph: LineageGraph) -> None:
    with pytest.raises(LineageCycleError) as raised:
        graph.add_transformation_edge(["mi"], "raw")
    assert raised.value.details == ["raw", "clean", "joined", "train", "mi", "raw"]
    with pytest.raises(LineageCycleError):
        graph.add_transformation_edge(["clean"], "clean")
    assert graph.get_downstream_lineage("mi").ids == ["mi"]
    assert graph.detect_cycles(["lookup"], "raw") == []
    assert graph.detect_cycles(["test"], "lookup") == ["lookup", "joined", "test", "lookup"]
    assert graph.detect_cycles(["test", "mi"], "joined")[0] == "joined"


def test_detect_cycles_skips_already_seen_nodes_in_diamonds() -> None:
    built = LineageGraph(InMemoryLineageRepository())
    built.add_transformation_edge(["a"], "b")
    built.add_transformation_edge(["a"], "c")
    built.add_transformation_edge(["b", "c"], "d")
    assert built.detect_cycles(["x"], "a") == []
    assert built.detect_cycles(["d"], "a") in (["a", "b", "d", "a"], ["a", "c", "d", "a"])


def test_reproducibility_chain_is_ordered_roots_first(graph: LineageGraph) -> None:
    nodes, edges = graph.get_reproducibility_chain("train")
    order = [node.version_id for node in nodes]
    assert order == ["raw", "lookup", "clean", "joined", "train"]
    assert len(edges) == 4


def test_nodes_known_only_from_edges_have_placeholders() -> None:
    built = LineageGraph(InMemoryLineageRepository())
    built.add_transformation_edge(["p1", "p2"], "child")
    view = built.get_upstream_lineage("child")
    assert {node.version_id for node in view.nodes} == {"child", "p1", "p2"}
    assert all(node.created_at is None and node.dataset_id == "" for node in view.nodes)
    nodes, _ = built.get_reproducibility_chain("child")
    assert [node.version_id for node in nodes] == ["p1", "p2", "child"]
