"""shaped(<Out model>, source): every declared field read from a domain object or a JSON
mapping, nothing else; the registry and auth responses built with it show only their schema."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from chalicelib.abtesting.bayes import BayesianResult
from chalicelib.abtesting.cuped import CupedResult
from chalicelib.abtesting.schemas import BayesianReadingOut, CupedOut
from chalicelib.auth.models import ApiKey
from chalicelib.auth.schemas import IssuedKeyOut, KeyList
from chalicelib.core import jsonutil
from chalicelib.core.shaping import mirrored, shaped
from chalicelib.dataversion.models import DatasetUsage, Rejection, TagMove, TransformationRecord
from chalicelib.dataversion.reconstruction import ReproducibilityReport
from chalicelib.dataversion.schemas import (
    RejectionOut,
    ReproducibilityOut,
    TagOut,
    TransformationOut,
    UsageOut,
)
from chalicelib.explainability.models import PredictionExplanation
from chalicelib.explainability.schemas import ExplanationOut
from chalicelib.registry.models import ModelStage, ModelTask, ModelVersion, RegisteredModel
from chalicelib.registry.schemas import ModelList, ModelOut, VersionOut

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class PartOut(BaseModel):
    name: str
    weight: float


class WholeOut(BaseModel):
    title: str
    parts: list[PartOut]
    main: PartOut | None
    note: str | None = None


class Part:
    def __init__(self, name: str, weight: float) -> None:
        self.name, self.weight, self.secret = name, weight, "s3://internal"


def test_a_mapping_source_gives_only_declared_keys_and_leaves_missing_ones_out() -> None:
    source = {"title": "t", "parts": [{"name": "a", "weight": 1}], "main": None, "extra": 1}
    assert shaped(WholeOut, source) == {
        "title": "t",
        "parts": [{"name": "a", "weight": 1}],
        "main": None,
    }


def test_fields_override_the_source_and_nested_objects_take_their_model() -> None:
    found = shaped(
        WholeOut, {"title": "old"}, title="new", parts=[Part("a", 2.5)], main=Part("b", 1)
    )
    assert found == {
        "title": "new",
        "parts": [{"name": "a", "weight": 2.5}],
        "main": {"name": "b", "weight": 1},
    }


def test_a_registered_model_shows_its_schema_and_nothing_more() -> None:
    model = RegisteredModel("m1", "churn", "d", "alice", 2, 1, 5, NOW, NOW, ("ml", "ops"))
    body = json_round(shaped(ModelList, models=[model]))
    assert body == {"models": [json_round(shaped(ModelOut, model))]}
    assert body["models"][0]["access_groups"] == ["ml", "ops"]
    assert set(body["models"][0]) == set(ModelOut.model_fields)
    ModelList.model_validate(body)


def test_a_version_shows_enums_as_values_and_never_its_storage_keys() -> None:
    version = ModelVersion(
        "m1", 3, "skops", ModelTask("classification"), ["x"], ["no", "yes"],
        "models/m1/3.skops", "ab" * 32, 10, ModelStage("production"), None,
        "models/m1/3.background", "", NOW, NOW, {"run": "7"},
    )  # fmt: skip
    body = json_round(shaped(VersionOut, version))
    assert body["task"] == "classification" and body["stage"] == "production"
    assert body["has_background_sample"] is True
    assert "artifact_key" not in body and "background_sample_key" not in body
    assert set(body) == set(VersionOut.model_fields)
    VersionOut.model_validate(body)


def test_an_issued_key_adds_its_token_to_the_key_metadata() -> None:
    key = ApiKey("k1", "alice", ["writer"], ["ml"], NOW, None, "ci")
    body = json_round(shaped(IssuedKeyOut, key, token="snk_k1_secret"))
    assert body == {
        "key_id": "k1",
        "principal": "alice",
        "roles": ["writer"],
        "groups": ["ml"],
        "description": "ci",
        "created_at": body["created_at"],
        "revoked_at": None,
        "token": "snk_k1_secret",
    }
    assert datetime.fromisoformat(body["created_at"].replace("Z", "+00:00")) == NOW
    assert json_round(shaped(KeyList, keys=[key])) == {
        "keys": [{k: v for k, v in body.items() if k != "token"}]
    }


def json_round(body: dict[str, object]) -> dict[str, object]:
    import json

    return json.loads(jsonutil.dumps(body))


@dataclasses.dataclass
class _Reading:
    metric_name: str
    stage: ModelStage
    interval: tuple[float, float] | None
    count: int


_ReadingFields: Any = mirrored(
    _Reading, exclude={"metric_name"}, stage=str, interval=list[float] | None, note=str
)


class ReadingOut(_ReadingFields):
    """A reading."""


def test_a_mirrored_model_has_the_dataclass_fields_in_order_with_the_types_shown() -> None:
    assert list(ReadingOut.model_fields) == ["stage", "interval", "count", "note"]
    assert all(info.is_required() for info in ReadingOut.model_fields.values())
    schema = ReadingOut.model_json_schema()
    assert schema["title"] == "ReadingOut" and schema["description"] == "A reading."
    assert schema["properties"]["stage"] == {"title": "Stage", "type": "string"}
    assert schema["properties"]["count"] == {"title": "Count", "type": "integer"}
    reading = _Reading("m", ModelStage.PRODUCTION, (1.0, 2.0), 3)
    assert shaped(ReadingOut, reading, note="n") == {
        "stage": ModelStage.PRODUCTION,
        "interval": (1.0, 2.0),
        "count": 3,
        "note": "n",
    }


@pytest.mark.parametrize(
    ("out", "record", "added", "hidden"),
    [
        (TransformationOut, TransformationRecord, {"outputs"}, set()),
        (CupedOut, CupedResult, set(), {"metric_name"}),
        (BayesianReadingOut, BayesianResult, set(), {"metric_name"}),
        (TagOut, TagMove, set(), set()),
        (UsageOut, DatasetUsage, set(), set()),
        (RejectionOut, Rejection, set(), set()),
        (ReproducibilityOut, ReproducibilityReport, set(), set()),
        (ExplanationOut, PredictionExplanation, set(), set()),
    ],
)
def test_out_models_that_mirror_a_dataclass_stay_in_step_with_it(
    out: type[BaseModel], record: type, added: set[str], hidden: set[str]
) -> None:
    shown = [name for name in out.model_fields if name not in added]
    assert shown == [f.name for f in dataclasses.fields(record) if f.name not in hidden]
