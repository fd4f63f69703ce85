"""Issuing, revoking and checking API keys.

Tokens are ``snk_<key_id>_<secret>``; only their sha256 is stored. The key id is part of the
token so a check is one consistent DynamoDB read, cached in memory for ``SYNAPSE_AUTH_CACHE_TTL``
seconds (default 30) so that hot routes do not read DynamoDB on every request. Revoking through
this instance takes effect at once; other Lambda instances stop accepting the token within the
cache TTL.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass

from chalicelib.auth.models import ApiKey, Principal, Role
from chalicelib.auth.ports import ApiKeyStore
from chalicelib.auth.repository import ApiKeyRepository
from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.errors import Forbidden, NotFound, Unauthorized, ValidationError
from chalicelib.core.singleton import lazy

TOKEN_PREFIX = "snk_"
# What a well-formed token can be: printable ASCII of bounded length, whose key id (the part
# between the first two underscores of an ``snk_`` token) is a short plain name. Anything else
# is refused as a 401 before DynamoDB is asked (an empty or oversized key id is not a lookup).
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 512
_KEY_ID = re.compile(r"[A-Za-z0-9.-]{1,64}")
_TOKEN_CHARS = re.compile(r"[!-~]+")  # printable ASCII, no spaces


def hash_token(token: str) -> str:
    """sha256 hex of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def key_id_of(token: str) -> str:
    """The key id carried by a token (derived from the hash for tokens of another shape)."""
    if token.startswith(TOKEN_PREFIX) and token.count("_") >= 2:
        return token.split("_", 2)[1]
    return "k" + hash_token(token)[:19]


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be an API token (``None`` when its shape is fine)."""
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        return f"it is not {MIN_TOKEN_CHARS}-{MAX_TOKEN_CHARS} characters long"
    if not _TOKEN_CHARS.fullmatch(token):
        return "it is not printable ASCII without spaces"
    if not _KEY_ID.fullmatch(key_id_of(token)):
        return (
            "its key id (between the first two underscores) is not 1-64 letters, digits, '.' or '-'"
        )
    return None


@dataclass(frozen=True)
class IssuedKey:
    """A newly created key: the token is shown once and never again."""

    key: ApiKey
    token: str


class AuthService:
    """Creates, revokes and verifies API keys.

    Args:
        repository: Key storage.
        clock: Time source.
        cache_ttl_seconds: How long a verified token is trusted without reading DynamoDB.
    """

    def __init__(
        self,
        repository: ApiKeyStore | None = None,
        clock: Clock | None = None,
        cache_ttl_seconds: float | None = None,
    ) -> None:
        self.repository: ApiKeyStore = repository or ApiKeyRepository()
        self.clock = clock or SystemClock()
        ttl = os.environ.get("SYNAPSE_AUTH_CACHE_TTL", "30")
        self.cache_ttl = float(ttl) if cache_ttl_seconds is None else cache_ttl_seconds
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def create_key(
        self,
        principal: str,
        roles: list[str],
        groups: list[str] | None = None,
        description: str = "",
        token: str | None = None,
    ) -> IssuedKey:
        """Creates a key and returns the token (shown once).

        Args:
            principal: Who the key belongs to.
            roles: Roles from ``reader``, ``writer``, ``admin``.
            groups: Access groups.
            description: Free text.
            token: Use this token instead of a random one (local stack's seeded admin token).

        Raises:
            ValidationError: Unknown role, empty principal or a token shorter than 16 characters.
        """
        unknown = sorted(set(roles) - {r.value for r in Role})
        if unknown or not roles:
            raise ValidationError(f"roles must be from reader, writer, admin; got {roles}")
        if not principal.strip():
            raise ValidationError("principal must not be empty")
        if token is not None and len(token) < MIN_TOKEN_CHARS:
            raise ValidationError(f"a token must be at least {MIN_TOKEN_CHARS} characters")
        if token is not None and token_problem(token):
            raise ValidationError(f"malformed token: {token_problem(token)}")
        if token is None:
            key_id = secrets.token_hex(8)
            token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(
            key_id=key_id_of(token),
            principal=principal,
            roles=sorted(set(roles)),
            groups=sorted(set(groups or [])),
            created_at=self.clock.now(),
            description=description,
        )
        self.repository.create(key, hash_token(token))
        return IssuedKey(key, token)

    def ensure_key(self, token: str, principal: str, roles: list[str]) -> ApiKey:
        """Creates the key for ``token`` unless it exists (idempotent seeding)."""
        found = self.repository.get(key_id_of(token))
        if found is not None:
            return found[0]
        return self.create_key(principal, roles, token=token).key

    def revoke_key(self, key_id: str) -> None:
        """Revokes a key; this instance forgets it at once.

        Raises:
            NotFound: No such key.
        """
        if not self.repository.revoke(key_id, self.clock.now()):
            raise NotFound(f"API key {key_id} does not exist")
        with self._lock:
            for cached_hash, (_, principal) in list(self._cache.items()):
                if principal.key_id == key_id:
                    del self._cache[cached_hash]

    def list_keys(self) -> list[ApiKey]:
        """Every key's metadata (never the tokens)."""
        return self.repository.list()

    def verify(self, token: str) -> Principal:
        """The principal for a token.

        Raises:
            Unauthorized: Malformed, unknown, revoked or mismatching token.
        """
        if token_problem(token) is not None:
            raise Unauthorized("invalid API token")
        digest = hash_token(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = self.repository.get(key_id_of(token))
        if found is None or not hmac.compare_digest(found[1], digest):
            raise Unauthorized("invalid API token")
        key = found[0]
        if key.revoked:
            raise Unauthorized("this API token has been revoked")
        principal = Principal(
            key.principal, key.key_id, frozenset(key.roles), frozenset(key.groups)
        )
        with self._lock:
            self._cache[digest] = (now + self.cache_ttl, principal)
        return principal


@lazy
def get_auth_service() -> AuthService:
    """The process-wide auth service."""
    return AuthService()


def bearer_token(headers: dict[str, str]) -> str:
    """The bearer token from lower-cased headers.

    Raises:
        Unauthorized: No ``Authorization: Bearer`` header.
    """
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing 'Authorization: Bearer <token>' header")
    return token.strip()


def authenticate(headers: dict[str, str], role: str) -> Principal:
    """Authenticates the request and checks it has ``role``.

    Raises:
        Unauthorized: No or invalid token.
        Forbidden: The caller lacks the role.
    """
    principal = get_auth_service().verify(bearer_token(headers))
    if not principal.has_role(role):
        raise Forbidden(f"this operation needs the '{role}' role")
    return principal
