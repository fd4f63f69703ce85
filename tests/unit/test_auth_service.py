"""The auth logic on the in-memory key store (no AWS): issuing, verifying, caching and revoking
keys. The store itself is held to the DynamoDB one by ``test_repository_contracts.py``."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.auth.memory import InMemoryApiKeyRepository
from chalicelib.auth.service import AuthService, hash_token, key_id_of
from chalicelib.core.errors import NotFound, Unauthorized, ValidationError


class CountingStore(InMemoryApiKeyRepository):
    """The in-memory store, counting reads (a read is a DynamoDB request when deployed)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key_id: str) -> Any:
        self.reads += 1
        return super().get(key_id)


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


def test_an_issued_token_verifies_as_its_principal_and_only_its_hash_is_stored(
    store: CountingStore,
) -> None:
    service = AuthService(store, cache_ttl_seconds=30)
    issued = service.create_key("alice", ["writer", "reader", "writer"], ["ml", "ml", "a"])
    principal = service.verify(issued.token)
    assert (principal.principal, principal.key_id) == ("alice", issued.key.key_id)
    assert principal.roles == frozenset({"reader", "writer"})
    assert principal.groups == frozenset({"a", "ml"})
    stored, token_hash = store.get(issued.key.key_id)
    assert token_hash == hash_token(issued.token) and issued.token not in repr(stored)
    assert stored.roles == ["reader", "writer"] and stored.groups == ["a", "ml"]


def test_a_verified_token_is_cached_for_the_ttl_only(store: CountingStore) -> None:
    cached = AuthService(store, cache_ttl_seconds=3600)
    token = cached.create_key("alice", ["reader"]).token
    for _ in range(5):
        cached.verify(token)
    assert store.reads == 1
    uncached = AuthService(store, cache_ttl_seconds=0)
    for _ in range(3):
        uncached.verify(token)
    assert store.reads == 4


@pytest.mark.parametrize(
    "token",
    ["short", "snk_" + "x" * 600, "snk_bad key_" + "s" * 20, "snk__" + "s" * 20, "é" * 20],
)
def test_a_malformed_token_is_refused_without_a_read(store: CountingStore, token: str) -> None:
    with pytest.raises(Unauthorized, match="invalid API token"):
        AuthService(store).verify(token)
    assert store.reads == 0


def test_an_unknown_or_mismatching_token_is_refused(store: CountingStore) -> None:
    service = AuthService(store)
    token = service.create_key("alice", ["reader"]).token
    forged = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    assert key_id_of(forged) == key_id_of(token)
    with pytest.raises(Unauthorized, match="invalid API token"):
        service.verify(forged)
    with pytest.raises(Unauthorized, match="invalid API token"):
        service.verify("snk_nosuchkey_" + "s" * 30)


def test_revoking_refuses_the_token_at_once_here_and_after_the_ttl_elsewhere(
    store: CountingStore,
) -> None:
    here = AuthService(store, cache_ttl_seconds=3600)
    elsewhere = AuthService(store, cache_ttl_seconds=0)
    issued = here.create_key("alice", ["writer"])
    here.verify(issued.token)
    elsewhere.verify(issued.token)
    here.revoke_key(issued.key.key_id)
    for service in (here, elsewhere):
        with pytest.raises(Unauthorized, match="revoked"):
            service.verify(issued.token)
    with pytest.raises(NotFound):
        here.revoke_key("nosuchkey")


@pytest.mark.parametrize(
    ("principal", "roles", "token", "message"),
    [
        ("alice", [], None, "roles must be from"),
        ("alice", ["root"], None, "roles must be from"),
        ("  ", ["reader"], None, "principal must not be empty"),
        ("alice", ["reader"], "snk_a_short", "at least 16"),
        ("alice", ["reader"], "snk_bad key_" + "s" * 20, "malformed token"),
    ],
)
def test_bad_key_requests_are_refused_and_store_nothing(
    store: CountingStore, principal: str, roles: list[str], token: str | None, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        AuthService(store).create_key(principal, roles, token=token)
    assert store.list() == []


def test_ensuring_a_seeded_token_creates_it_once(store: CountingStore) -> None:
    service = AuthService(store)
    token = "snk_admin_" + "s" * 30
    first = service.ensure_key(token, "admin", ["admin"])
    again = service.ensure_key(token, "someone else", ["reader"])
    assert again == first and first.key_id == "admin"
    assert [key.principal for key in service.list_keys()] == ["admin"]
    assert service.verify(token).has_role("admin")
