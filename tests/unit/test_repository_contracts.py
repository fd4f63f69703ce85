"""One contract for each storage interface, run against the AWS-backed implementation (on moto)
and the in-memory one, so the in-memory repositories that the logic tests use behave exactly like
the ones a deployment uses: the same results, the same errors, the same conditions."""

from __future__ import annotations

import dataclasses
import importlib
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.core.clock import utc_now
from chalicelib.core.errors import Conflict, NotFound, PayloadTooLarge
from chalicelib.registry.errors import ModelNotFound, ModelVersionNotFound
from chalicelib.registry.models import (
    ModelAccess,
    ModelStage,
    ModelTask,
    ModelVersion,
    RegisteredModel,
)

IMPLEMENTATIONS = ["aws", "memory"]


def _implementation(
    request: pytest.FixtureRequest, package: str, aws: str, memory: str, **kwargs: Any
) -> Any:
    """A new instance of ``package``'s class named ``aws`` (``module.Class``, on the module's
    moto account) or ``memory``, as the fixture's parameter says."""
    if request.param == "aws":
        request.getfixturevalue("module_aws")
    module, name = (aws if request.param == "aws" else memory).rsplit(".", 1)
    return getattr(importlib.import_module(f"chalicelib.{package}.{module}"), name)(**kwargs)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ---- auth: ApiKeyStore ----------------------------------------------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def keys(request: pytest.FixtureRequest) -> Any:
    return _implementation(
        request, "auth", "repository.ApiKeyRepository", "memory.InMemoryApiKeyRepository"
    )


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
    return _implementation(
        request, "registry", "repository.RegistryRepository", "memory.InMemoryRegistryRepository"
    )


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


def test_a_models_access_reads_back_as_the_model_has_it_and_unknown_ids_are_not_found(
    records: Any,
) -> None:
    model = _model(owner="bob", access_groups=("ml", "risk"))
    records.create_model(model)
    assert records.get_model_access(model.model_id) == ModelAccess(
        model.model_id, "bob", ("ml", "risk")
    )
    records.set_access_groups(model.model_id, [], model.created_at + timedelta(minutes=1))
    assert records.get_model_access(model.model_id) == ModelAccess(model.model_id, "bob", ())
    with pytest.raises(ModelNotFound):
        records.get_model_access(_unique("missing"))


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
    return _implementation(
        request,
        "registry",
        "storage.ArtifactStore",
        "memory.InMemoryArtifactStore",
        max_artifact_bytes=64,
    )


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


# ---- abtesting: ExperimentRecords ------------------------------------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def experiments(request: pytest.FixtureRequest) -> Any:
    return _implementation(
        request,
        "abtesting",
        "repository.ExperimentRepository",
        "memory.InMemoryExperimentRepository",
    )


def _experiment(**changes: Any) -> Any:
    from chalicelib.abtesting.models import (
        AllocationPhase,
        Dimension,
        Experiment,
        ExperimentStatus,
        HoldoutRef,
        LayerSlice,
        ModelVariant,
        PhaseReason,
        RampSchedule,
        SegmentSettings,
        TrafficAllocationStrategy,
    )

    now = utc_now()
    experiment_id = _unique("exp")
    arms = (
        ModelVariant("control", "m-1", 1, Decimal("0.75"), True),
        ModelVariant("treatment", "m-1", 2, Decimal("0.25")),
    )
    experiment = Experiment(
        experiment_id, "name", "described", arms, ExperimentStatus.DRAFT,
        TrafficAllocationStrategy.RAMPING, None, None, 500, 0.95, "conversion_rate",
        ("error_rate",), now, now, salt=experiment_id, owner="alice",
        ramp=RampSchedule((Decimal("0.25"), Decimal("1")), 10, 0), access_groups=("ml",),
        phases=(AllocationPhase(7, now, PhaseReason.START, {"control": Decimal("1")}),),
        layer=LayerSlice(_unique("layer"), 0, 5000),
        targeting={"attribute": "country", "in": ["DE"]},
        holdouts=(HoldoutRef("h-1", "h-1", Decimal("0.1")),),
        segments=SegmentSettings((Dimension("country", 5),)),
    )  # fmt: skip
    return dataclasses.replace(experiment, **changes)


def _as_stored(experiment: Any) -> Any:
    """What a new experiment reads back as: revision 0, phases numbered by position."""
    phases = tuple(dataclasses.replace(p, index=i) for i, p in enumerate(experiment.phases))
    return dataclasses.replace(experiment, revision=0, phases=phases)


def test_an_experiment_reads_back_and_unknown_ids_are_not_found(experiments: Any) -> None:
    from chalicelib.abtesting.errors import ExperimentNotFound

    experiment = _experiment(revision=9)
    experiments.create(experiment)
    assert experiments.get(experiment.experiment_id) == _as_stored(experiment)
    bare = _experiment(ramp=None, phases=(), layer=None, targeting=None, holdouts=())
    experiments.create(bare)
    assert experiments.get(bare.experiment_id) == _as_stored(bare)
    with pytest.raises(Conflict, match="already exists"):
        experiments.create(dataclasses.replace(experiment, name="second"))
    assert experiments.get(experiment.experiment_id).name == "name"
    with pytest.raises(ExperimentNotFound):
        experiments.get(_unique("missing"))


def test_a_transition_moves_only_from_an_allowed_status_and_bumps_the_revision(
    experiments: Any,
) -> None:
    from chalicelib.abtesting.errors import ExperimentNotFound, ExperimentStateConflict
    from chalicelib.abtesting.models import AllocationPhase, ExperimentStatus, PhaseReason

    S = ExperimentStatus
    experiment = _experiment()
    experiments.create(experiment)
    when = experiment.created_at + timedelta(minutes=1)
    phase = AllocationPhase(0, when, PhaseReason.RAMP, {"control": Decimal("0.75")})
    started = experiments.transition(
        experiment.experiment_id, [S.DRAFT], S.RUNNING, when, start_time=when, phase=phase
    )
    expected = dataclasses.replace(
        _as_stored(experiment), status=S.RUNNING, start_time=when, updated_at=when, revision=1,
        phases=(experiment.phases[0], dataclasses.replace(phase, index=1)),
    )  # fmt: skip
    expected = dataclasses.replace(
        expected, phases=(dataclasses.replace(experiment.phases[0], index=0), expected.phases[1])
    )
    assert started == expected == experiments.get(experiment.experiment_id)
    with pytest.raises(ExperimentStateConflict, match="is running; cannot move to concluded"):
        experiments.transition(experiment.experiment_id, [S.DRAFT], S.CONCLUDED, when)
    assert experiments.get(experiment.experiment_id) == expected
    later = when + timedelta(minutes=1)
    details = {"metric": "error_rate", "value": 0.5}
    rolled = experiments.transition(
        experiment.experiment_id, [S.RUNNING, S.PAUSED], S.ROLLED_BACK, later,
        end_time=later, rollback_reason="errors", rollback_details=details, ramp_step=None,
    )  # fmt: skip
    assert (rolled.status, rolled.revision, rolled.rollback_details) == (S.ROLLED_BACK, 2, details)
    assert (rolled.rollback_reason, rolled.end_time, rolled.ramp_step) == ("errors", later, 0)
    assert experiments.get(experiment.experiment_id) == rolled
    with pytest.raises(ExperimentNotFound):
        experiments.transition(_unique("missing"), [S.DRAFT], S.RUNNING, later)


