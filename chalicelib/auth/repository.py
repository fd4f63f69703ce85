"""DynamoDB storage of API keys (hashed)."""

from __future__ import annotations

from datetime import datetime

from pynamodb.attributes import UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.exceptions import DoesNotExist, PutError
from pynamodb.models import Model

from chalicelib.auth.models import ApiKey
from chalicelib.core.errors import Conflict
from chalicelib.core.tables import meta, string_list


class ApiKeyTable(Model):
    """One item per API key; ``token_hash`` is sha256 of the token."""

    Meta = meta("API_KEYS_TABLE", "api-keys")

    key_id = UnicodeAttribute(hash_key=True)
    token_hash = UnicodeAttribute()
    principal = UnicodeAttribute()
    roles = string_list()
    groups = string_list()
    description = UnicodeAttribute(default="")
    created_at = UTCDateTimeAttribute()
    revoked_at = UTCDateTimeAttribute(null=True)

    def to_domain(self) -> ApiKey:
        return ApiKey(
            key_id=self.key_id,
            principal=self.principal,
            roles=list(self.roles or []),
            groups=list(self.groups or []),
            created_at=self.created_at,
            revoked_at=self.revoked_at,
            description=self.description or "",
        )


class ApiKeyRepository:
    """The only code that reads and writes API keys."""

    def create(self, key: ApiKey, token_hash: str) -> None:
        """Stores a new key; a duplicate key id is a conflict.

        Raises:
            Conflict: The key id exists.
        """
        item = ApiKeyTable(
            key.key_id,
            token_hash=token_hash,
            principal=key.principal,
            roles=key.roles,
            groups=key.groups,
            description=key.description,
            created_at=key.created_at,
        )
        try:
            item.save(condition=ApiKeyTable.key_id.does_not_exist())
        except PutError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                raise Conflict(f"API key {key.key_id} already exists") from None
            raise

    def get(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its token hash, or ``None``."""
        try:
            item = ApiKeyTable.get(key_id, consistent_read=True)
        except DoesNotExist:
            return None
        return item.to_domain(), item.token_hash

    def revoke(self, key_id: str, when: datetime) -> bool:
        """Marks a key revoked; returns ``False`` if it does not exist."""
        try:
            item = ApiKeyTable.get(key_id, consistent_read=True)
        except DoesNotExist:
            return False
        if item.revoked_at is None:
            item.update(actions=[ApiKeyTable.revoked_at.set(when)])
        return True

    def list(self) -> list[ApiKey]:
        """Every key (admins only; small table)."""
        return [item.to_domain() for item in ApiKeyTable.scan()]


# The DynamoDB tables this module declares (listed by chalicelib.domains).
TABLES = (ApiKeyTable,)
