"""One contract for each storage interface, run against the AWS-backed implementation (on moto)
and the in-memory one, so the in-memory repositories that the logic tests use behave exactly like
the ones a deployment uses: the same results, the same errors, the same conditions."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.core.clock import utc_now
from chalicelib.core.errors import Conflict, NotFound, PayloadTooLarge
from chalicelib.registry.errors import ModelNotFound, ModelVersionNotFound
from chalicelib.registry.models import ModelStage, ModelTask, ModelVersion, RegisteredModel

IMPLEMENTATIONS = ["aws", "memory"]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ---- auth: ApiKeyStore ----------------------------------------------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def keys(request: pytest.FixtureRequest) -> Any:
    if request.param == "aws":
        from chalicelib.auth.repository import ApiKeyRepository

        request.getfixturevalue("module_aws")
        return ApiKeyRepository()
    from chalicelib.auth.memory import InMemoryApiKeyRepository

    return InMemoryApiKeyRepository()


def _key(**changes: Any) -> Any:
    from chalicelib.auth.models import ApiKey

    key = ApiKey(_unique("k"), "alice", ["reader", "writer"], ["ml"], utc_now(), description="d")
    return dataclasses.replace(key, **changes)


def test_a_stored_key_reads_back_with_its_token_hash(keys: Any) -> None:
    key = _key()
    keys.create(key, "hash-1")
    assert keys.get(key.key_id) == (key, "hash-1")
    assert keys.get(_unique("missing")) is None


def test_a_key_without_groups_reads_back_with_an_empty_list(keys: Any) -> None:
    key = _key(groups=[])
    keys.create(key, "h")
    assert keys.get(key.key_id) == (key, "h")


def test_a_second_key_with_the_same_id_is_a_conflict_and_changes_nothing(keys: Any) -> None:
    key = _key()
    keys.create(key, "first")
    with pytest.raises(Conflict, match="already exists"):
        keys.create(dataclasses.replace(key, principal="mallory"), "second")
    assert keys.get(key.key_id) == (key, "first")


def test_revoking_keeps_the_first_time_and_unknown_keys_say_so(keys: Any) -> None:
    key = _key()
    keys.create(key, "h")
    first = utc_now()
    assert keys.revoke(key.key_id, first) is True
    assert keys.revoke(key.key_id, first + timedelta(hours=1)) is True
    found, _ = keys.get(key.key_id)
    assert found.revoked_at == first and found.revoked
    assert keys.revoke(_unique("missing"), first) is False


def test_every_created_key_is_listed(keys: Any) -> None:
    made = [_key(), _key(groups=[])]
    for key in made:
        keys.create(key, "h")
    listed = {key.key_id: key for key in keys.list()}
    assert [listed[key.key_id] for key in made] == made


# ---- registry: RegistryRecords --------------------------------------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def records(request: pytest.FixtureRequest) -> Any:
    if request.param == "aws":
        from chalicelib.registry.repository import RegistryRepository

        request.getfixturevalue("module_aws")
        return RegistryRepository()
    from chalicelib.registry.memory import InMemoryRegistryRepository

    return InMemoryRegistryRepository()


def _model(**changes: Any) -> RegisteredModel:
    now = utc_now()
    model = RegisteredModel(
        model_id=_unique("m"),
        name=_unique("name"),
        description="a model",
        owner="alice",
        latest_version=0,
        production_version=None,
        generation=0,
        created_at=now,
        updated_at=now,
        access_groups=("ml",),
    )
    return dataclasses.replace(model, **changes)


def _version(model: RegisteredModel, number: int, **changes: Any) -> ModelVersion:
    now = utc_now()
    version = ModelVersion(
        model_id=model.model_id,
        version=number,
        format="skops",
        task=ModelTask.CLASSIFICATION,
        feature_names=["a", "b"],
        class_names=["no", "yes"],
        artifact_key=f"artifacts/{model.model_id}/{number}.skops",
        artifact_sha256="0" * 64,
        artifact_size=123,
        stage=ModelStage.NONE,
        background_dataset_version_id=None,
        background_sample_key=f"backgrounds/{model.model_id}/{number}.json",
        description="v",
        created_at=now,
        updated_at=now,
        metadata={"team": "ml"},
    )
    return dataclasses.replace(version, **changes)


def test_a_model_reads_back_and_unknown_ids_are_not_found(records: Any) -> None:
    model = _model()
    records.create_model(model)
    assert records.get_model(model.model_id) == model
    with pytest.raises(ModelNotFound):
        records.get_model(_unique("missing"))


def test_a_taken_name_is_a_conflict_and_the_second_model_is_not_stored(records: Any) -> None:
    model = _model()
    records.create_model(model)
    second = _model(name=model.name)
    with pytest.raises(Conflict, match="already exists"):
        records.create_model(second)
    with pytest.raises(ModelNotFound):
        records.get_model(second.model_id)


def test_access_groups_are_replaced_and_unknown_models_are_not_found(records: Any) -> None:
    model = _model()
    records.create_model(model)
    later = model.created_at + timedelta(minutes=5)
    records.set_access_groups(model.model_id, ["a", "b"], later)
    assert records.get_model(model.model_id) == dataclasses.replace(
        model, access_groups=("a", "b"), updated_at=later
    )
    with pytest.raises(ModelNotFound):
        records.set_access_groups(_unique("missing"), ["a"], later)


def test_models_are_listed_by_name(records: Any) -> None:
    made = [_model(name=_unique(prefix)) for prefix in ("zz", "aa", "mm")]
    for model in made:
        records.create_model(model)
    ours = {m.model_id for m in made}
    listed = [m for m in records.list_models() if m.model_id in ours]
    assert listed == sorted(made, key=lambda m: m.name)


def test_versions_are_numbered_under_a_condition_on_the_latest(records: Any) -> None:
    model = _model()
    records.create_model(model)
    first = _version(model, 1)
    records.add_version(first, 0, "reg-1")
    with pytest.raises(Conflict):  # another writer took number 1 meanwhile
        records.add_version(_version(model, 1), 0, "reg-2")
    with pytest.raises(Conflict):  # a stale latest
        records.add_version(_version(model, 2), 0, "reg-3")
    second = _version(model, 2, feature_names=[], class_names=[], metadata={})
    records.add_version(second, 1)
    assert records.get_version(model.model_id, 1) == first
    assert records.get_version(model.model_id, 2) == second
    assert records.list_versions(model.model_id) == [first, second]
    stored = records.get_model(model.model_id)
    assert (stored.latest_version, stored.generation) == (2, 2)
    assert stored.updated_at == second.created_at
    assert records.registered_by(model.model_id, 1) == "reg-1"
    assert records.registered_by(model.model_id, 2) is None  # no registration id given
    assert records.registered_by(model.model_id, 3) is None


def test_a_version_of_an_unknown_model_is_refused_and_unknown_versions_are_not_found(
    records: Any,
) -> None:
    ghost = _model()
    with pytest.raises(Conflict):
        records.add_version(_version(ghost, 1), 0)
    with pytest.raises(ModelVersionNotFound):
        records.get_version(ghost.model_id, 1)
    assert records.list_versions(ghost.model_id) == []


def _promoted(records: Any) -> tuple[RegisteredModel, ModelVersion, ModelVersion]:
    model = _model()
    records.create_model(model)
    records.add_version(_version(model, 1), 0)
    records.add_version(_version(model, 2), 1)
    one = records.get_version(model.model_id, 1)
    records.change_stage(records.get_model(model.model_id), one, ModelStage.PRODUCTION, utc_now())
    return records.get_model(model.model_id), records.get_version(model.model_id, 1), one


def test_promoting_archives_the_previous_production_version(records: Any) -> None:
    model, one, _ = _promoted(records)
    assert (model.production_version, model.generation, one.stage) == (1, 3, ModelStage.PRODUCTION)
    two = records.get_version(model.model_id, 2)
    when = utc_now() + timedelta(minutes=1)
    records.change_stage(model, two, ModelStage.PRODUCTION, when)
    after = records.get_model(model.model_id)
    assert (after.production_version, after.generation, after.updated_at) == (2, 4, when)
    assert records.get_version(model.model_id, 1).stage is ModelStage.ARCHIVED
    assert records.get_version(model.model_id, 1).updated_at == when
    assert records.get_version(model.model_id, 2).stage is ModelStage.PRODUCTION


def test_demoting_the_production_version_leaves_the_model_without_one(records: Any) -> None:
    model, one, _ = _promoted(records)
    records.change_stage(model, one, ModelStage.STAGING, utc_now())
    assert records.get_model(model.model_id).production_version is None
    assert records.get_version(model.model_id, 1).stage is ModelStage.STAGING


def test_a_stage_change_from_a_stale_reading_is_a_conflict_and_changes_nothing(
    records: Any,
) -> None:
    model, one, stale_one = _promoted(records)
    two = records.get_version(model.model_id, 2)
    stale_model = dataclasses.replace(model, production_version=None)
    with pytest.raises(Conflict):  # the model's production version moved meanwhile
        records.change_stage(stale_model, two, ModelStage.PRODUCTION, utc_now())
    with pytest.raises(Conflict):  # the version's stage moved meanwhile
        records.change_stage(model, stale_one, ModelStage.STAGING, utc_now())
    assert records.get_model(model.model_id) == model
    assert records.get_version(model.model_id, 1) == one
    assert records.get_version(model.model_id, 2) == two


# ---- registry: ArtifactBlobs ----------------------------------------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def blobs(request: pytest.FixtureRequest) -> Any:
    if request.param == "aws":
        from chalicelib.registry.storage import ArtifactStore

        request.getfixturevalue("module_aws")
        return ArtifactStore(max_artifact_bytes=64)
    from chalicelib.registry.memory import InMemoryArtifactStore

    return InMemoryArtifactStore(max_artifact_bytes=64)


def test_bytes_and_json_read_back_and_deleted_keys_are_gone(blobs: Any) -> None:
    key, doc = _unique("artifacts/m/a"), _unique("backgrounds/m/b")
    assert not blobs.exists(key)
    blobs.put(key, b"\x00\x01 bytes")
    blobs.put_json(doc, [[1.5, 2], [3, None]])
    assert blobs.exists(key) and blobs.get(key) == b"\x00\x01 bytes"
    assert blobs.get_json(doc) == [[1.5, 2], [3, None]]
    blobs.put(key, b"replaced")
    assert blobs.get(key) == b"replaced"
    blobs.delete(key)
    blobs.delete(key)  # deleting what is absent is not an error
    assert not blobs.exists(key)
    with pytest.raises(NotFound):
        blobs.get(key)


def test_an_object_over_the_artifact_limit_is_refused_on_read(blobs: Any) -> None:
    key = _unique("uploads/m/big")
    blobs.put(key, b"x" * 65)
    with pytest.raises(PayloadTooLarge, match="65 bytes"):
        blobs.get(key)
    blobs.put(key, b"x" * 64)
    assert len(blobs.get(key)) == 64


def test_an_upload_url_names_its_key(blobs: Any) -> None:
    key = _unique("uploads/m/u")
    assert key in blobs.presign_upload(key)