def test_a_transition_with_if_layer_moves_only_while_the_slice_is_that_one(
    experiments: Any,
) -> None:
    from chalicelib.abtesting.errors import ExperimentStateConflict
    from chalicelib.abtesting.models import ExperimentStatus

    S = ExperimentStatus
    experiment = _experiment()
    experiments.create(experiment)
    read = experiment.layer
    when = experiment.created_at + timedelta(minutes=1)
    released = dataclasses.replace(read, end=read.start)
    experiments.transition(experiment.experiment_id, [S.DRAFT], S.DRAFT, when, layer=released)

    with pytest.raises(ExperimentStateConflict, match="slice was released"):
        experiments.transition(experiment.experiment_id, [S.DRAFT], S.RUNNING, when, if_layer=read)

    assert experiments.get(experiment.experiment_id).status is S.DRAFT
    started = experiments.transition(
        experiment.experiment_id, [S.DRAFT], S.RUNNING, when, if_layer=released
    )
    assert started.status is S.RUNNING


def test_an_allocation_changes_only_at_the_expected_revision_of_a_running_experiment(
    experiments: Any,
) -> None:
    from chalicelib.abtesting.models import ExperimentStatus, ModelVariant

    S = ExperimentStatus
    experiment = _experiment()
    experiments.create(experiment)
    when = experiment.created_at + timedelta(minutes=1)
    arms = (
        ModelVariant("control", "m-1", 1, Decimal("0.5"), True),
        ModelVariant("treatment", "m-1", 2, Decimal("0.5")),
    )
    assert experiments.update_allocation(experiment.experiment_id, 0, when, variants=arms) is None
    experiments.transition(experiment.experiment_id, [S.DRAFT], S.RUNNING, when)
    assert experiments.update_allocation(experiment.experiment_id, 0, when, variants=arms) is None
    moved = experiments.update_allocation(
        experiment.experiment_id, 1, when, variants=list(arms), ramp_step=1, last_ramp_at=when
    )
    assert (moved.variants, moved.ramp_step, moved.revision) == (arms, 1, 2)
    assert moved.last_ramp_at == when
    assert experiments.get(experiment.experiment_id) == moved
    assert experiments.update_allocation(_unique("missing"), 0, when, ramp_step=2) is None


def test_access_groups_are_replaced_without_a_new_revision(experiments: Any) -> None:
    from chalicelib.abtesting.errors import ExperimentNotFound

    experiment = _experiment()
    experiments.create(experiment)
    later = experiment.created_at + timedelta(minutes=5)
    changed = experiments.set_access_groups(experiment.experiment_id, ["a", "b"], later)
    expected = dataclasses.replace(
        _as_stored(experiment), access_groups=("a", "b"), updated_at=later
    )
    assert changed == expected == experiments.get(experiment.experiment_id)
    with pytest.raises(ExperimentNotFound):
        experiments.set_access_groups(_unique("missing"), ["a"], later)


def test_experiments_are_listed_newest_first_and_by_status(experiments: Any) -> None:
    from chalicelib.abtesting.models import ExperimentStatus

    S = ExperimentStatus
    start = utc_now() + timedelta(days=3650)  # after every other test's experiments
    made = [_experiment(created_at=start + timedelta(seconds=n)) for n in range(3)]
    for experiment in made:
        experiments.create(experiment)
    experiments.transition(made[1].experiment_id, [S.DRAFT], S.RUNNING, start)
    ours = {e.experiment_id for e in made}
    listed = [e.experiment_id for e in experiments.list_experiments() if e.experiment_id in ours]
    assert listed == [e.experiment_id for e in reversed(made)]
    drafts = [e for e in experiments.list_experiments(S.DRAFT) if e.experiment_id in ours]
    assert [e.experiment_id for e in drafts] == [made[2].experiment_id, made[0].experiment_id]
    assert made[1].experiment_id in experiments.running_ids()
    assert made[0].experiment_id not in experiments.running_ids()


def test_a_rollback_policy_is_replaced_and_absent_ones_are_none(experiments: Any) -> None:
    from chalicelib.abtesting.models import RollbackPolicy

    experiment_id = _unique("exp")
    assert experiments.get_policy(experiment_id) is None
    experiments.save_policy(RollbackPolicy(experiment_id))
    assert experiments.get_policy(experiment_id) == RollbackPolicy(experiment_id)
    policy = RollbackPolicy(
        experiment_id, error_rate_threshold=0.05, latency_degradation_threshold=0.5,
        min_requests_before_rollback=20, latency_percentile="p99", enabled=False,
        error_rate_tolerance=0.3, latency_threshold_ms=250.0, alpha=0.01,
        tuning_sample_size=2000, failure_limit=3,
    )  # fmt: skip
    experiments.save_policy(policy)
    assert experiments.get_policy(experiment_id) == policy


# ---- abtesting: AssignmentStorePort, LayerRecords ----------------------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def assignments(request: pytest.FixtureRequest) -> Any:
    return _implementation(
        request, "abtesting", "repository.AssignmentStore", "memory.InMemoryAssignmentStore"
    )


def test_a_users_first_assignment_is_kept(assignments: Any) -> None:
    experiment_id, now = _unique("exp"), utc_now()
    assert assignments.get_or_assign(experiment_id, "u1", "a", now) == "a"
    assert assignments.get_or_assign(experiment_id, "u1", "b", now) == "a"
    assert assignments.get_or_assign(experiment_id, "u2", "b", now) == "b"
    assert assignments.get_or_assign(_unique("exp"), "u1", "b", now) == "b"


@pytest.fixture(params=IMPLEMENTATIONS)
def layers(request: pytest.FixtureRequest) -> Any:
    return _implementation(
        request, "abtesting", "repository.LayerRepository", "memory.InMemoryLayerRepository"
    )


