"""The model registry: register safe artifacts, number versions, stage them, load them.

Artifacts are skops files checked against a type allow-list before they are stored and again
when they are loaded; pickle and joblib are refused. Version numbers are allocated with a
conditional transaction (retried), so concurrent registrations get consecutive numbers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import json
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from chalicelib.core import references
from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.errors import Conflict, UnprocessableEntity, ValidationError
from chalicelib.core.events import EventBus, get_event_bus
from chalicelib.core.imports import import_clean_without
from chalicelib.core.singleton import lazy
from chalicelib.registry.errors import UnsafeArtifactError
from chalicelib.registry.integrity import check_loaded
from chalicelib.registry.models import (
    REFUSED_FORMATS,
    ArtifactFormat,
    ModelAccess,
    ModelStage,
    ModelTask,
    ModelVersion,
    RegisteredModel,
)
from chalicelib.registry.ports import ArtifactBlobs, RegistryRecords
from chalicelib.registry.repository import RegistryRepository
from chalicelib.registry.safety import check_artifact, inspect_artifact, max_model_bytes
from chalicelib.registry.storage import ArtifactStore

MAX_BACKGROUND_ROWS = 10_000
REGISTER_ATTEMPTS = 20


@dataclass(frozen=True)
class VersionSpec:
    """What a caller says about a new version (everything but the bytes).

    Attributes:
        format: Artifact format; only ``skops``.
        task: What the model predicts.
        feature_names: Input feature names in order (required for tabular tasks).
        class_names: Class labels for classifiers.
        background_dataset_version_id: Dataset version to explain against.
        background_sample: Rows stored with the model as explanation background.
        description: Free text.
        metadata: Free-form strings.
    """

    format: str = ArtifactFormat.SKOPS.value
    task: str = ModelTask.CLASSIFICATION.value
    feature_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    background_dataset_version_id: str | None = None
    background_sample: tuple[tuple[Any, ...], ...] | None = None
    description: str = ""
    metadata: tuple[tuple[str, str], ...] = ()


ARTIFACT_EXTENSIONS = {
    ArtifactFormat.SKOPS.value: "skops",
    ArtifactFormat.XGBOOST_JSON.value: "json",
    ArtifactFormat.XGBOOST_UBJ.value: "ubj",
    ArtifactFormat.LIGHTGBM_TEXT.value: "txt",
}


def _check_format(fmt: str) -> str:
    """The accepted format named by ``fmt`` (lower case).

    Raises:
        UnprocessableEntity: Pickle-based (``unsafe_format``) or unknown.
    """
    lowered = fmt.lower()
    if lowered in REFUSED_FORMATS:
        raise UnprocessableEntity(
            f"format '{fmt}' is refused: pickle-based files execute code when loaded. "
            "Save scikit-learn models with skops (format 'skops'), XGBoost models as JSON or "
            "UBJSON ('xgboost_json', 'xgboost_ubj') and LightGBM models as text "
            "('lightgbm_text').",
            code="unsafe_format",
        )
    if lowered not in ARTIFACT_EXTENSIONS:
        raise UnprocessableEntity(
            f"format '{fmt}' is not supported; use one of {', '.join(ARTIFACT_EXTENSIONS)}"
        )
    return lowered


def _check_booster_file(fmt: str, data: bytes, task: ModelTask, spec: VersionSpec) -> None:
    """Checks an XGBoost/LightGBM file and that it fits the declared task and classes.

    Raises:
        UnsafeArtifactError: The file is refused.
        UnprocessableEntity: It does not predict what the version declares.
    """
    from chalicelib.registry.boosters import check_booster  # numpy: not at every cold start

    report = check_booster(fmt, data, len(spec.feature_names), max_model_bytes())
    wanted = "regression" if report.kind == "regression" else "classification"
    if task.value != wanted:
        raise UnprocessableEntity(
            f"the {report.library} model's objective '{report.objective}' is {wanted}, "
            f"not {task.value}"
        )
    if spec.class_names and len(spec.class_names) != report.n_classes:
        raise UnprocessableEntity(
            f"the model predicts {report.n_classes} classes but {len(spec.class_names)} "
            "class_names were given"
        )


def _check_task(task: str) -> ModelTask:
    try:
        return ModelTask(task)
    except ValueError:
        allowed = ", ".join(t.value for t in ModelTask)
        raise ValidationError(f"task must be one of {allowed}; got '{task}'") from None


def _check_features(task: ModelTask, names: tuple[str, ...]) -> None:
    tabular = task in (ModelTask.CLASSIFICATION, ModelTask.REGRESSION)
    if tabular and not names:
        raise UnprocessableEntity("feature_names are required for tabular models")
    if len(set(names)) != len(names):
        raise UnprocessableEntity("feature_names must be unique")


def _check_background(spec: VersionSpec) -> None:
    rows = spec.background_sample
    if rows is None:
        return
    if not rows or len(rows) > MAX_BACKGROUND_ROWS:
        raise UnprocessableEntity(
            f"background_sample must have between 1 and {MAX_BACKGROUND_ROWS} rows"
        )
    width = len(spec.feature_names)
    for index, row in enumerate(rows):
        if width and len(row) != width:
            raise UnprocessableEntity(
                f"background_sample row {index} has {len(row)} values; expected {width}"
            )


def decode_artifact(text: str) -> bytes:
    """Decodes a base64 artifact.

    Raises:
        ValidationError: Not valid base64.
    """
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("artifact_base64 is not valid base64") from None


class ModelRegistry:
    """Registers, stages and loads model versions.

    Args:
        repository: DynamoDB access.
        store: S3 artifact store.
        event_bus: Where lifecycle events go.
        clock: Time source.

    Loaded models are not cached here: the explanation path keeps them in a cache bounded in
    bytes (``chalicelib.explainability.memory``), and a second cache would hold them past it.
    """

    def __init__(
        self,
        repository: RegistryRecords | None = None,
        store: ArtifactBlobs | None = None,
        event_bus: EventBus | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.repository: RegistryRecords = repository or RegistryRepository()
        self.store: ArtifactBlobs = store or ArtifactStore()
        self.event_bus = event_bus or get_event_bus()
        self.clock = clock or SystemClock()

    def create_model(
        self,
        name: str,
        description: str = "",
        owner: str = "",
        access_groups: Sequence[str] = (),
    ) -> RegisteredModel:
        """Creates a model with a unique name.

        ``owner`` and ``access_groups`` decide who sees it (:mod:`chalicelib.core.access`).

        Raises:
            ValidationError: Empty name.
            Conflict: The name is taken.
        """
        if not name.strip():
            raise ValidationError("name must not be empty")
        now = self.clock.now()
        model = RegisteredModel(
            model_id=f"m-{uuid.uuid4().hex[:12]}",
            name=name.strip(),
            description=description,
            owner=owner,
            latest_version=0,
            production_version=None,
            generation=0,
            created_at=now,
            updated_at=now,
            access_groups=tuple(sorted(set(access_groups))),
        )
        self.repository.create_model(model)
        self.event_bus.publish("ModelCreated", {"model_id": model.model_id, "name": model.name})
        return model

    def get_model(self, model_id: str) -> RegisteredModel:
        """A model (404 if unknown)."""
        return self.repository.get_model(model_id)

    def get_model_access(self, model_id: str) -> ModelAccess:
        """A model's owner and access groups (404 if unknown)."""
        return self.repository.get_model_access(model_id)

    def set_access_groups(self, model_id: str, access_groups: Sequence[str]) -> RegisteredModel:
        """Replaces who may see a model (its owner stays).

        Raises:
            ModelNotFound: Unknown model.
            Referenced: An experiment readable by a group the change drops routes to the model
                (see :mod:`chalicelib.core.references`).
        """
        groups = sorted(set(access_groups))
        dropped = set(self.repository.get_model(model_id).access_groups) - set(groups)
        with references.narrowing(references.Ref("model", model_id), dropped, _REFERRERS):
            self.repository.set_access_groups(model_id, groups, self.clock.now())
        self.event_bus.publish(
            "ModelAccessChanged", {"model_id": model_id, "access_groups": groups}
        )
        return self.repository.get_model(model_id)

    def list_models(self) -> list[RegisteredModel]:
        """All models."""
        return self.repository.list_models()

    def get_version(self, model_id: str, version: int) -> ModelVersion:
        """One version (404 if unknown)."""
        return self.repository.get_version(model_id, int(version))

    def list_versions(self, model_id: str) -> list[ModelVersion]:
        """Every version of a model (404 if the model is unknown)."""
        self.repository.get_model(model_id)
        return self.repository.list_versions(model_id)

    def create_upload(self, model_id: str) -> tuple[str, str]:
        """A presigned PUT URL for an artifact too large for a JSON body.

        Returns:
            The upload key (pass it as ``artifact_upload_key``) and the URL.
        """
        self.repository.get_model(model_id)
        key = f"uploads/{model_id}/{uuid.uuid4().hex}.skops"
        return key, self.store.presign_upload(key)

    def register_version(
        self,
        model_id: str,
        spec: VersionSpec,
        artifact: bytes | None = None,
        upload_key: str | None = None,
    ) -> ModelVersion:
        """Checks and stores an artifact and records it as the next version.

        Args:
            model_id: The model.
            spec: Format, task, features and the rest.
            artifact: The artifact bytes, or
            upload_key: the key returned by :meth:`create_upload` after the client's PUT.

        Raises:
            ModelNotFound: Unknown model.
            UnprocessableEntity: Refused format, unsafe artifact, inconsistent metadata.
        """
        fmt = _check_format(spec.format)
        task = _check_task(spec.task)
        _check_features(task, spec.feature_names)
        _check_background(spec)
        self.repository.get_model(model_id)
        data = self._artifact_bytes(model_id, artifact, upload_key)
        if fmt == ArtifactFormat.SKOPS.value:
            check_artifact(data)
        else:
            _check_booster_file(fmt, data, task, spec)
        digest = hashlib.sha256(data).hexdigest()
        artifact_key = f"artifacts/{model_id}/{digest}.{ARTIFACT_EXTENSIONS[fmt]}"
        if not self.store.exists(artifact_key):  # content-addressed: same key, same bytes
            self.store.put(artifact_key, data)
        background_key = self._store_background(model_id, spec)
        version = self._allocate(
            model_id, spec, task, artifact_key, digest, len(data), background_key
        )
        if upload_key:
            self.store.delete(upload_key)
        self.event_bus.publish(
            "ModelVersionRegistered",
            {"model_id": model_id, "version": version.version, "artifact_sha256": digest},
        )
        return version

    def _artifact_bytes(
        self, model_id: str, artifact: bytes | None, upload_key: str | None
    ) -> bytes:
        if (artifact is None) == (upload_key is None):
            raise ValidationError("give exactly one of artifact_base64 or artifact_upload_key")
        if artifact is not None:
            if not artifact:
                raise UnprocessableEntity("the artifact is empty")
            return artifact
        assert upload_key is not None
        if not upload_key.startswith(f"uploads/{model_id}/") or ".." in upload_key:
            raise ValidationError("artifact_upload_key must be a key returned by the uploads route")
        return self.store.get(upload_key)

    def _store_background(self, model_id: str, spec: VersionSpec) -> str | None:
        if spec.background_sample is None:
            return None
        rows = [list(row) for row in spec.background_sample]
        text = json.dumps(rows, sort_keys=True)
        key = f"backgrounds/{model_id}/{hashlib.sha256(text.encode()).hexdigest()}.json"
        self.store.put_json(key, rows)
        return key

    def _allocate(
        self,
        model_id: str,
        spec: VersionSpec,
        task: ModelTask,
        artifact_key: str,
        digest: str,
        size: int,
        background_key: str | None,
    ) -> ModelVersion:
        registration_id = uuid.uuid4().hex
        for _ in range(REGISTER_ATTEMPTS):
            latest = self.repository.get_model(model_id).latest_version
            if latest and self.repository.registered_by(model_id, latest) == registration_id:
                # Our transaction committed but its response was lost; botocore's retry then
                # failed the condition. The version is ours: return it, do not register again.
                return self.repository.get_version(model_id, latest)
            now = self.clock.now()
            version = ModelVersion(
                model_id=model_id,
                version=latest + 1,
                format=spec.format.lower(),
                task=task,
                feature_names=list(spec.feature_names),
                class_names=list(spec.class_names),
                artifact_key=artifact_key,
                artifact_sha256=digest,
                artifact_size=size,
                stage=ModelStage.NONE,
                background_dataset_version_id=spec.background_dataset_version_id,
                background_sample_key=background_key,
                description=spec.description,
                created_at=now,
                updated_at=now,
                metadata=dict(spec.metadata),
            )
            try:
                self.repository.add_version(version, latest, registration_id)
                return version
            except Conflict:
                continue
        raise Conflict("too many concurrent registrations for this model; retry")

    def set_stage(self, model_id: str, version: int, stage: str) -> ModelVersion:
        """Moves a version to ``staging``, ``production`` or ``archived``.

        Promoting to production archives the previous production version atomically.

        Raises:
            ValidationError: Unknown stage.
            ModelVersionNotFound: Unknown version.
            Conflict: A concurrent stage change won.
        """
        try:
            target = ModelStage(stage)
        except ValueError:
            raise ValidationError(
                f"stage must be staging, production or archived; got '{stage}'"
            ) from None
        if target is ModelStage.NONE:
            raise ValidationError("stage must be staging, production or archived")
        current = self.repository.get_version(model_id, int(version))
        if current.stage is target:
            return current
        model = self.repository.get_model(model_id)
        self.repository.change_stage(model, current, target, self.clock.now())
        detail = {"model_id": model_id, "version": current.version, "stage": target.value}
        self.event_bus.publish("ModelVersionStageChanged", detail)
        if target is ModelStage.PRODUCTION:
            previous = model.production_version
            self.event_bus.publish("ModelVersionPromoted", {**detail, "previous_version": previous})
        return self.repository.get_version(model_id, current.version)

    def promote(self, model_id: str, version: int) -> ModelVersion:
        """Shorthand for ``set_stage(model_id, version, "production")``."""
        return self.set_stage(model_id, version, ModelStage.PRODUCTION.value)

    def get_background_sample(self, model_id: str, version: int) -> list[list[Any]] | None:
        """The background rows stored with a version, or ``None``."""
        found = self.get_version(model_id, version)
        if found.background_sample_key is None:
            return None
        return self.store.get_json(found.background_sample_key)

    def load_model(self, model_id: str, version: int, reserve: Reserve | None = None) -> Any:
        """The estimator of a version, loaded with skops and the trusted-type allow-list.

        Imports skops (and scikit-learn) on first use only. The stored bytes must match the
        sha256 recorded at registration and pass the artifact check again.

        Args:
            model_id: The model.
            version: The version.
            reserve: Holds memory for a step of the load: called with the bytes it needs (first
                the artifact as stored, then what the check says loading takes) and a label;
                returns a context manager held while that step runs.

        Raises:
            UnsafeArtifactError: The stored artifact changed or is refused, or skops fails.
        """
        found = self.get_version(model_id, version)
        hold = reserve or _no_reservation
        label = f"model '{model_id}' version {found.version}"
        with hold(found.artifact_size, label):
            data = self.store.get(found.artifact_key)
            return load_checked(
                data, found.artifact_sha256, hold, label, found.format, len(found.feature_names)
            )


