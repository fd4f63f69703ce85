"""The registry's storage in memory: :class:`~chalicelib.registry.ports.RegistryRecords` and
:class:`~chalicelib.registry.ports.ArtifactBlobs` for tests of the registry's logic without AWS
(the pattern of Chalice's ``InMemoryTodoDB``). Same results and errors as the DynamoDB and S3
implementations (one contract suite runs against both); each operation is atomic under one lock,
as a conditional write or a transaction is in DynamoDB."""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from datetime import datetime
from typing import Any

from chalicelib.core.errors import Conflict, NotFound, PayloadTooLarge
from chalicelib.registry.errors import ModelNotFound, ModelVersionNotFound
from chalicelib.registry.models import ModelAccess, ModelStage, ModelVersion, RegisteredModel


class InMemoryRegistryRepository:
    """Models, reserved names and versions in dicts."""

    def __init__(self) -> None:
        self._models: dict[str, RegisteredModel] = {}
        self._names: dict[str, str] = {}
        self._versions: dict[tuple[str, int], tuple[ModelVersion, str | None]] = {}
        self._lock = threading.Lock()

    def create_model(self, model: RegisteredModel) -> None:
        """Stores a model and reserves its name atomically.

        Raises:
            Conflict: The name (or the id) is taken.
        """
        with self._lock:
            if model.name in self._names:
                raise Conflict(f"a model named '{model.name}' already exists")
            if model.model_id in self._models:
                raise Conflict(f"model {model.model_id} already exists")
            self._names[model.name] = model.model_id
            self._models[model.model_id] = dataclasses.replace(
                model, latest_version=0, production_version=None, generation=0
            )

    def get_model(self, model_id: str) -> RegisteredModel:
        """The model.

        Raises:
            ModelNotFound: Unknown id.
        """
        with self._lock:
            return self._model(model_id)

    def get_model_access(self, model_id: str) -> ModelAccess:
        """The model's owner and access groups.

        Raises:
            ModelNotFound: Unknown id.
        """
        model = self.get_model(model_id)
        return ModelAccess(model.model_id, model.owner, model.access_groups)

    def _model(self, model_id: str) -> RegisteredModel:
        found = self._models.get(model_id)
        if found is None:
            raise ModelNotFound(f"model {model_id} does not exist")
        return found

    def set_access_groups(self, model_id: str, access_groups: list[str], when: datetime) -> None:
        """Replaces a model's access groups.

        Raises:
            ModelNotFound: Unknown id.
        """
        with self._lock:
            model = self._model(model_id)
            self._models[model_id] = dataclasses.replace(
                model, access_groups=tuple(access_groups), updated_at=when
            )

    def list_models(self) -> list[RegisteredModel]:
        """All models, by name."""
        with self._lock:
            return sorted(self._models.values(), key=lambda m: m.name)

    def add_version(
        self, version: ModelVersion, expected_latest: int, registration_id: str = ""
    ) -> None:
        """Stores version ``expected_latest + 1`` if no other writer took that number.

        Raises:
            Conflict: Another registration won the race (or the model does not exist, as the
                DynamoDB condition on its latest version fails then too).
        """
        key = (version.model_id, version.version)
        with self._lock:
            model = self._models.get(version.model_id)
            if model is None or model.latest_version != expected_latest or key in self._versions:
                raise Conflict("another version was registered at the same time")
            self._versions[key] = (copy.deepcopy(version), registration_id or None)
            self._models[version.model_id] = dataclasses.replace(
                model,
                latest_version=version.version,
                generation=model.generation + 1,
                updated_at=version.created_at,
            )

    def get_version(self, model_id: str, version: int) -> ModelVersion:
        """One version.

        Raises:
            ModelVersionNotFound: Unknown model or version.
        """
        with self._lock:
            found = self._versions.get((model_id, int(version)))
        if found is None:
            raise ModelVersionNotFound(f"model {model_id} has no version {version}")
        return copy.deepcopy(found[0])

    def registered_by(self, model_id: str, version: int) -> str | None:
        """The registration id that created a version, or ``None`` if there is no such version."""
        with self._lock:
            found = self._versions.get((model_id, int(version)))
        return None if found is None else found[1]

    def list_versions(self, model_id: str) -> list[ModelVersion]:
        """Every version of a model, ascending."""
        with self._lock:
            found = [v for (mid, _), (v, _) in self._versions.items() if mid == model_id]
        return [copy.deepcopy(v) for v in sorted(found, key=lambda v: v.version)]

    def change_stage(
        self, model: RegisteredModel, version: ModelVersion, stage: ModelStage, when: datetime
    ) -> None:
        """Moves a version to ``stage`` atomically; promoting to production archives the previous
        production version, conditioned on the model's production version not having changed.

        Raises:
            Conflict: A concurrent stage change won.
        """
        with self._lock:
            stored = self._models.get(model.model_id)
            current = self._versions.get((model.model_id, version.version))
            previous = model.production_version
            archive = stage is ModelStage.PRODUCTION and previous not in (None, version.version)
            old = self._versions.get((model.model_id, previous or 0)) if archive else None
            if (
                stored is None
                or stored.production_version != previous
                or current is None
                or current[0].stage is not version.stage
                or (archive and (old is None or old[0].stage is not ModelStage.PRODUCTION))
            ):
                raise Conflict("the model's stages changed concurrently; retry")
            if archive and old is not None and previous is not None:
                archived = dataclasses.replace(old[0], stage=ModelStage.ARCHIVED, updated_at=when)
                self._versions[(model.model_id, previous)] = (archived, old[1])
            production = stored.production_version
            if stage is ModelStage.PRODUCTION:
                production = version.version
            elif previous == version.version:
                production = None
            self._models[model.model_id] = dataclasses.replace(
                stored,
                production_version=production,
                generation=stored.generation + 1,
                updated_at=when,
            )
            moved = dataclasses.replace(current[0], stage=stage, updated_at=when)
            self._versions[(model.model_id, version.version)] = (moved, current[1])


class InMemoryArtifactStore:
    """Artifact bytes by key.

    Args:
        bucket: Named in the upload URLs.
        max_artifact_bytes: Largest object :meth:`get` returns.
    """

    def __init__(self, bucket: str = "memory", max_artifact_bytes: int = 512 * 1024 * 1024):
        self.bucket = bucket
        self.max_artifact_bytes = max_artifact_bytes
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Stores bytes at ``key``."""
        with self._lock:
            self._objects[key] = bytes(data)

    def get(self, key: str) -> bytes:
        """The bytes at ``key``.

        Raises:
            NotFound: No object there.
            PayloadTooLarge: The object is over the artifact limit.
        """
        with self._lock:
            data = self._objects.get(key)
        if data is None:
            raise NotFound(f"no uploaded object at {key}")
        if len(data) > self.max_artifact_bytes:
            raise PayloadTooLarge(f"artifact is {len(data)} bytes; limit {self.max_artifact_bytes}")
        return data

    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""
        with self._lock:
            return key in self._objects

    def delete(self, key: str) -> None:
        """Removes ``key`` (no error if absent)."""
        with self._lock:
            self._objects.pop(key, None)

    def put_json(self, key: str, value: Any) -> None:
        """Stores a JSON document."""
        self.put(key, json.dumps(value).encode("utf-8"), "application/json")

    def get_json(self, key: str) -> Any:
        """Reads a JSON document."""
        return json.loads(self.get(key))

    def presign_upload(self, key: str, expires: int | None = None) -> str:
        """A ``memory://`` URL naming the key (nothing listens there: tests :meth:`put`)."""
        return f"memory://{self.bucket}/{key}"
