"""DynamoDB table plumbing shared by every domain: table metadata from the environment,
transactions, unique-name saves and idempotent table creation.

Core knows no domain: which tables exist is :func:`chalicelib.domains.all_table_models`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from chalicelib.core.config import endpoint_url, region, table_name


def _share_botocore_sessions() -> None:
    """Makes PynamoDB share one botocore session per thread across all table classes.

    PynamoDB builds a session per table connection and each one loads the DynamoDB service model
    again: tens of milliseconds per table on every cold start. Sessions are not thread-safe, so
    each thread gets its own.
    """
    import pynamodb.connection.base as base

    if getattr(base.get_session, "_shared", False):
        return
    local = threading.local()
    create = base.get_session

    def get_session() -> Any:
        found = getattr(local, "session", None)
        if found is None:
            found = local.session = create()
        return found

    get_session._shared = True  # type: ignore[attr-defined]
    base.get_session = get_session


_share_botocore_sessions()


def meta(env_var: str, suffix: str) -> Any:
    """Builds a PynamoDB ``Meta`` class whose table name comes from ``env_var``.

    Args:
        env_var: Environment variable with the table name (``EXPERIMENTS_TABLE``).
        suffix: Default name suffix after ``SYNAPSE_TABLE_PREFIX``.
    """
    attrs = {
        "table_name": table_name(env_var, suffix),
        "region": region(),
        "host": endpoint_url(),
        "billing_mode": "PAY_PER_REQUEST",
        "env_var": env_var,
        # Retries after the first try: throttling waits at most 1 + 2 + 4 = 7 s (see core.aws).
        "max_retry_attempts": 3,
    }
    return type("Meta", (), attrs)


def string_list(null: bool = False) -> Any:
    """A DynamoDB list of strings (``L`` of ``S``): empty by default, or absent when ``null``.

    PynamoDB types a ``ListAttribute``'s value as a list of its element *attribute* class
    (``list[UnicodeAttribute]``) although it holds ``str``; the attribute is typed ``Any`` here
    and read through ``list[str]`` where it is used.
    """
    from pynamodb.attributes import ListAttribute, UnicodeAttribute

    if null:
        return ListAttribute(of=UnicodeAttribute, null=True)
    return ListAttribute(of=UnicodeAttribute, default=list)


def transaction_connection() -> Any:
    """The PynamoDB connection for ``TransactWrite`` in the configured region and endpoint
    (one per process, dropped with the clients by :func:`chalicelib.core.aws.reset_clients`)."""
    from chalicelib.core import aws

    return aws.transaction_connection()


def cancellation_codes(exc: Any) -> list[str]:
    """Per-item cancellation codes of a failed transaction, aligned with its items (``""`` none)."""
    reasons = getattr(exc, "cancellation_reasons", None) or []
    return [(reason.code if reason else "") or "" for reason in reasons]


def save_with_unique_key(
    key_item: Any, key_attribute: Any, item: Any, item_attribute: Any, conflict_message: str
) -> None:
    """Saves ``item`` and ``key_item`` (which reserves a unique name) in one transaction.

    Raises:
        Conflict: The name is reserved already (or the item exists).
    """
    from pynamodb.exceptions import TransactWriteError
    from pynamodb.transactions import TransactWrite

    from chalicelib.core.errors import Conflict

    try:
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.save(key_item, condition=key_attribute.does_not_exist())
            tx.save(item, condition=item_attribute.does_not_exist())
    except TransactWriteError as exc:
        if "ConditionalCheckFailed" in cancellation_codes(exc):
            raise Conflict(conflict_message) from None
        raise


def create_all_tables(models: Iterable[Any]) -> list[str]:
    """Creates each table of ``models`` that does not exist yet (idempotent).

    Args:
        models: PynamoDB models (:func:`chalicelib.domains.all_table_models`).

    Returns:
        The table names.
    """
    names = []
    existing = _existing_table_names()
    for model in models:
        if model.Meta.table_name not in existing:
            # PynamoDB's create_table asks once more whether the table exists, creates it, waits
            # for ACTIVE and enables its TTL attribute (if it declares one).
            model.create_table(wait=True, billing_mode="PAY_PER_REQUEST")
        else:
            add_missing_indexes(model)
        names.append(model.Meta.table_name)
    return names


def _existing_table_names() -> set[str]:
    """Every table name of the account and region (one ``ListTables`` per 100 tables, where
    asking each model ``exists()`` cost a request per table: a local stack starts with 26)."""
    from chalicelib.core import aws

    pages = aws.client("dynamodb").get_paginator("list_tables").paginate()
    return {name for page in pages for name in page.get("TableNames", [])}


def add_missing_indexes(model: Any) -> list[str]:
    """Adds the global secondary indexes a model declares that its existing table lacks (a
    table kept from before the index, as the local stack's persisted state); returns their
    names."""
    from chalicelib.core import aws

    client = aws.client("dynamodb")
    table = client.describe_table(TableName=model.Meta.table_name)["Table"]
    present = {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])}
    added = []
    for index in model._get_schema().get("global_secondary_indexes", []):
        if index["index_name"] in present:
            continue
        client.update_table(
            TableName=model.Meta.table_name,
            AttributeDefinitions=index["attribute_definitions"],
            GlobalSecondaryIndexUpdates=[
                {
                    "Create": {
                        "IndexName": index["index_name"],
                        "KeySchema": index["key_schema"],
                        "Projection": index["projection"],
                    }
                }
            ],
        )
        added.append(index["index_name"])
    return added
