"""The interfaces of the registry's storage: model and version records (DynamoDB in
:mod:`chalicelib.registry.repository`) and artifact bytes (S3 in
:mod:`chalicelib.registry.storage`), each with an in-memory implementation in
:mod:`chalicelib.registry.memory` for tests of the registry's logic that need no AWS.

Both implementations of each pass one contract suite (``tests/unit/test_repository_contracts.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from chalicelib.registry.models import ModelAccess, ModelStage, ModelVersion, RegisteredModel


class RegistryRecords(Protocol):
    """Registered models and their versions, written with conditions."""

    def create_model(self, model: RegisteredModel) -> None:
        """Stores a model and reserves its name.

        Raises:
            Conflict: The name is taken.
        """

    def get_model(self, model_id: str) -> RegisteredModel:
        """The model.

        Raises:
            ModelNotFound: Unknown id.
        """

    def set_access_groups(self, model_id: str, access_groups: list[str], when: datetime) -> None:
        """Replaces a model's access groups.

        Raises:
            ModelNotFound: Unknown id.
        """

    def get_model_access(self, model_id: str) -> ModelAccess:
        """The model's owner and access groups (what an access check reads), read as
        :meth:`get_model` reads them.

        Raises:
            ModelNotFound: Unknown id.
        """

    def list_models(self) -> list[RegisteredModel]:
        """All models, by name."""

    def add_version(
        self, version: ModelVersion, expected_latest: int, registration_id: str = ""
    ) -> None:
        """Stores version ``expected_latest + 1`` if no other writer took that number.

        Raises:
            Conflict: Another registration won the race.
        """

    def get_version(self, model_id: str, version: int) -> ModelVersion:
        """One version.

        Raises:
            ModelVersionNotFound: Unknown model or version.
        """

    def registered_by(self, model_id: str, version: int) -> str | None:
        """The registration id that created a version, or ``None``."""

    def list_versions(self, model_id: str) -> list[ModelVersion]:
        """Every version of a model, ascending."""

    def change_stage(
        self, model: RegisteredModel, version: ModelVersion, stage: ModelStage, when: datetime
    ) -> None:
        """Moves a version to ``stage``; promoting archives the previous production version.

        Raises:
            Conflict: A concurrent stage change won.
        """


class ArtifactBlobs(Protocol):
    """Artifact bytes and background samples by key."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Stores bytes at ``key``."""

    def get(self, key: str) -> bytes:
        """The bytes at ``key``.

        Raises:
            NotFound: No object there.
            PayloadTooLarge: The object is over the artifact limit.
        """

    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""

    def delete(self, key: str) -> None:
        """Removes ``key`` (no error if absent)."""

    def put_json(self, key: str, value: Any) -> None:
        """Stores a JSON document."""

    def get_json(self, key: str) -> Any:
        """Reads a JSON document."""

    def presign_upload(self, key: str, expires: int | None = None) -> str:
        """A URL a client PUTs the bytes of ``key`` to."""