def _layer(**changes: Any) -> Any:
    from chalicelib.abtesting.models import Layer

    now = utc_now()
    layer = Layer(_unique("layer"), "ranking", "d", "alice", ("ml",), now, now)
    return dataclasses.replace(layer, **changes)


def test_a_layer_changes_only_at_its_revision_and_is_deleted_only_unchanged(layers: Any) -> None:
    from chalicelib.abtesting.errors import LayerNotFound
    from chalicelib.abtesting.models import LayerSlice

    layer = _layer(revision=4)
    layers.create_layer(layer)
    stored = layers.get_layer(layer.layer_id)
    assert stored == dataclasses.replace(layer, revision=0)
    with pytest.raises(Conflict, match="already exists"):
        layers.create_layer(dataclasses.replace(layer, name="second"))
    when = layer.created_at + timedelta(minutes=1)
    taken = {"exp-1": LayerSlice(layer.layer_id, 0, 100)}
    changed = layers.update_layer(stored, when, slices=taken, access_groups=["a"])
    expected = dataclasses.replace(
        stored, slices=taken, access_groups=("a",), updated_at=when, revision=1
    )
    assert changed == expected == layers.get_layer(layer.layer_id)
    assert layers.update_layer(stored, when, slices={}) is None  # a stale revision
    assert layers.delete_layer(stored) is False
    assert layers.get_layer(layer.layer_id) == expected
    assert layers.delete_layer(expected) is True
    with pytest.raises(LayerNotFound):
        layers.get_layer(layer.layer_id)
    assert layers.update_layer(expected, when, slices={}) is None
    assert layers.delete_layer(expected) is False


def test_layers_are_listed_newest_first(layers: Any) -> None:
    start = utc_now() + timedelta(days=3650)
    made = [_layer(created_at=start + timedelta(seconds=n)) for n in range(3)]
    for layer in made:
        layers.create_layer(layer)
    ours = {layer.layer_id for layer in made}
    listed = [layer for layer in layers.list_layers() if layer.layer_id in ours]
    assert listed == list(reversed(made))


def test_holdouts_read_back_oldest_first_and_unknown_ones_are_not_found(layers: Any) -> None:
    from chalicelib.abtesting.errors import HoldoutNotFound
    from chalicelib.abtesting.models import Holdout

    start = utc_now() - timedelta(days=3650)  # before every other test's holdouts
    made = [
        Holdout(_unique("h"), "global", Decimal("0.1"), (), "admin", start),
        Holdout(_unique("h"), "ranking", Decimal("0.05"), ("l-1", "l-2"), "admin", start),
    ]
    for holdout in made:
        layers.create_holdout(holdout)
    assert layers.get_holdout(made[1].holdout_id) == made[1]
    with pytest.raises(Conflict, match="already exists"):
        layers.create_holdout(dataclasses.replace(made[1], name="second"))
    assert layers.get_holdout(made[1].holdout_id) == made[1]
    listed = [h for h in layers.list_holdouts() if h.created_at == start][-2:]
    assert listed == sorted(made, key=lambda h: h.holdout_id)
    layers.delete_holdout(made[0].holdout_id)
    with pytest.raises(HoldoutNotFound):
        layers.get_holdout(made[0].holdout_id)
    with pytest.raises(HoldoutNotFound):
        layers.delete_holdout(made[0].holdout_id)


# ---- dataversion: LineageStore ---------------------------------------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def lineage(request: pytest.FixtureRequest) -> Any:
    return _implementation(
        request, "dataversion", "repository.LineageRepository", "memory.InMemoryLineageRepository"
    )


def test_lineage_nodes_are_replaced_and_unknown_ones_left_out(lineage: Any) -> None:
    from chalicelib.dataversion.models import LineageNode

    now = utc_now()
    node = LineageNode(_unique("v"), "ds-1", 3, "ab" * 32, now, depth=5)
    bare = LineageNode(_unique("v"), "", 0, "", None)
    lineage.put_node(node)
    lineage.put_node(bare)
    missing = _unique("missing")
    found = lineage.get_nodes([node.version_id, missing, bare.version_id, node.version_id])
    assert found == {node.version_id: dataclasses.replace(node, depth=0), bare.version_id: bare}
    found[node.version_id].depth = 9  # a caller's change to a node it read is not stored
    deleted = dataclasses.replace(node, deleted_at=now + timedelta(days=1), depth=0)
    lineage.put_node(deleted)
    assert lineage.get_nodes([node.version_id]) == {node.version_id: deleted}
    assert lineage.get_nodes([]) == {}


def test_an_edge_is_read_from_both_ends_ordered_by_the_other_end(lineage: Any) -> None:
    from chalicelib.dataversion.models import LineageEdge

    child, parents = _unique("c"), [_unique(p) for p in ("p3", "p1", "p2")]
    edges = [
        LineageEdge(parents[0], child, "tr-1", "join"),
        LineageEdge(parents[1], child, "tr-1", "join"),
        LineageEdge(parents[2], child),
    ]
    for edge in edges + edges[:1]:  # storing an edge twice keeps one
        lineage.put_edge(edge)
    assert lineage.edges(child, "up") == sorted(edges, key=lambda e: e.parent_id)
    assert lineage.edges(child, "down") == []
    assert lineage.edges(parents[2], "down") == [edges[2]]
    assert lineage.edges(parents[2], "up") == []
    grandchild = _unique("g")
    lineage.put_edge(LineageEdge(child, grandchild, "tr-2", "filter"))
    assert lineage.edges(child, "down") == [LineageEdge(child, grandchild, "tr-2", "filter")]
    assert lineage.edges(_unique("missing"), "up") == []


# ---- explainability: ExplanationCacheStore, ExplanationJobStore ------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def explanations(request: pytest.FixtureRequest) -> Any:
    return _implementation(
        request,
        "explainability",
        "repository.ExplanationRepository",
        "in_memory.InMemoryExplanationRepository",
    )


def _cached(model_id: str, key: str, version: int = 1, **changes: Any) -> Any:
    from chalicelib.explainability.repository import CachedItem

    payload = {"values": [0.25, -1.5], "names": ["a", "b"], "nested": {"k": None}}
    expires = utc_now().replace(microsecond=0) + timedelta(hours=1)
    return dataclasses.replace(CachedItem(model_id, key, version, payload, expires), **changes)