Reserve = Callable[[int, str], AbstractContextManager[Any]]


def _no_reservation(nbytes: int, what: str) -> AbstractContextManager[Any]:
    return nullcontext()


def load_checked(
    data: bytes,
    sha256: str,
    reserve: Reserve = _no_reservation,
    what: str = "the model",
    fmt: str = ArtifactFormat.SKOPS.value,
    n_features: int | None = None,
) -> Any:
    """Loads stored artifact bytes after checking them again, whatever wrote them.

    The bytes must hash to what registration recorded and pass the same check as at
    registration (which caps what they declare before anything is decompressed); skops then gets
    exactly the types that check accepted, while ``reserve`` holds what loading takes; the loaded
    trees must then be trees (:mod:`chalicelib.registry.integrity`).

    Raises:
        UnsafeArtifactError: Changed since registration, refused by the check, or unloadable.
    """
    if hashlib.sha256(data).hexdigest() != sha256:
        raise UnsafeArtifactError(
            "the stored artifact is not the one registered (its sha256 differs); it is refused"
        )
    if fmt != ArtifactFormat.SKOPS.value:
        from chalicelib.registry.boosters import check_booster, load_booster  # numpy, lazily

        booster = check_booster(fmt, data, n_features or None, max_model_bytes())
        with reserve(booster.load_bytes, what):
            return load_booster(fmt, data, booster)
    report = inspect_artifact(data)
    sio = skops_io()

    with reserve(report.load_bytes, what):
        try:
            model = sio.loads(data, trusted=report.types)
        except Exception as exc:  # the file is user data: any failure is the file's, not ours
            raise UnsafeArtifactError(
                f"the artifact could not be loaded ({type(exc).__name__}); re-save it with skops"
            ) from None
        check_loaded(model)
        return model


