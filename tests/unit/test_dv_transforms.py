"""Declarative transformations: each operation, determinism, and replay reproducing the hash."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from chalicelib.core.clock import FixedClock
from chalicelib.core.errors import ValidationError
from chalicelib.core.events import RecordingEventBus
from chalicelib.dataversion.errors import NotReplayable, TransformError
from chalicelib.dataversion.lineage import LineageGraph
from chalicelib.dataversion.memory import (
    InMemoryDatasetRepository,
    InMemoryLineageRepository,
    InMemoryObjectStore,
)
from chalicelib.dataversion.models import DatasetFormat
from chalicelib.dataversion.pipeline import TransformationService
from chalicelib.dataversion.reconstruction import DatasetReconstructor
from chalicelib.dataversion.transforms import load_table, parse_spec, run, to_csv_bytes
from chalicelib.dataversion.versioning import DatasetVersioningEngine
from tests.helpers.dataversion import stored_before_pyarrow_typing

DATA = b"id,group,value,flag\n1,a,10,true\n2,b,20,false\n3,a,,true\n4,c,40,false\n5,b,50,true\n"


def table() -> Any:
    return load_table(DATA, DatasetFormat.CSV)


def apply(spec: dict[str, Any], *extra: Any) -> dict[str, Any]:
    return run(parse_spec(spec), [table(), *extra]).outputs


def csv_of(result: Any) -> str:
    return to_csv_bytes(result).decode()


def test_filter_predicates_combine_and_skip_nulls() -> None:
    out = apply(
        {
            "type": "filter",
            "predicates": [
                {"column": "value", "op": "ge", "value": "20"},
                {"column": "group", "op": "in", "value": ["a", "b"]},
            ],
        }
    )["output"]
    assert [row[0] for row in out.rows] == [2, 5]
    nulls = apply({"type": "filter", "predicates": [{"column": "value", "op": "is_null"}]})
    assert [row[0] for row in nulls["output"].rows] == [3]
    ne = apply({"type": "filter", "predicates": [{"column": "flag", "op": "ne", "value": True}]})
    assert [row[0] for row in ne["output"].rows] == [2, 4]


def test_map_selects_and_renames() -> None:
    out = apply({"type": "map", "select": ["value", "id"], "rename": {"value": "v"}})["output"]
    assert csv_of(out).splitlines()[:2] == ["v,id", "10,1"]
    with pytest.raises(TransformError):
        apply({"type": "map", "select": ["id"], "rename": {"value": "v"}})


def test_inner_and_left_join() -> None:
    right = load_table(b"group,label,value\na,alpha,1\nb,beta,2\n", DatasetFormat.CSV)
    inner = run(parse_spec({"type": "join", "on": ["group"]}), [table(), right]).outputs["output"]
    assert inner.columns == ["id", "group", "value", "flag", "label", "value_right"]
    assert [row[0] for row in inner.rows] == [1, 2, 3, 5]
    left = run(parse_spec({"type": "join", "on": ["group"], "how": "left"}), [table(), right])
    assert left.outputs["output"].rows[3] == [4, "c", 40, False, None, None]
    with pytest.raises(TransformError):
        run(parse_spec({"type": "join", "on": ["group"]}), [table()])


def test_aggregate_groups_sorted_with_sum_mean_count_min_max() -> None:
    out = apply(
        {
            "type": "aggregate",
            "group_by": ["group"],
            "aggregations": [
                {"func": "sum", "column": "value"},
                {"func": "mean", "column": "value", "name": "avg"},
                {"func": "count"},
                {"func": "min", "column": "id"},
                {"func": "max", "column": "id"},
            ],
        }
    )["output"]
    assert csv_of(out) == (
        "group,sum_value,avg,count,min_id,max_id\na,10,10.0,2,1,3\nb,70,35.0,2,2,5\nc,40,40.0,1,4,4\n"
    )
    with pytest.raises(TransformError):
        apply({"type": "aggregate", "aggregations": [{"func": "sum", "column": "group"}]})


def test_sample_and_split_are_seeded_and_deterministic() -> None:
    first = apply({"type": "sample", "n": 3, "seed": 1})["output"]
    again = apply({"type": "sample", "n": 3, "seed": 1})["output"]
    assert to_csv_bytes(first) == to_csv_bytes(again) and len(first.rows) == 3
    assert len(apply({"type": "sample", "fraction": 0.4, "seed": 2})["output"].rows) == 2
    with pytest.raises(TransformError):
        apply({"type": "sample", "seed": 1})
    split = apply({"type": "split", "test_fraction": 0.4, "seed": 3})
    train, test = split["train"].rows, split["test"].rows
    assert len(test) == 2 and len(train) == 3
    assert sorted(r[0] for r in train + test) == [1, 2, 3, 4, 5]
    assert apply({"type": "split", "test_fraction": 0.4, "seed": 3})["test"].rows == test


def test_normalization_records_fitted_parameters() -> None:
    result = run(
        parse_spec({"type": "normalization", "columns": ["value"], "method": "minmax"}), [table()]
    )
    assert result.fitted == {"method": "minmax", "columns": {"value": {"min": 10.0, "max": 50.0}}}
    assert [row[2] for row in result.outputs["output"].rows] == [0.0, 0.25, None, 0.75, 1.0]
    z = run(parse_spec({"type": "normalization", "columns": ["value"]}), [table()])
    assert z.fitted["columns"]["value"]["mean"] == 30.0
    with pytest.raises(TransformError):
        run(parse_spec({"type": "normalization", "columns": ["group"]}), [table()])


def test_invalid_specs_are_validation_errors_and_external_steps_do_not_run() -> None:
    with pytest.raises(ValidationError):
        parse_spec({"type": "filter", "predicates": [{"column": "x", "op": "like"}]})
    with pytest.raises(ValidationError):
        parse_spec({"type": "python", "code": "import os"})
    with pytest.raises(TransformError):
        run(parse_spec({"type": "augmentation", "code_hash": "abcdef012345"}), [table()])


def test_canonical_csv_is_stable_through_a_round_trip() -> None:
    text = b'id,note,x\n1,"a, b",1.5\n2,"say ""hi""",\n'
    once = to_csv_bytes(load_table(text, DatasetFormat.CSV))
    assert to_csv_bytes(load_table(once, DatasetFormat.CSV)) == once