def test_cached_items_read_back_until_they_expire(explanations: Any) -> None:
    model_id, now = _unique("m"), utc_now()
    item = _cached(model_id, "0a")
    assert explanations.cache_put(item, now) is True
    assert explanations.cache_get(model_id, "0a", now) == item
    assert explanations.cache_get(model_id, "0a", item.expires_at) is None
    assert explanations.cache_get(model_id, "0b", now) is None
    assert explanations.cache_get(_unique("m"), "0a", now) is None
    replaced = _cached(model_id, "0a", payload={"tuple": [1, 2]})
    explanations.cache_put(dataclasses.replace(replaced, payload={"tuple": (1, 2)}), now)
    assert explanations.cache_get(model_id, "0a", now) == replaced  # stored as JSON
    fine = _cached(model_id, "0c", expires_at=item.expires_at + timedelta(microseconds=999_999))
    explanations.cache_put(fine, now)  # the expiry is kept in whole seconds
    whole = dataclasses.replace(fine, expires_at=item.expires_at)
    assert explanations.cache_get(model_id, "0c", now) == whole
    assert explanations.cache_get(model_id, "0c", item.expires_at) is None


def test_cached_items_are_read_and_stored_in_batches(explanations: Any) -> None:
    model_id, now = _unique("m"), utc_now()
    items = [_cached(model_id, f"{n:02x}") for n in range(30)]
    items[3] = dataclasses.replace(items[3], expires_at=now - timedelta(seconds=1))
    assert explanations.cache_put_many(items, now) == 30
    keys = [item.cache_key for item in items] + ["ff", "00"]
    found = explanations.cache_get_many(model_id, keys, now)
    assert found == {item.cache_key: item for n, item in enumerate(items) if n != 3}


def test_an_item_too_large_to_store_is_skipped(explanations: Any) -> None:
    import secrets

    model_id, now = _unique("m"), utc_now()
    large = _cached(model_id, "0a", payload={"noise": secrets.token_hex(400 * 1024)})
    assert explanations.cache_put(large, now) is False
    assert explanations.cache_put_many([large, _cached(model_id, "0b")], now) == 1
    assert set(explanations.cache_get_many(model_id, ["0a", "0b"], now)) == {"0b"}


def test_generations_count_up_per_model_and_version_and_survive_deletion(
    explanations: Any,
) -> None:
    model_id, now = _unique("m"), utc_now()
    assert explanations.cache_generations(model_id) == {}
    assert explanations.bump_cache_generation(model_id) == 1
    assert explanations.bump_cache_generation(model_id, 2) == 1
    assert explanations.bump_cache_generation(model_id) == 2
    explanations.cache_put(_cached(model_id, "0a", 2), now)
    assert explanations.cache_delete_model(model_id) == {"0a"}
    assert explanations.cache_generations(model_id) == {None: 2, 2: 1}
    assert explanations.cache_generations(_unique("m")) == {}


def test_deleting_a_models_items_takes_one_version_or_all(explanations: Any) -> None:
    model_id, other, now = _unique("m"), _unique("m"), utc_now()
    for key, version in (("0a", 1), ("0b", 1), ("0c", 2)):
        explanations.cache_put(_cached(model_id, key, version), now)
    explanations.cache_put(_cached(other, "0a", 1), now)
    assert explanations.cache_delete_model(model_id, 1) == {"0a", "0b"}
    assert set(explanations.cache_get_many(model_id, ["0a", "0b", "0c"], now)) == {"0c"}
    assert explanations.cache_delete_model(model_id) == {"0c"}
    assert explanations.cache_delete_model(model_id) == set()
    assert explanations.cache_get(other, "0a", now) is not None


def _job(**changes: Any) -> Any:
    from chalicelib.explainability.repository import JobRecord

    now = utc_now()
    job = JobRecord(
        _unique("job"), "batch", "queued", "alice", {"rows": [[1, 2]], "caller": {"groups": ["g"]}},
        None, None, 0, now, now,
    )  # fmt: skip
    return dataclasses.replace(job, **changes)


def test_a_job_reads_back_and_a_second_with_its_id_is_a_conflict(explanations: Any) -> None:
    from chalicelib.explainability.errors import ExplanationJobNotFound

    job = _job()
    explanations.create_job(dataclasses.replace(job, attempts=4, result={"x": 1}))
    assert explanations.get_job(job.job_id) == job
    with pytest.raises(Conflict, match="already exists"):
        explanations.create_job(dataclasses.replace(job, owner="mallory"))
    assert explanations.get_job(job.job_id) == job
    explanations.delete_job(job.job_id)
    explanations.delete_job(job.job_id)  # deleting what is absent is not an error
    with pytest.raises(ExplanationJobNotFound):
        explanations.get_job(job.job_id)


def test_a_job_runs_under_a_lease_and_finishes_only_while_running(explanations: Any) -> None:
    job, now = _job(), utc_now()
    explanations.create_job(job)
    with pytest.raises(Conflict, match="is not running"):
        explanations.finish_job(job.job_id, "succeeded", now, result=[1])
    lease = now + timedelta(minutes=5)
    assert explanations.start_job(job.job_id, now, lease) is True
    assert explanations.start_job(job.job_id, now, lease) is False  # the lease holds
    running = explanations.get_job(job.job_id)
    assert (running.status, running.attempts, running.lease_until) == ("running", 1, lease)
    later = lease + timedelta(seconds=1)
    assert explanations.start_job(job.job_id, later, later + timedelta(minutes=5)) is True
    explanations.release_job(job.job_id, later)
    released = explanations.get_job(job.job_id)
    assert (released.status, released.attempts, released.lease_until) == ("queued", 2, None)
    assert released.updated_at == later
    explanations.release_job(job.job_id, later)  # not running: nothing changes
    assert explanations.get_job(job.job_id) == released
    assert explanations.start_job(job.job_id, later, lease) is True
    explanations.finish_job(job.job_id, "succeeded", later, result={"rows": [[0.5, (1, 2)]]})
    done = explanations.get_job(job.job_id)
    assert (done.status, done.result, done.error, done.lease_until) == (
        "succeeded", {"rows": [[0.5, [1, 2]]]}, None, None,
    )  # fmt: skip
    assert explanations.start_job(job.job_id, later, lease) is False
    assert explanations.start_job(_unique("missing"), later, lease) is False


def test_a_failed_job_keeps_its_error(explanations: Any) -> None:
    job, now = _job(), utc_now()
    explanations.create_job(job)
    explanations.start_job(job.job_id, now, now + timedelta(minutes=1))
    error = {"error": "too_expensive", "message": "m"}
    explanations.finish_job(job.job_id, "failed", now, error=error)
    failed = explanations.get_job(job.job_id)
    assert (failed.status, failed.error, failed.result) == ("failed", error, None)


# ---- abtesting: OutcomeCounters --------------------------------------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def outcomes(request: pytest.FixtureRequest) -> Any:
    return _implementation(
        request, "abtesting", "outcomes_repository.OutcomeStore", "memory.InMemoryOutcomeStore"
    )


