"""The composition root's list of DynamoDB tables: each domain hands its PynamoDB models here.

``core`` knows no domain; the local bootstrap, the tests and the deployment template create what
:func:`all_table_models` returns.
"""

from __future__ import annotations

from typing import Any


def all_table_models() -> list[Any]:
    """Every PynamoDB table model of every domain (and core's event outbox and reference pins)."""
    from chalicelib.abtesting.repository import TABLES as ABTESTING
    from chalicelib.auth.repository import TABLES as AUTH
    from chalicelib.core.events import TABLES as EVENTS
    from chalicelib.core.references import TABLES as REFERENCES
    from chalicelib.dataversion.repository import TABLES as DATAVERSION
    from chalicelib.explainability.repository import TABLES as EXPLAINABILITY
    from chalicelib.registry.repository import TABLES as REGISTRY

    return [*AUTH, *EVENTS, *REFERENCES, *REGISTRY, *ABTESTING, *DATAVERSION, *EXPLAINABILITY]


def create_all_tables() -> list[str]:
    """Creates every table that does not exist yet (idempotent); returns the table names."""
    from chalicelib.core.tables import create_all_tables as create

    return create(all_table_models())
