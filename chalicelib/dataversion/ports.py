"""The interfaces of the data versioning's storage: the lineage DAG's adjacency items (DynamoDB in
:mod:`chalicelib.dataversion.repository`), with an in-memory implementation in
:mod:`chalicelib.dataversion.memory` for tests of the lineage logic that need no AWS.

Both implementations pass one contract suite (``tests/unit/test_repository_contracts.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from chalicelib.dataversion.models import LineageEdge, LineageNode


class LineageStore(Protocol):
    """Nodes (a version's metadata) and edges of the lineage DAG, each edge readable from both
    of its ends."""

    def put_node(self, node: LineageNode) -> None:
        """Stores (or replaces) a node's metadata."""

    def put_edge(self, edge: LineageEdge) -> None:
        """Stores both directions of an edge at once (idempotent)."""

    def get_nodes(self, node_ids: Iterable[str]) -> dict[str, LineageNode]:
        """The stored nodes among ``node_ids``, by id (unknown ids are left out)."""

    def edges(self, node_id: str, direction: str) -> list[LineageEdge]:
        """A node's edges ``up`` (to parents) or ``down`` (to children), ordered by the id of
        the node at their other end."""
