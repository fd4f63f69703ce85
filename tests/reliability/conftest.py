"""Module-scoped moto for the fault-injection suites: bootstrapping every table takes seconds,
so one AWS per module is shared and each test works on resources it creates itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from chalicelib.core import aws as aws_clients
from chalicelib.core.singleton import reset_all
from tests.conftest import Http, Tokens, make_tokens


def _session_per_thread() -> Any:
    """PynamoDB creates a botocore session per table connection and loads the DynamoDB service
    model again for each (seconds for every table); one session per thread shares that work."""
    import threading

    import botocore.session

    local = threading.local()

    def get_session() -> Any:
        found = getattr(local, "session", None)
        if found is None:
            found = local.session = botocore.session.get_session()
        return found

    return get_session


@pytest.fixture(scope="module")
def module_aws() -> Iterator[Any]:
    """One moto AWS with every resource, for the whole module."""
    import pynamodb.connection.base

    from synapse_local.bootstrap import bootstrap
    from synapse_local.stack import point_tables_at

    reset_all()
    aws_clients.reset_clients()
    point_tables_at(None)
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        patch.setattr(pynamodb.connection.base, "get_session", _session_per_thread())
        yield bootstrap()
    reset_all()
    aws_clients.reset_clients()
    point_tables_at(None)


@pytest.fixture(scope="module")
def module_tokens(module_aws: Any) -> Tokens:
    """Tokens per role in the module's AWS."""
    return make_tokens()


@pytest.fixture(scope="module")
def module_http(module_aws: Any, module_tokens: Tokens) -> Iterator[Http]:
    """The Chalice test client over the app, as the writer by default."""
    from chalice.test import Client

    import app as app_module

    with Client(app_module.app, stage_name="local") as client:
        yield Http(client, module_tokens.writer)