def _outcomes(count: int, start: int = 0) -> list[Any]:
    from chalicelib.abtesting.models import Outcome

    countries = ["DE", "FR", "BR", "US", "JP"]
    return [
        Outcome(
            "control" if n % 3 else "treatment", f"r-{n}", n % 7 != 0, 10.0 + n % 50 * 1.5,
            converted=n % 4 == 0 if n % 5 else None,
            custom_metrics={"revenue": n % 11 * 2.25} if n % 2 else {},
            phase=n % 2, covariate=float(n % 9) if n % 3 == 0 else None,
            attributes={"country": countries[n % 5]} if n % 6 else {},
        )
        for n in range(start, start + count)
    ]  # fmt: skip


def test_each_request_id_counts_once_per_phase_and_variant(outcomes: Any) -> None:
    from chalicelib.abtesting.outcomes_repository import SegmentPlan

    experiment_id, now = _unique("exp"), utc_now()
    batch = _outcomes(120)
    first = outcomes.record(experiment_id, batch + batch[:5], now, "revenue", SegmentPlan())
    assert (first.accepted, first.duplicates) == (120, 5)
    again = outcomes.record(experiment_id, batch[100:] + _outcomes(10, 120), now, "revenue")
    assert (again.accepted, again.duplicates) == (10, 20)
    counted = batch + _outcomes(10, 120)
    phases = outcomes.read_phases(experiment_id)
    for phase in (0, 1):
        for variant in ("control", "treatment"):
            mine = [o for o in counted if o.phase == phase and o.variant_id == variant]
            sums = phases[phase][variant]["sums"]
            assert sums["request_count"] == len(mine)
            assert sums.get("error_count", 0) == sum(not o.success for o in mine)
            assert sums.get("conversion_trials", 0) == sum(o.converted is not None for o in mine)
            assert sums.get("converted_count", 0) == sum(o.converted is True for o in mine)
            assert sums["latency_sum"] == sum(Decimal(str(o.latency_ms)) for o in mine)
            assert sum(phases[phase][variant]["histogram"].values()) == len(mine)
    merged = outcomes.read(experiment_id)
    for variant in ("control", "treatment"):
        total = sum(phases[p][variant]["sums"]["request_count"] for p in (0, 1))
        assert merged[variant]["sums"]["request_count"] == total
    assert outcomes.read(_unique("exp")) == {} and outcomes.read_phases(_unique("exp")) == {}


def test_both_implementations_count_the_same_sums_segments_and_folds(module_aws: Any) -> None:
    from chalicelib.abtesting.memory import InMemoryOutcomeStore
    from chalicelib.abtesting.models import Dimension
    from chalicelib.abtesting.outcomes_repository import OutcomeStore, SegmentPlan

    plan = SegmentPlan((Dimension("country", 3), Dimension("plan", 2)), metric="revenue")
    experiment_id, now = _unique("exp"), utc_now()
    reads = []
    for store in (OutcomeStore(), InMemoryOutcomeStore()):
        for start in range(0, 90, 30):
            store.record(experiment_id, _outcomes(30, start), now, "revenue", plan)
        reads.append(
            (store.read(experiment_id), store.read_phases(experiment_id),
             store.read_segments(experiment_id))
        )  # fmt: skip
    assert reads[0] == reads[1]
    segments = reads[1][2]
    assert set(segments["country"]) == {"FR", "BR", "US", "(other)", "(missing)"}  # first 3
    assert set(segments["plan"]) == {"(missing)"}
    assert reads[1][0]["treatment"]["sums"]["cv:n"] == 15  # n = 3, 9, ..., 87 carry x and y


def test_both_implementations_count_the_same_declared_sources_and_ratio_sums_per_segment(
    module_aws: Any,
) -> None:
    from dataclasses import replace

    from chalicelib.abtesting.memory import InMemoryOutcomeStore
    from chalicelib.abtesting.metrics import increments
    from chalicelib.abtesting.models import Dimension, MetricSpec
    from chalicelib.abtesting.outcomes_repository import OutcomeStore, SegmentPlan

    ctr = MetricSpec("ctr", "ratio", numerator="clicks", denominator="sessions")
    plan = SegmentPlan((Dimension("country", 3),), sources=("basket",), ratios=("ctr",))
    batch = []
    for outcome in _outcomes(90):
        n = int(outcome.request_id[2:])
        values = {"clicks": float(n % 4), "sessions": float(n % 3 + 1), "basket": n % 13 * 1.75}
        batch.append(replace(outcome, custom_metrics=values, declared=increments(values, ctr)))
    experiment_id, now = _unique("exp"), utc_now()
    reads = []
    for store in (OutcomeStore(), InMemoryOutcomeStore()):
        for start in range(0, 90, 30):
            store.record(experiment_id, batch[start : start + 30], now, None, plan)
        reads.append(store.read_segments(experiment_id))
    assert reads[0] == reads[1]
    us = reads[1]["country"]["US"][1]["treatment"]  # phase 1: n = 3, 33, 63 (n % 30 == 3)
    assert us["sums"]["request_count"] == 3
    assert {k for k in us["sums"] if k.startswith("r:ctr:")} and any(
        "basket" in k for k in us["sums"]
    )


# ---- abtesting: ExplanationInputRecords ------------------------------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def posted(request: pytest.FixtureRequest) -> Any:
    return _implementation(
        request,
        "abtesting",
        "repository.ExplanationInputStore",
        "memory.InMemoryExplanationInputStore",
    )


def test_posted_inputs_are_read_in_key_order_and_trimmed_to_the_smallest(posted: Any) -> None:
    experiment_id = _unique("exp")
    rows = {f"{n:04x}|r{n}": f'{{"x": {n}}}' for n in (40, 3, 17, 250, 9)}
    posted.add(experiment_id, rows)
    posted.add(experiment_id, {"0003|r3": '{"x": 3, "again": true}'})  # a key is overwritten
    posted.add(_unique("exp"), {"0000|r0": '{"x": 0}'})  # another experiment's partition
    assert posted.keys(experiment_id, 3) == ["0003|r3", "0009|r9", "0011|r17"]
    assert posted.rows(experiment_id, 2) == [{"x": 3, "again": True}, {"x": 9}]
    assert posted.trim(experiment_id, 6) == 0  # fewer than asked: nothing to trim
    assert posted.trim(experiment_id, 2) == 3
    assert posted.keys(experiment_id, 10) == ["0003|r3", "0009|r9"]
    assert posted.keys(_unique("exp"), 10) == [] and posted.rows(_unique("exp"), 10) == []


