"""The data versioning's storage in memory: :class:`~chalicelib.dataversion.ports.LineageStore`
for tests of the lineage logic without AWS (the pattern of Chalice's ``InMemoryTodoDB``). Same
results as the DynamoDB repository (one contract suite runs against both); each operation is
atomic under one lock, as a transaction is in DynamoDB."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable

from chalicelib.dataversion.models import LineageEdge, LineageNode


class InMemoryLineageRepository:
    """Nodes by id and edges by (node, direction, other node)."""

    def __init__(self) -> None:
        self._nodes: dict[str, LineageNode] = {}
        self._edges: dict[tuple[str, str], dict[str, LineageEdge]] = {}
        self._lock = threading.Lock()

    def put_node(self, node: LineageNode) -> None:
        """Stores (or replaces) a node's metadata (its traversal depth is not stored)."""
        with self._lock:
            self._nodes[node.version_id] = dataclasses.replace(node, depth=0)

    def put_edge(self, edge: LineageEdge) -> None:
        """Stores both directions of an edge at once (idempotent)."""
        with self._lock:
            self._edges.setdefault((edge.child_id, "up"), {})[edge.parent_id] = edge
            self._edges.setdefault((edge.parent_id, "down"), {})[edge.child_id] = edge

    def get_nodes(self, node_ids: Iterable[str]) -> dict[str, LineageNode]:
        """The stored nodes among ``node_ids``, by id (unknown ids are left out)."""
        with self._lock:
            found = [self._nodes[i] for i in dict.fromkeys(node_ids) if i in self._nodes]
        return {node.version_id: dataclasses.replace(node) for node in found}

    def edges(self, node_id: str, direction: str) -> list[LineageEdge]:
        """A node's edges ``up`` (to parents) or ``down`` (to children), ordered by the id of
        the node at their other end."""
        key = (node_id, "up" if direction == "up" else "down")
        with self._lock:
            found = self._edges.get(key, {})
            return [found[other] for other in sorted(found)]
