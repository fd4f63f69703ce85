"""DynamoDB storage of registered models and versions (the registry's only DynamoDB code)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pynamodb.attributes import (
    MapAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import DoesNotExist, TransactWriteError, UpdateError
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from chalicelib.core.errors import Conflict
from chalicelib.core.tables import (
    cancellation_codes,
    meta,
    save_with_unique_key,
    string_list,
    transaction_connection,
)
from chalicelib.registry.errors import ModelNotFound, ModelVersionNotFound
from chalicelib.registry.models import (
    ModelAccess,
    ModelStage,
    ModelTask,
    ModelVersion,
    RegisteredModel,
)

# What an access check reads of a model item (GetItem's projection).
_ACCESS = ["model_id", "owner", "access_groups"]


class ModelTable(Model):
    """One item per registered model; ``latest_version`` allocates version numbers."""

    Meta = meta("MODELS_TABLE", "models")

    model_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    description = UnicodeAttribute(default="")
    owner = UnicodeAttribute(default="")
    # Absent on models stored before access groups existed: those are visible to admins only.
    access_groups = string_list()
    latest_version = NumberAttribute(default=0)
    production_version = NumberAttribute(null=True)
    generation = NumberAttribute(default=0)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()

    def to_domain(self) -> RegisteredModel:
        production = self.production_version
        return RegisteredModel(
            model_id=self.model_id,
            name=self.name,
            description=self.description or "",
            owner=self.owner or "",
            latest_version=int(self.latest_version or 0),
            production_version=int(production) if production is not None else None,
            generation=int(self.generation or 0),
            created_at=self.created_at,
            updated_at=self.updated_at,
            access_groups=tuple(self.access_groups or ()),
        )


class ModelNameTable(Model):
    """Reserves a model name so names stay unique."""

    Meta = meta("MODEL_NAMES_TABLE", "model-names")

    name = UnicodeAttribute(hash_key=True)
    model_id = UnicodeAttribute()


class ModelVersionTable(Model):
    """One item per model version."""

    Meta = meta("MODEL_VERSIONS_TABLE", "model-versions")

    model_id = UnicodeAttribute(hash_key=True)
    version = NumberAttribute(range_key=True)
    format = UnicodeAttribute()
    task = UnicodeAttribute()
    feature_names = string_list()
    class_names = string_list()
    artifact_key = UnicodeAttribute()
    artifact_sha256 = UnicodeAttribute()
    artifact_size = NumberAttribute()
    stage = UnicodeAttribute(default=ModelStage.NONE.value)
    background_dataset_version_id = UnicodeAttribute(null=True)
    background_sample_key = UnicodeAttribute(null=True)
    registration_id = UnicodeAttribute(null=True)
    description = UnicodeAttribute(default="")
    metadata: MapAttribute[str, Any] = MapAttribute(default=dict)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()

    def to_domain(self) -> ModelVersion:
        return ModelVersion(
            model_id=self.model_id,
            version=int(self.version),
            format=self.format,
            task=ModelTask(self.task),
            feature_names=list(self.feature_names or []),
            class_names=list(self.class_names or []),
            artifact_key=self.artifact_key,
            artifact_sha256=self.artifact_sha256,
            artifact_size=int(self.artifact_size),
            stage=ModelStage(self.stage),
            background_dataset_version_id=self.background_dataset_version_id,
            background_sample_key=self.background_sample_key,
            description=self.description or "",
            created_at=self.created_at,
            updated_at=self.updated_at,
            metadata=_plain_metadata(self.metadata),
        )


def _plain_metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    plain = value.as_dict() if hasattr(value, "as_dict") else dict(value)
    return {str(key): str(item) for key, item in plain.items()}


class RegistryRepository:
    """Reads and writes models and versions with conditional, transactional writes."""

    def create_model(self, model: RegisteredModel) -> None:
        """Stores a model and reserves its name atomically.

        Raises:
            Conflict: The name is taken.
        """
        item = ModelTable(
            model.model_id,
            name=model.name,
            description=model.description,
            owner=model.owner,
            access_groups=list(model.access_groups),
            latest_version=0,
            generation=0,
            created_at=model.created_at,
            updated_at=model.updated_at,
        )
        name = ModelNameTable(model.name, model_id=model.model_id)
        save_with_unique_key(
            name,
            ModelNameTable.name,
            item,
            ModelTable.model_id,
            f"a model named '{model.name}' already exists",
        )

    def get_model(self, model_id: str) -> RegisteredModel:
        """The model.

        Raises:
            ModelNotFound: Unknown id.
        """
        try:
            return ModelTable.get(model_id, consistent_read=True).to_domain()
        except DoesNotExist:
            raise ModelNotFound(f"model {model_id} does not exist") from None

    def get_model_access(self, model_id: str) -> ModelAccess:
        """The model's owner and access groups (a strongly consistent read of those only).

        Raises:
            ModelNotFound: Unknown id.
        """
        try:
            item = ModelTable.get(model_id, consistent_read=True, attributes_to_get=_ACCESS)
        except DoesNotExist:
            raise ModelNotFound(f"model {model_id} does not exist") from None
        return ModelAccess(model_id, item.owner or "", tuple(item.access_groups or ()))

    def set_access_groups(self, model_id: str, access_groups: list[str], when: datetime) -> None:
        """Replaces a model's access groups.

        Raises:
            ModelNotFound: Unknown id.
        """
        try:
            ModelTable(model_id).update(
                actions=[
                    ModelTable.access_groups.set(access_groups),
                    ModelTable.updated_at.set(when),
                ],
                condition=ModelTable.model_id.exists(),
            )
        except UpdateError as exc:
            if exc.cause_response_code == "ConditionalCheckFailedException":
                raise ModelNotFound(f"model {model_id} does not exist") from None
            raise

    def list_models(self) -> list[RegisteredModel]:
        """All models, by name."""
        return sorted((item.to_domain() for item in ModelTable.scan()), key=lambda m: m.name)

    def add_version(
        self, version: ModelVersion, expected_latest: int, registration_id: str = ""
    ) -> None:
        """Stores version ``expected_latest + 1`` if no other writer took that number.

        ``registration_id`` is stored with the version so a caller whose transaction committed
        but whose response was lost can recognise its own version (see :meth:`registered_by`).

        Raises:
            Conflict: Another registration won the race (the caller retries).
        """
        item = ModelVersionTable(
            version.model_id,
            version.version,
            format=version.format,
            task=version.task.value,
            feature_names=version.feature_names,
            class_names=version.class_names,
            artifact_key=version.artifact_key,
            artifact_sha256=version.artifact_sha256,
            artifact_size=version.artifact_size,
            stage=version.stage.value,
            background_dataset_version_id=version.background_dataset_version_id,
            background_sample_key=version.background_sample_key,
            registration_id=registration_id or None,
            description=version.description,
            metadata=version.metadata,
            created_at=version.created_at,
            updated_at=version.updated_at,
        )
        model = ModelTable(version.model_id)
        try:
            with TransactWrite(connection=transaction_connection()) as tx:
                tx.update(
                    model,
                    actions=[
                        ModelTable.latest_version.set(version.version),
                        ModelTable.generation.add(1),
                        ModelTable.updated_at.set(version.created_at),
                    ],
                    condition=ModelTable.latest_version == expected_latest,
                )
                tx.save(item, condition=ModelVersionTable.version.does_not_exist())
        except TransactWriteError as exc:
            if "ConditionalCheckFailed" in cancellation_codes(exc):
                raise Conflict("another version was registered at the same time") from None
            raise

    def get_version(self, model_id: str, version: int) -> ModelVersion:
        """One version.

        Raises:
            ModelVersionNotFound: Unknown model or version.
        """
        try:
            return ModelVersionTable.get(model_id, version, consistent_read=True).to_domain()
        except DoesNotExist:
            raise ModelVersionNotFound(f"model {model_id} has no version {version}") from None

    def registered_by(self, model_id: str, version: int) -> str | None:
        """The registration id that created a version, or ``None`` if there is no such version."""
        try:
            item = ModelVersionTable.get(model_id, version, consistent_read=True)
        except DoesNotExist:
            return None
        return item.registration_id

    def list_versions(self, model_id: str) -> list[ModelVersion]:
        """Every version of a model, ascending."""
        return [item.to_domain() for item in ModelVersionTable.query(model_id)]

    def change_stage(
        self,
        model: RegisteredModel,
        version: ModelVersion,
        stage: ModelStage,
        when: datetime,
    ) -> None:
        """Moves a version to ``stage`` atomically.

        Promoting to production archives the previous production version in the same
        transaction, conditioned on the model's production version not having changed.

        Raises:
            Conflict: A concurrent stage change won.
        """
        actions: list[tuple[Any, list[Any], Any]] = []
        model_actions = [ModelTable.generation.add(1), ModelTable.updated_at.set(when)]
        previous = model.production_version
        if stage is ModelStage.PRODUCTION and previous not in (None, version.version):
            actions.append(
                (
                    ModelVersionTable(model.model_id, previous),
                    [
                        ModelVersionTable.stage.set(ModelStage.ARCHIVED.value),
                        ModelVersionTable.updated_at.set(when),
                    ],
                    ModelVersionTable.stage == ModelStage.PRODUCTION.value,
                )
            )
        if stage is ModelStage.PRODUCTION:
            model_actions.append(ModelTable.production_version.set(version.version))
        elif previous == version.version:
            model_actions.append(ModelTable.production_version.remove())
        guard = (
            ModelTable.production_version.does_not_exist()
            if previous is None
            else ModelTable.production_version == previous
        )
        actions.append((ModelTable(model.model_id), model_actions, guard))
        actions.append(
            (
                ModelVersionTable(model.model_id, version.version),
                [ModelVersionTable.stage.set(stage.value), ModelVersionTable.updated_at.set(when)],
                ModelVersionTable.stage == version.stage.value,
            )
        )
        try:
            with TransactWrite(connection=transaction_connection()) as tx:
                for item, item_actions, condition in actions:
                    tx.update(item, actions=item_actions, condition=condition)
        except TransactWriteError as exc:
            if "ConditionalCheckFailed" in cancellation_codes(exc):
                raise Conflict("the model's stages changed concurrently; retry") from None
            raise


# The DynamoDB tables this module declares (listed by chalicelib.domains).
TABLES = (
    ModelTable,
    ModelNameTable,
    ModelVersionTable,
)