def test_json_lines_sources_are_tabular() -> None:
    loaded = load_table(b'{"a": 1, "b": {"x": 1}}\n{"a": 2}\n', DatasetFormat.JSON)
    assert loaded.columns == ["a", "b"] and loaded.rows[0] == [1, '{"x":1}']


# ---- replay through stored versions ---------------------------------------------------------


@pytest.fixture
def services() -> tuple[DatasetVersioningEngine, TransformationService, Any]:
    engine = DatasetVersioningEngine(
        repository=InMemoryDatasetRepository(),
        store=InMemoryObjectStore(),
        lineage=LineageGraph(InMemoryLineageRepository()),
        event_bus=RecordingEventBus(),
        clock=FixedClock(),
    )
    transforms = TransformationService(engine)
    return engine, transforms, DatasetReconstructor(engine, transforms)


def test_replay_on_the_original_data_reproduces_the_same_hash(services: Any) -> None:
    engine, transforms, reconstructor = services
    raw = engine.create_dataset("raw", "alice")
    out = engine.create_dataset("out", "alice", compatibility="none")
    source = engine.create_version(raw.dataset_id, DATA)
    step1 = transforms.apply(
        out.dataset_id,
        {"type": "filter", "predicates": [{"column": "value", "op": "not_null"}]},
        [source.version_id],
    )
    middle = step1.outputs["output"].version
    step2 = transforms.apply(
        out.dataset_id,
        {
            "type": "aggregate",
            "group_by": ["group"],
            "aggregations": [{"func": "mean", "column": "value"}],
        },
        [middle.version_id],
    )
    target = step2.outputs["output"].version
    replay = reconstructor.replay_transformations(source.version_id, target.version_id, DATA)
    assert replay.matches_target is True
    assert replay.sha256 == target.sha256 == hashlib.sha256(replay.content).hexdigest()
    assert replay.steps == [step1.record.transformation_id, step2.record.transformation_id]
    changed = reconstructor.replay_transformations(
        source.version_id, target.version_id, DATA + b"6,a,70,true\n"
    )
    assert changed.matches_target is False
    assert b"a,40.0" in changed.content


def test_replay_refuses_external_steps(services: Any) -> None:
    engine, transforms, reconstructor = services
    raw = engine.create_dataset("raw", "alice")
    source = engine.create_version(raw.dataset_id, DATA)
    external = transforms.apply(
        raw.dataset_id,
        {"type": "feature_engineering", "code_hash": "sha256:0123456789"},
        [source.version_id],
        data=DATA + b"9,z,1,true\n",
    )
    with pytest.raises(NotReplayable):
        reconstructor.replay_transformations(
            source.version_id, external.outputs["output"].version.version_id, DATA
        )
    report = reconstructor.validate_reproducibility(external.outputs["output"].version.version_id)
    assert report.reproducible is False and report.missing_objects == []
    with pytest.raises(ValidationError):
        transforms.apply(
            raw.dataset_id,
            {"type": "feature_engineering", "code_hash": "sha256:0123456789"},
            [source.version_id],
        )


def test_a_version_typed_before_pyarrows_rule_is_read_as_that_rule_read_it(
    services: Any,
) -> None:
    """A version stored before CSV cells were typed as pyarrow types them keeps the schema
    the earlier rule gave it; a transformation over it (a replay of one recorded then) reads
    its cells as that rule did, Python's int() and float() and booleans in any case, instead
    of refusing cells pyarrow's rule reads as another type."""
    engine, transforms, _ = services
    raw = engine.create_dataset("legacy", "alice")
    out = engine.create_dataset("out", "alice", compatibility="none")
    cells = [("+5", "١٢٣", "1_000", "tRuE"), ("-7", "٤", "2.5", "FaLsE"), ("", "", "", "")]
    body = "i,a,f,b\n" + "".join(",".join(row) + "\n" for row in cells)
    columns = {"i": "int", "a": "int", "f": "float", "b": "bool"}
    source = stored_before_pyarrow_typing(engine, raw.dataset_id, body.encode(), columns)
    applied = transforms.apply(
        out.dataset_id,
        {"type": "filter", "predicates": [{"column": "i", "op": "not_null"}]},
        [source.version_id],
    )
    table = load_table(
        engine.store.read(applied.outputs["output"].version.storage_key), DatasetFormat.CSV
    )
    oracle = [[int(i), int(a), float(f), b.lower() == "true"] for i, a, f, b in cells[:2]]
    assert table.rows == oracle
    other = engine.create_dataset("legacy-flags", "alice")
    flags = stored_before_pyarrow_typing(
        engine, other.dataset_id, b"s,b\nx,TRUE\ny,yes\n", {"s": "string", "b": "bool"}
    )
    with pytest.raises(TransformError, match="'yes' is not a bool"):
        transforms.apply(out.dataset_id, {"type": "map", "select": ["s"]}, [flags.version_id])