# ---- dataversion: DatasetCatalog -------------------------------------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def catalog(request: pytest.FixtureRequest) -> Any:
    return _implementation(
        request, "dataversion", "repository.DatasetRepository", "memory.InMemoryDatasetRepository"
    )


def _dataset(**changes: Any) -> Any:
    from chalicelib.dataversion.models import (
        CompatibilityMode,
        Dataset,
        DatasetFormat,
        DatasetSchema,
        DriftLimits,
    )

    schema = DatasetSchema({"a": "int", "b": "string"}, primary_key=["a"], nullable=["b"])
    dataset = Dataset(
        _unique("ds"), _unique("name"), "alice", ["ml"], DatasetFormat.CSV,
        CompatibilityMode.BACKWARD, "d", schema, utc_now(), drift_limits=DriftLimits(psi=0.2),
    )  # fmt: skip
    return dataclasses.replace(dataset, **changes)


def _dataset_version(dataset: Any, number: int, **changes: Any) -> Any:
    from chalicelib.dataversion.models import DatasetFormat, DatasetSchema, DatasetVersion

    sha = uuid.uuid4().hex * 2
    version = DatasetVersion(
        _unique("v"), dataset.dataset_id, number, sha, 10 * number, f"data/{sha}",
        DatasetFormat.CSV, DatasetSchema({"a": "int"}), 3, [], None, {"k": "v"}, "alice",
        utc_now(), warnings=["w"], source_key="uploads/x.csv", schema_sampled_rows=3,
        cell_typing="pyarrow",
    )  # fmt: skip
    return dataclasses.replace(version, **changes)


def test_a_dataset_reads_back_by_id_and_name_and_its_name_is_reserved(catalog: Any) -> None:
    from chalicelib.dataversion.errors import DatasetNotFound
    from chalicelib.dataversion.models import RetentionPolicy

    dataset = _dataset(retention=RetentionPolicy(keep_last=3))
    catalog.create_dataset(dataset)
    stored = dataclasses.replace(dataset, retention=None)  # set apart, not on creation
    assert catalog.get_dataset(dataset.dataset_id) == stored
    assert catalog.find_dataset(dataset.dataset_id) == stored == catalog.find_dataset(dataset.name)
    assert catalog.find_dataset(_unique("missing")) is None
    with pytest.raises(Conflict, match="already exists"):
        catalog.create_dataset(_dataset(name=dataset.name))
    with pytest.raises(DatasetNotFound):
        catalog.get_dataset(_unique("missing"))
    changed = catalog.set_access_groups(dataset.dataset_id, ["a", "b"])
    assert changed == dataclasses.replace(stored, access_groups=["a", "b"])
    assert catalog.get_dataset(dataset.dataset_id) == changed
    bare = _dataset(declared_schema=None, drift_limits=None, access_groups=[])
    catalog.create_dataset(bare)
    ours = {dataset.dataset_id, bare.dataset_id}
    listed = [d for d in catalog.list_datasets() if d.dataset_id in ours]
    assert listed == sorted([changed, bare], key=lambda d: d.name)


def test_versions_are_numbered_and_found_by_number_id_content_and_source(catalog: Any) -> None:
    from chalicelib.dataversion.errors import DatasetVersionNotFound

    dataset = _dataset()
    catalog.create_dataset(dataset)
    assert catalog.latest_version_number(dataset.dataset_id) == 0
    first = _dataset_version(dataset, 1)
    second = _dataset_version(dataset, 2, schema=None, row_count=None, tags={}, warnings=[])
    catalog.add_version(first, source="bucket/k#e1#", profile=b"\x00profile")
    catalog.add_version(second, predecessor=first)
    assert catalog.latest_version_number(dataset.dataset_id) == 2
    assert catalog.get_version(dataset.dataset_id, 1) == first
    assert catalog.get_version_by_id(second.version_id) == second
    assert catalog.version_by_hash(dataset.dataset_id, second.sha256) == second
    assert catalog.version_by_hash(dataset.dataset_id, "0" * 64) is None
    assert catalog.version_for_source("bucket/k#e1#") == first
    catalog.reserve_source("bucket/k#e1#", second)  # kept as it was
    catalog.reserve_source("bucket/k#e2#", second)
    assert catalog.version_for_source("bucket/k#e1#") == first
    assert catalog.version_for_source("bucket/k#e2#") == second
    assert catalog.version_for_source("bucket/none") is None
    assert catalog.get_profile(first.version_id) == b"\x00profile"
    assert catalog.get_profile(second.version_id) is None
    assert catalog.list_versions(dataset.dataset_id, 1, 0) == [first]
    assert catalog.list_versions(dataset.dataset_id, 5, 1) == [second]
    assert list(catalog.versions_descending(dataset.dataset_id)) == [second, first]
    with pytest.raises(DatasetVersionNotFound):
        catalog.get_version(dataset.dataset_id, 3)
    with pytest.raises(DatasetVersionNotFound):
        catalog.get_version_by_id(_unique("missing"))


def test_a_version_whose_reservation_is_taken_stores_nothing(catalog: Any) -> None:
    from chalicelib.dataversion.errors import DuplicateContent, DuplicateSource, VersionNumberTaken

    dataset = _dataset()
    catalog.create_dataset(dataset)
    first = _dataset_version(dataset, 1)
    catalog.add_version(first, source="src-1")
    with pytest.raises(DuplicateContent):
        catalog.add_version(_dataset_version(dataset, 2, sha256=first.sha256))
    with pytest.raises(DuplicateSource):
        catalog.add_version(_dataset_version(dataset, 2), source="src-1")
    with pytest.raises(VersionNumberTaken):  # the number
        catalog.add_version(_dataset_version(dataset, 1))
    stale = _dataset_version(dataset, 1)
    with pytest.raises(VersionNumberTaken):  # a predecessor that is not version 1
        catalog.add_version(_dataset_version(dataset, 2), predecessor=stale)
    assert catalog.latest_version_number(dataset.dataset_id) == 1
    assert catalog.list_versions(dataset.dataset_id, 10, 0) == [first]