_skops_lock = threading.Lock()


def skops_io() -> ModuleType:
    """``skops.io``, imported without skops' list of every scikit-learn estimator.

    At import, skops lists all of scikit-learn's estimators (``all_estimators``, which imports
    every scikit-learn module: about a third of a tabular explainer's cold start) to trust them
    by default. The registry never relies on that default: it passes the types its own
    allow-list approved (:func:`inspect_artifact`) as ``trusted``, every type the file names,
    so the list is left empty and a load trusts exactly what the registry checked.

    scikit-learn is imported (when it is not yet) as if pandas were not installed: it imports
    pandas only to have it at hand for DataFrame inputs, which no model load or explanation
    passes, and pandas is a sixth of a tree explainer's cold start. scikit-learn finds pandas
    in ``sys.modules`` when something else imports it later.
    """
    found = sys.modules.get("skops.io")
    if found is not None:
        return found
    utils: Any = import_clean_without("sklearn.utils", ("pandas",))

    with _skops_lock:
        every_estimator = utils.all_estimators
        utils.all_estimators = _no_estimators
        try:
            return importlib.import_module("skops.io")
        finally:
            utils.all_estimators = every_estimator


def _no_estimators(*args: Any, **kwargs: Any) -> list[Any]:
    return []


def _experiment_groups(experiment_id: str) -> list[str] | None:
    from chalicelib.abtesting import facade as experiments

    return experiments.access_groups_as_system(experiment_id)


#: Who may refer to a model: experiments, by their variants.
_REFERRERS = {"experiment": _experiment_groups}


@lazy
def get_model_registry() -> ModelRegistry:
    """The process-wide model registry."""
    return ModelRegistry()
