"""The lineage DAG of dataset versions.

Stored as adjacency items (see :class:`~chalicelib.dataversion.repository.LineageRepository`):
each node has its metadata item plus one item per parent (``up#``) and per child (``down#``).
A traversal reads one edge query per visited node and one batch get of node metadata per BFS
level, so its cost follows the subgraph it visits, never the whole graph. An edge that would
close a cycle is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from chalicelib.dataversion.errors import LineageCycleError
from chalicelib.dataversion.models import (
    DatasetVersion,
    LineageEdge,
    LineageNode,
    TransformationRecord,
)
from chalicelib.dataversion.ports import LineageStore
from chalicelib.dataversion.repository import LineageRepository

UP, DOWN = "up", "down"
RESTORED_FROM = "restored_from"


@dataclass
class LineageView:
    """A traversed part of the graph.

    Attributes:
        root: The version the traversal started at.
        nodes: Visited versions with their distance from the root (root first, then by depth).
        edges: Edges between visited versions.
        truncated: Whether ``max_depth`` stopped the traversal before the graph ended.
    """

    root: str
    nodes: list[LineageNode] = field(default_factory=list)
    edges: list[LineageEdge] = field(default_factory=list)
    truncated: bool = False

    @property
    def ids(self) -> list[str]:
        """Visited version ids in traversal order."""
        return [node.version_id for node in self.nodes]


class LineageGraph:
    """Adds versions and derivation edges; answers lineage questions.

    Args:
        repository: Adjacency storage (DynamoDB by default; tests pass
            :class:`~chalicelib.dataversion.memory.InMemoryLineageRepository`).
    """

    def __init__(self, repository: LineageStore | None = None) -> None:
        self.repository = repository or LineageRepository()

    def add_version_node(self, version: DatasetVersion) -> LineageNode:
        """Adds (or refreshes) the node of a version."""
        node = LineageNode(
            version_id=version.version_id,
            dataset_id=version.dataset_id,
            version_number=version.version_number,
            sha256=version.sha256,
            created_at=version.created_at,
        )
        self.repository.put_node(node)
        return node

    def add_transformation_edge(
        self,
        source_ids: Iterable[str],
        target_id: str,
        transformation: TransformationRecord | None = None,
    ) -> list[LineageEdge]:
        """Adds ``source → target`` for every source (a join has several).

        Raises:
            LineageCycleError: An edge would close a cycle; nothing is written.
        """
        sources = list(dict.fromkeys(source_ids))
        cycle = self.detect_cycles(sources, target_id)
        if cycle:
            raise LineageCycleError(
                "the edge would create a cycle: " + " -> ".join(cycle), details=cycle
            )
        edges = [
            LineageEdge(
                parent_id=source,
                child_id=target_id,
                transformation_id=transformation.transformation_id if transformation else None,
                transformation_type=transformation.type.value if transformation else None,
            )
            for source in sources
        ]
        for edge in edges:
            self.repository.put_edge(edge)
        return edges

    def add_restore_edge(self, restored_id: str, target_id: str) -> LineageEdge:
        """Records that ``target`` restores the content of ``restored`` (a ``restored_from``
        edge, no transformation). A restore is always a new version, so it cannot close a
        cycle."""
        edge = LineageEdge(
            parent_id=restored_id, child_id=target_id, transformation_type=RESTORED_FROM
        )
        self.repository.put_edge(edge)
        return edge

    def detect_cycles(self, source_ids: Iterable[str], target_id: str) -> list[str]:
        """The cycle that edges ``source → target`` would close, or ``[]`` if none.

        A cycle appears when a source is the target or is already downstream of it.
        """
        wanted = set(source_ids)
        if target_id in wanted:
            return [target_id, target_id]
        previous: dict[str, str] = {}
        frontier = [target_id]
        while frontier:
            following = []
            for node in frontier:
                for edge in self.repository.edges(node, DOWN):
                    child = edge.child_id
                    if child in previous or child == target_id:
                        continue
                    previous[child] = node
                    if child in wanted:
                        return _path(previous, target_id, child) + [target_id]
                    following.append(child)
            frontier = following
        return []

    def get_upstream_lineage(self, version_id: str, max_depth: int | None = None) -> LineageView:
        """Every version ``version_id`` derives from, up to ``max_depth`` edges away."""
        return self._traverse(version_id, UP, max_depth)

    def get_downstream_lineage(self, version_id: str, max_depth: int | None = None) -> LineageView:
        """Every version derived from ``version_id``, up to ``max_depth`` edges away."""
        return self._traverse(version_id, DOWN, max_depth)

    def _traverse(self, start: str, direction: str, max_depth: int | None) -> LineageView:
        view = LineageView(root=start)
        depths = {start: 0}
        levels = [[start]]
        frontier = [start]
        depth = 0
        while frontier:
            if max_depth is not None and depth >= max_depth:
                view.truncated = any(self.repository.edges(n, direction) for n in frontier)
                break
            depth += 1
            following = []
            for node in frontier:
                for edge in self.repository.edges(node, direction):
                    view.edges.append(edge)
                    other = edge.parent_id if direction == UP else edge.child_id
                    if other not in depths:
                        depths[other] = depth
                        following.append(other)
            if following:
                levels.append(following)
            frontier = following
        for level in levels:
            found = self.repository.get_nodes(level)
            view.nodes.extend(
                replace(found.get(node_id) or _unknown(node_id), depth=depths[node_id])
                for node_id in level
            )
        return view

    def find_common_ancestors(self, a: str, b: str) -> list[LineageNode]:
        """Versions both ``a`` and ``b`` derive from (a version counts as its own ancestor),
        nearest first; ``depth`` is the larger of the two distances."""
        left = {node.version_id: node for node in self.get_upstream_lineage(a).nodes}
        right = {node.version_id: node for node in self.get_upstream_lineage(b).nodes}
        common = [
            replace(node, depth=max(node.depth, right[node_id].depth))
            for node_id, node in left.items()
            if node_id in right
        ]
        return sorted(common, key=lambda n: (n.depth, left[n.version_id].depth, n.version_id))

    def get_reproducibility_chain(
        self, version_id: str
    ) -> tuple[list[LineageNode], list[LineageEdge]]:
        """Every ancestor of ``version_id`` and itself, ordered so each version comes after all
        the versions it derives from (roots first, the target last), with the edges."""
        view = self.get_upstream_lineage(version_id)
        parents: dict[str, set[str]] = {node.version_id: set() for node in view.nodes}
        for edge in view.edges:
            parents[edge.child_id].add(edge.parent_id)
        by_id = {node.version_id: node for node in view.nodes}
        ordered: list[LineageNode] = []
        placed: set[str] = set()
        while len(ordered) < len(by_id):
            ready = [
                node
                for node_id, node in by_id.items()
                if node_id not in placed and parents[node_id] <= placed
            ]
            ready.sort(key=lambda n: (n.created_at is None, n.created_at, n.version_id))
            ordered.append(ready[0])
            placed.add(ready[0].version_id)
        return ordered, view.edges


def _path(previous: dict[str, str], start: str, end: str) -> list[str]:
    path = [end]
    while path[-1] != start:
        path.append(previous[path[-1]])
    return list(reversed(path))


def _unknown(version_id: str) -> LineageNode:
    """A node known only from an edge (its metadata item is missing)."""
    return LineageNode(version_id, "", 0, "", None)