def test_deleting_a_version_frees_its_content_references_and_profile(catalog: Any) -> None:
    from chalicelib.dataversion.errors import VersionNumberTaken

    dataset, other = _dataset(), _dataset()
    catalog.create_dataset(dataset)
    catalog.create_dataset(other)
    first = _dataset_version(dataset, 1)
    twin = _dataset_version(other, 1, sha256=first.sha256, storage_key=first.storage_key)
    catalog.add_version(first, profile=b"p")
    catalog.add_version(twin)
    assert catalog.live_versions_with_content(first.sha256) == sorted(
        [first, twin], key=lambda v: f"{v.dataset_id}#{v.version_number}"
    )
    when = utc_now()
    deleted = catalog.delete_version(first, "bob", when)
    assert deleted == dataclasses.replace(first, deleted_at=when, deleted_by="bob")
    assert catalog.get_profile(first.version_id) is None
    assert catalog.version_by_hash(dataset.dataset_id, first.sha256) is None
    assert catalog.live_versions_with_content(first.sha256) == [twin]
    assert catalog.referenced(first.storage_key) is True  # the twin still points to it
    with pytest.raises(VersionNumberTaken):
        catalog.delete_version(first, "bob", when)
    catalog.delete_version(twin, "bob", when)
    assert catalog.referenced(first.storage_key) is False
    assert catalog.live_versions_with_content(first.sha256) == []
    restored = _dataset_version(dataset, 2, sha256=first.sha256, restored_from=first.version_id)
    with pytest.raises(Conflict, match="no longer held"):  # the content was freed
        catalog.add_version(restored)
    catalog.add_version(dataclasses.replace(restored, restored_from=None))
    assert catalog.version_by_hash(dataset.dataset_id, first.sha256).version_number == 2


def test_a_claimed_or_collected_object_takes_no_new_version(catalog: Any) -> None:
    from chalicelib.dataversion.errors import ObjectCollected

    dataset = _dataset()
    catalog.create_dataset(dataset)
    first = _dataset_version(dataset, 1)
    key = first.storage_key
    assert catalog.object_state(key) == (0, False)
    assert catalog.claim_object(key, "gc-1") is True
    assert catalog.claim_object(key, "gc-2") is False
    assert catalog.object_state(key) == (0, True)
    with pytest.raises(ObjectCollected):
        catalog.add_version(first)
    catalog.release_object(key, "gc-1", deleted=True)
    assert catalog.object_state(key) == (1, False)
    with pytest.raises(ObjectCollected):  # its bytes were seen before the deletion
        catalog.add_version(first, object_generation=0)
    catalog.add_version(first, object_generation=1)
    assert catalog.referenced(key) is True
    assert catalog.claim_object(key, "gc-3") is False  # a live version points to it
    catalog.delete_version(first, "bob", utc_now())
    assert catalog.claim_object(key, "gc-3") is True
    catalog.release_object(key, "gc-3", deleted=False)
    assert catalog.object_state(key) == (1, False)


# ---- abtesting: ExplanationGuardrailRecords --------------------------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def guardrails(request: pytest.FixtureRequest) -> Any:
    return _implementation(
        request,
        "abtesting",
        "repository.ExplanationGuardrailStore",
        "memory.InMemoryExplanationGuardrailStore",
    )


def test_an_evaluation_is_started_and_decided_once_per_revision_and_round(
    guardrails: Any,
) -> None:
    experiment_id, now = _unique("exp"), utc_now()
    declaration = {"guardrails": [{"type": "ndcg", "min": 0.5}], "sample_size": 20}
    assert guardrails.get(experiment_id) is None
    assert guardrails.start(experiment_id, "r1", {"status": "pending"}, now) is False  # none
    guardrails.put(experiment_id, "r1", declaration, now)
    assert guardrails.get(experiment_id) == (declaration, None)
    pending = {"status": "pending", "jobs": {"v": "job-1"}}
    assert guardrails.start(experiment_id, "r0", pending, now) is False  # another revision
    assert guardrails.start(experiment_id, "r1", pending, now) is True
    assert guardrails.start(experiment_id, "r1", pending, now) is False  # started already
    assert guardrails.finish(experiment_id, "r1", {"status": "passed", "round": 1}, now) is False
    passed = {"status": "passed", "round": 0, "observed": [0.9]}
    assert guardrails.finish(experiment_id, "r1", passed, now) is True
    assert guardrails.finish(experiment_id, "r1", passed, now) is False  # decided already
    assert guardrails.get(experiment_id) == (declaration, passed)
    later = {"status": "pending", "round": 1}
    assert guardrails.start(experiment_id, "r1", {"status": "pending", "round": 2}, now) is False
    assert guardrails.start(experiment_id, "r1", later, now) is True  # the next round
    guardrails.put(experiment_id, "r2", declaration, now)  # a redeclaration drops it
    assert guardrails.get(experiment_id) == (declaration, None)
    assert guardrails.finish(experiment_id, "r1", {"status": "failed", "round": 1}, now) is False
    assert guardrails.delete(experiment_id) is True and guardrails.delete(experiment_id) is False
    assert guardrails.get(experiment_id) is None


# ---- abtesting: CanaryCheckRecords -----------------------------------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def canary_checks(request: pytest.FixtureRequest) -> Any:
    return _implementation(
        request, "abtesting", "repository.CanaryCheckStore", "memory.InMemoryCanaryCheckStore"
    )


def test_a_canary_check_counts_once_per_tick_and_failures_in_a_row(canary_checks: Any) -> None:
    experiment_id, now = _unique("exp"), utc_now()
    variants = [{"variant_id": "t", "outcome": "fail", "observed": 0.5}]
    assert canary_checks.get(experiment_id) is None
    first = canary_checks.record(experiment_id, "t001", "fail", "errors", variants, now)
    assert (first.checks, first.consecutive_failures, first.variants) == (1, 1, tuple(variants))
    assert (first.tick, first.outcome, first.reason, first.checked_at) == (
        "t001",
        "fail",
        "errors",
        now,
    )
    again = canary_checks.record(experiment_id, "t001", "pass", "ok", [], now)  # redelivered
    assert again == first == canary_checks.get(experiment_id)
    assert canary_checks.record(experiment_id, "t000", "pass", "ok", [], now) == first  # older
    second = canary_checks.record(experiment_id, "t002", "fail", "errors", variants, now)
    assert (second.checks, second.consecutive_failures) == (2, 2)
    passed = canary_checks.record(experiment_id, "t003", "pass", "ok", [], now)
    assert (passed.checks, passed.consecutive_failures, passed.variants) == (3, 0, ())
    assert canary_checks.get(experiment_id) == passed


def test_a_transformation_record_reads_back_and_a_second_save_completes_it(catalog: Any) -> None:
    from chalicelib.dataversion.errors import TransformationNotFound
    from chalicelib.dataversion.models import TransformationRecord, TransformationType

    record = TransformationRecord(
        _unique("tr"), TransformationType.FILTER, {"predicates": [{"column": "a", "op": "gt"}]},
        ["v-1", "v-2"], {}, {"mean": {"a": 1.5}}, True, None, "alice",
        utc_now().replace(microsecond=0),
    )  # fmt: skip
    catalog.save_transformation(record)
    assert catalog.get_transformation(record.transformation_id) == record
    done = dataclasses.replace(record, output_version_ids={"output": "v-3"})
    catalog.save_transformation(done)
    assert catalog.get_transformation(record.transformation_id) == done
    with pytest.raises(TransformationNotFound):
        catalog.get_transformation(_unique("tr"))


