"""Fixtures of the client suites: a local stack over loopback HTTP (the in-process transport for
large runs is ``tests.helpers.client.in_process_client``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.reliability.stack import running_stack


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    """A local stack (moto server + the app over loopback HTTP), one per test module."""
    with running_stack(schedule_seconds=3600) as running:
        yield running


@pytest.fixture(scope="module")
def admin(stack: Any) -> Any:
    """A client with the stack's admin token."""
    from synapse_client import Client

    return Client(stack.url, stack.admin_token)
