"""Bodies that run once per process (cached loaders, one-time hooks), run here again with their
cache emptied: the first test to reach one in a worker may be one that ``make test`` runs
untraced (``tests/untraced_tests.txt``), so these keep each body measured and checked whatever
order the modules run in."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from moto import mock_aws


def test_the_openapi_document_is_built_once_and_then_served_from_the_cache(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chalicelib.core.openapi import build_openapi
    from chalicelib.system import api as system_api

    cache: dict[str, Any] = {}
    monkeypatch.setattr(system_api, "_openapi_cache", cache)

    first = client.http.get("/openapi.json")
    assert first.status_code == 200
    assert json.loads(first.body) == json.loads(json.dumps(build_openapi()))
    built = cache["doc"]
    second = client.http.get("/openapi.json")
    assert second.body == first.body and cache["doc"] is built  # not built again


def test_the_console_files_are_read_once_with_their_types(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.system import console

    monkeypatch.setattr(console, "_files", {})

    found = console.assets()

    on_disk = {
        path.name: (console.TYPES[path.suffix], path.read_text(encoding="utf-8"))
        for path in console.STATIC.iterdir()
        if path.suffix in console.TYPES and path.is_file()
    }
    assert found == on_disk and {"index.html", "app.js"} <= set(found)
    assert console.assets() is found  # read once


def test_the_call_counter_hooks_clients_made_after_it_is_installed_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3
    from botocore.client import ClientCreator

    from synapse_local import awscalls

    monkeypatch.setattr(awscalls, "_installed", False)
    # botocore's own create_client (an earlier test of this process may have hooked it),
    # restored with the hook after the test
    hooked = ClientCreator.create_client
    monkeypatch.setattr(ClientCreator, "create_client", getattr(hooked, "__wrapped__", hooked))
    with mock_aws():
        awscalls._install_hook()
        awscalls._install_hook()  # idempotent: a second call adds no second hook
        with awscalls.AwsCallCounter() as calls:
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.list_buckets()
            s3.list_buckets()
    assert calls.calls == {("s3", "ListBuckets"): 2}


def test_a_module_is_imported_on_a_thread_of_its_own_the_first_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chalicelib.core.imports import import_clean

    name = "colorsys"
    monkeypatch.delitem(sys.modules, name, raising=False)

    module = import_clean(name)

    assert module.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)
    assert sys.modules[name] is module and import_clean(name) is module
    with pytest.raises(ModuleNotFoundError):
        import_clean("synapse_no_such_module")