# ---- dataversion: ObjectStore ---------------------------------------------------------------


@pytest.fixture(params=IMPLEMENTATIONS)
def objects(request: pytest.FixtureRequest) -> Any:
    return _implementation(
        request, "dataversion", "storage.DataStore", "memory.InMemoryObjectStore"
    )


def test_streamed_content_reads_back_whole_and_in_chunks(objects: Any) -> None:
    data = bytes(range(256)) * 50_000  # 12.8 MB: more than one chunk of either store
    key, size = objects.upload_stream(data[i : i + 1_000_000] for i in range(0, len(data), 10**6))
    assert key.startswith("tmp/") and size == len(data)
    chunks = list(objects.iter_object(key))
    assert b"".join(chunks) == data and all(len(c) <= objects.chunk_bytes for c in chunks)
    assert objects.read(key) == data
    info = objects.head(key)
    assert (info.key, info.size, info.version_id) == (key, len(data), None)
    assert objects.exists(key) and not objects.exists(_unique("cas/missing"))
    assert objects.head(_unique("cas/missing")) is None


def test_a_copy_holds_the_source_and_a_put_replaces_it(objects: Any) -> None:
    prefix = _unique("contract")
    objects.put(f"{prefix}/a", b"first")
    objects.copy(f"{prefix}/a", f"{prefix}/b", 5)
    objects.put(f"{prefix}/a", b"second")
    assert objects.read(f"{prefix}/b") == b"first" and objects.read(f"{prefix}/a") == b"second"
    assert objects.head(f"{prefix}/a").etag != objects.head(f"{prefix}/b").etag
    assert [key for key, _ in objects.list_objects(f"{prefix}/")] == [f"{prefix}/a", f"{prefix}/b"]
    assert all(when.tzinfo is not None for _, when in objects.list_objects(f"{prefix}/"))


def test_a_conditional_delete_removes_only_the_object_it_names(objects: Any) -> None:
    key = _unique("contract/x")
    objects.put(key, b"one")
    stale = objects.head(key).etag
    objects.put(key, b"two")
    assert objects.delete_if_unchanged(key, stale) is False and objects.read(key) == b"two"
    assert objects.delete_if_unchanged(key, objects.head(key).etag) is True
    assert not objects.exists(key) and objects.delete_if_unchanged(key, stale) is False
    objects.delete(key)  # absent: nothing happens
    assert list(objects.list_objects(key)) == []


# ---- every interface, both implementations ---------------------------------------------------

# (Protocol, DynamoDB/S3 implementation, in-memory implementation, whether the Protocol covers
# every public method of the AWS one: a new repository method then needs its in-memory twin).
INTERFACES = [
    ("auth.ports.ApiKeyStore", "auth.repository.ApiKeyRepository",
     "auth.memory.InMemoryApiKeyRepository", True),
    ("registry.ports.RegistryRecords", "registry.repository.RegistryRepository",
     "registry.memory.InMemoryRegistryRepository", True),
    ("registry.ports.ArtifactBlobs", "registry.storage.ArtifactStore",
     "registry.memory.InMemoryArtifactStore", False),
    ("abtesting.ports.ExperimentRecords", "abtesting.repository.ExperimentRepository",
     "abtesting.memory.InMemoryExperimentRepository", True),
    ("abtesting.routing.AssignmentStorePort", "abtesting.repository.AssignmentStore",
     "abtesting.memory.InMemoryAssignmentStore", True),
    ("abtesting.ports.LayerRecords", "abtesting.repository.LayerRepository",
     "abtesting.memory.InMemoryLayerRepository", True),
    ("abtesting.ports.OutcomeCounters", "abtesting.outcomes_repository.OutcomeStore",
     "abtesting.memory.InMemoryOutcomeStore", False),
    ("abtesting.ports.CanaryCheckRecords", "abtesting.repository.CanaryCheckStore",
     "abtesting.memory.InMemoryCanaryCheckStore", True),
    ("abtesting.ports.ExplanationGuardrailRecords",
     "abtesting.repository.ExplanationGuardrailStore",
     "abtesting.memory.InMemoryExplanationGuardrailStore", True),
    ("abtesting.ports.ExplanationInputRecords", "abtesting.repository.ExplanationInputStore",
     "abtesting.memory.InMemoryExplanationInputStore", True),
    ("dataversion.ports.DatasetCatalog", "dataversion.repository.DatasetRepository",
     "dataversion.memory.InMemoryDatasetRepository", False),
    ("dataversion.ports.LineageStore", "dataversion.repository.LineageRepository",
     "dataversion.memory.InMemoryLineageRepository", True),
    ("dataversion.ports.ObjectStore", "dataversion.storage.DataStore",
     "dataversion.memory.InMemoryObjectStore", False),
    ("explainability.ports.ExplanationCacheStore",
     "explainability.repository.ExplanationRepository",
     "explainability.in_memory.InMemoryExplanationRepository", False),
    ("explainability.ports.ExplanationJobStore",
     "explainability.repository.ExplanationRepository",
     "explainability.in_memory.InMemoryExplanationRepository", False),
]  # fmt: skip


def _class(dotted: str) -> Any:
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(f"chalicelib.{module}"), name)


def _public_methods(cls: Any) -> set[str]:
    return {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}


@pytest.mark.parametrize(("port", "aws", "memory", "complete"), INTERFACES)
def test_both_implementations_have_every_method_of_their_interface(
    port: str, aws: str, memory: str, complete: bool
) -> None:
    import inspect

    wanted = _public_methods(_class(port))
    for implementation in (_class(aws), _class(memory)):
        for name in wanted:
            method = getattr(implementation, name, None)
            assert callable(method), (implementation.__name__, name)
            expected = inspect.signature(getattr(_class(port), name)).parameters
            assert list(inspect.signature(method).parameters) == list(expected), name
    if complete:
        assert _public_methods(_class(aws)) <= wanted, "a repository method without its Protocol"


def test_the_interface_table_names_every_ports_protocol() -> None:
    from typing import Protocol

    listed = {port for port, *_ in INTERFACES}
    for package in ("auth", "registry", "abtesting", "dataversion", "explainability"):
        ports = importlib.import_module(f"chalicelib.{package}.ports")
        for name, value in vars(ports).items():
            protocol = isinstance(value, type) and Protocol in value.__mro__
            if protocol and value.__module__ == ports.__name__:
                assert f"{package}.ports.{name}" in listed, name
