"""GET /datasets/{id}/versions/{version}/profile: column profiles computed in the ingest pass,
checked against the columns read independently with csv / json and summarised by numpy,
statistics and collections.Counter."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import statistics
from collections import Counter
from typing import Any
from urllib.parse import quote_plus

import numpy as np

from chalicelib.core.config import get_settings
from chalicelib.dataversion.profile import QUANTILES
from chalicelib.dataversion.reader import sample_records
from chalicelib.dataversion.service import get_versioning_engine
from tests.conftest import Http, Tokens


def make_csv(seed: int, rows: int) -> str:
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "score", "segment", "note"])
    for i in range(rows):
        score = "" if i % 30 == 0 else f"{rng.gauss(5.0, 2.0):.6f}"
        note = "multi\nline" if i % 7 == 0 else ("NaN" if i % 11 == 0 else "x")
        writer.writerow([i, score, rng.choice(["a", "b", "c", "d"]), note])
    return out.getvalue()


def columns_of(text: str) -> dict[str, list[str]]:
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    return {name: [row[name] for row in rows] for name in rows[0]}


def dataset(http: Http, name: str) -> str:
    response = http.call("POST", "/datasets", {"name": name, "access_groups": ["ml"]})
    assert response.status_code == 201, response.data
    return response.data["dataset_id"]


def check_numeric(found: dict[str, Any], cells: list[str]) -> None:
    present = [float(cell) for cell in cells if cell != ""]
    values = np.array(present)
    assert found["kind"] == "numeric"
    assert found["count"] == len(present) and found["nulls"] == len(cells) - len(present)
    assert found["distinct"] == len(set(present)) and found["non_finite"] == 0
    assert found["min"] == min(present) and found["max"] == max(present)
    assert np.isclose(found["mean"], statistics.fmean(present), rtol=1e-12)
    assert np.isclose(found["std"], statistics.stdev(present), rtol=1e-9)
    assert np.allclose(found["quantiles"], np.quantile(values, QUANTILES), rtol=1e-12)
    counts, edges = np.histogram(values, bins=20)
    assert found["histogram"] == {"edges": edges.tolist(), "counts": counts.tolist()}


def check_categorical(found: dict[str, Any], cells: list[str]) -> None:
    present = [cell for cell in cells if cell != ""]
    counts = Counter(present)
    expected = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:10]
    assert found["kind"] == "categorical" and found["distinct"] == len(counts)
    assert found["count"] == len(present) and found["nulls"] == len(cells) - len(present)
    assert found["top"] == [{"value": v, "count": c} for v, c in expected]


def test_a_csv_profile_covers_every_row_and_matches_numpy_statistics_and_counter(
    http: Http,
) -> None:
    ds = dataset(http, "profiled")
    text = make_csv(1, 600)
    assert http.call("POST", f"/datasets/{ds}/versions", {"data": text}).status_code == 201
    response = http.call("GET", f"/datasets/{ds}/versions/1/profile")
    assert response.status_code == 200, response.data
    profile = response.data
    assert (profile["rows"], profile["profiled_rows"], profile["sampled"]) == (600, 600, False)
    assert profile["version_number"] == 1 and profile["unprofiled_columns"] == 0
    cells = columns_of(text)
    found = {c["name"]: c for c in profile["columns"]}
    assert list(found) == ["id", "score", "segment", "note"]
    check_numeric(found["id"], cells["id"])
    check_numeric(found["score"], cells["score"])
    check_categorical(found["segment"], cells["segment"])
    check_categorical(found["note"], cells["note"])  # quoted line ends and "NaN" text


def test_a_json_lines_profile_reads_nulls_missing_keys_and_non_finite_numbers(
    http: Http,
) -> None:
    ds = http.call("POST", "/datasets", {"name": "events", "format": "json"}).data["dataset_id"]
    rows = [
        {"v": 1.5, "tag": "a", "nested": {"k": 1}},
        {"v": None, "tag": "b"},
        {"v": 1e308, "tag": "a", "nested": {"k": 1}},
        {"tag": "", "nested": [1, 2]},
        {"v": -2, "tag": "ünï", "nested": None},
    ]
    text = "\n\n".join(json.dumps(row) for row in rows) + "\n  \n"
    text += '{"v": NaN, "tag": "a"}\n'  # Python's json reads NaN
    created = http.call("POST", f"/datasets/{ds}/versions", {"data": text})
    assert created.status_code == 201, created.data
    profile = http.call("GET", f"/datasets/{ds}/versions/1/profile").data
    assert profile["rows"] == 6 and profile["profiled_rows"] == 6
    found = {c["name"]: c for c in profile["columns"]}
    v = found["v"]
    assert (v["kind"], v["count"], v["nulls"], v["non_finite"]) == ("numeric", 4, 2, 1)
    finite = [1.5, 1e308, -2.0]
    assert v["min"] == -2.0 and v["max"] == 1e308
    assert math.isclose(v["mean"], statistics.fmean(finite), rel_tol=1e-15)
    # The squared deviations overflow float64; summed in units of the largest, they do not.
    assert math.isclose(v["std"], statistics.stdev(finite), rel_tol=1e-12)
    assert v["histogram"]["counts"] == [2] + [0] * 18 + [1]
    tag = found["tag"]
    assert tag["top"] == [
        {"value": "a", "count": 3},
        {"value": "b", "count": 1},
        {"value": "ünï", "count": 1},
    ]
    assert (tag["count"], tag["nulls"]) == (5, 1)
    nested = found["nested"]
    assert nested["kind"] == "categorical" and nested["top"][0] == {"value": '{"k": 1}', "count": 2}
    assert (nested["count"], nested["nulls"]) == (3, 3)


def test_a_large_version_is_profiled_on_the_same_uniform_sample_the_reader_draws(
    http: Http,
) -> None:
    ds = dataset(http, "large")
    rng = np.random.default_rng(3)
    values = rng.lognormal(0.0, 1.0, 30_000)
    text = "x,kind\n" + "".join(f"{v:.9g},{'ab'[i % 3 == 0]}\n" for i, v in enumerate(values))
    assert http.call("POST", f"/datasets/{ds}/versions", {"data": text}).status_code == 201
    profile = http.call("GET", f"/datasets/{ds}/versions/1/profile").data
    assert (profile["rows"], profile["profiled_rows"], profile["sampled"]) == (30_000, 10_000, True)
    engine = get_versioning_engine()
    version = engine.get_version(ds, version_number=1)
    sample = sample_records(engine.store, version, 10_000)  # what the drift route reads
    x = [record["x"] for record in sample.records]
    found = {c["name"]: c for c in profile["columns"]}
    check_numeric(found["x"], x)
    check_categorical(found["kind"], [record["kind"] for record in sample.records])
    # Against the whole column: each quantile's rank is within the DKW bound for 10,000 draws
    # (probability 1 - 1e-6: epsilon = sqrt(ln(2e6) / 20,000) = 0.027).
    everything = np.sort(np.array([float(f"{v:.9g}") for v in values]))
    ranks = np.searchsorted(everything, found["x"]["quantiles"], side="right") / len(everything)
    assert np.all(np.abs(ranks - np.array(QUANTILES)) <= 0.027), ranks


def deliver(client: Any, key: str, body: bytes) -> None:
    from chalicelib.core import aws as clients

    clients.client("s3").put_object(Bucket=get_settings().data_bucket, Key=key, Body=body)
    event = client.events.generate_s3_event(
        bucket=get_settings().data_bucket, key=quote_plus(key, safe="/")
    )
    client.lambda_.invoke("dataset_ingest", event)


def test_s3_ingest_restore_and_deletion_keep_the_profile_with_the_version(
    client: Any, http: Http
) -> None:
    ds = dataset(http, "landed")
    first, second = make_csv(5, 50), make_csv(6, 70)
    deliver(client, "incoming/landed/a.csv", first.encode())
    deliver(client, "incoming/landed/b.csv", second.encode())
    landed = http.call("GET", f"/datasets/{ds}/versions/1/profile").data
    assert landed["rows"] == 50
    check_numeric({c["name"]: c for c in landed["columns"]}["score"], columns_of(first)["score"])
    restored = http.call("POST", f"/datasets/{ds}/versions/1/restore")
    assert restored.status_code == 201, restored.data
    again = http.call("GET", f"/datasets/{ds}/versions/3/profile").data
    assert again["columns"] == landed["columns"] and again["version_number"] == 3
    engine = get_versioning_engine()
    gone = engine.get_version(ds, version_number=2)
    assert http.call("DELETE", f"/datasets/{ds}/versions/2").status_code == 200
    assert engine.repository.get_profile(gone.version_id) is None  # values go with it
    assert http.call("GET", f"/datasets/{ds}/versions/2/profile").status_code == 410


def test_formats_that_are_not_profiled_and_outsiders_get_404(http: Http, tokens: Tokens) -> None:
    ds = http.call("POST", "/datasets", {"name": "opaque", "format": "numpy"}).data["dataset_id"]
    created = http.call("POST", f"/datasets/{ds}/versions", {"data": "\x93NUMPY"})
    assert created.status_code == 201, created.data
    missing = http.call("GET", f"/datasets/{ds}/versions/1/profile")
    assert missing.status_code == 404 and missing.data["error"] == "dataset_profile_not_found"
    private = dataset(http, "private-profile")
    http.call("POST", f"/datasets/{private}/versions", {"data": "a\n1\n"})
    outsider = http.call(
        "GET", f"/datasets/{private}/versions/1/profile", token=tokens.other_writer
    )
    assert outsider.status_code == 404 and outsider.data["error"] == "dataset_not_found"


# ---- drift limits ---------------------------------------------------------------------------


def shifted_csv(seed: int, shift: float, rows: int = 400) -> str:
    rng = random.Random(seed)
    lines = ["id,score,segment"]
    for i in range(rows):
        segment = rng.choices("abc", weights=[5, 3, 2 + 30 * shift])[0]
        lines.append(f"{i},{rng.gauss(shift, 1.0):.6f},{segment}")
    return "\n".join(lines) + "\n"


def limited(http: Http, name: str, limits: dict[str, Any]) -> str:
    body = {"name": name, "access_groups": ["ml"], "drift_limits": limits}
    response = http.call("POST", "/datasets", body)
    assert response.status_code == 201, response.data
    assert response.data["drift_limits"] == {"psi": None, "p_value": None, "columns": [], **limits}
    return response.data["dataset_id"]


def test_a_version_past_the_drift_limits_is_created_with_a_warning_and_an_event(
    http: Http, bus: Any
) -> None:
    ds = limited(http, "guarded", {"psi": 0.25, "p_value": 0.001, "columns": ["score"]})
    first = http.call("POST", f"/datasets/{ds}/versions", {"data": shifted_csv(1, 0.0)})
    steady = http.call("POST", f"/datasets/{ds}/versions", {"data": shifted_csv(2, 0.0)})
    assert first.data["warnings"] == [] and steady.data["warnings"] == []
    moved = http.call("POST", f"/datasets/{ds}/versions", {"data": shifted_csv(3, 1.0)})
    assert moved.status_code == 201, moved.data
    drift = http.call("GET", f"/datasets/{ds}/drift?a=2&b=3").data
    score = {c["column"]: c for c in drift["columns"]}["score"]
    assert score["psi"] > 0.25 and score["p_value"] < 0.001
    assert moved.data["warnings"] == [
        f"drift against version 2: column score: psi {score['psi']:.4g} > 0.25; "
        f"ks p-value {score['p_value']:.3g} < 0.001"
    ]  # segment drifted too, but only score is limited
    stored = http.call("GET", f"/datasets/{ds}/versions/3").data
    assert stored["warnings"] == moved.data["warnings"]
    events = bus.of_type("DatasetDriftDetected")
    assert len(events) == 1
    detail = events[0].detail
    assert detail["version_number"] == 3 and detail["against_version_number"] == 2
    assert [c["column"] for c in detail["columns"]] == ["score"]
    assert detail["columns"][0]["psi"] == score["psi"]
    assert detail["columns"][0]["p_value"] == score["p_value"]


def test_an_s3_ingest_past_the_limits_is_flagged_against_the_newest_live_version(
    client: Any, http: Http, bus: Any
) -> None:
    ds = limited(http, "landing", {"psi": 0.25})
    deliver(client, "incoming/landing/a.csv", shifted_csv(1, 0.0).encode())
    deliver(client, "incoming/landing/b.csv", shifted_csv(2, 2.0).encode())
    http.call("PUT", f"/datasets/{ds}/drift-limits", {"psi": 0.25, "columns": ["score"]})
    assert http.call("DELETE", f"/datasets/{ds}/versions/2").status_code == 200
    deliver(client, "incoming/landing/c.csv", shifted_csv(3, 2.0).encode())
    found = http.call("GET", f"/datasets/{ds}/versions").data["versions"]
    assert [v["version_number"] for v in found] == [1, 2, 3]
    assert [w.split(":")[1].strip() for w in found[1]["warnings"]] == [
        "column score",
        "column segment",
    ]
    assert found[2]["warnings"][0].startswith("drift against version 1: column score: psi ")
    assert len(found[2]["warnings"]) == 1  # segment is no longer limited
    detail = bus.of_type("DatasetDriftDetected")[-1].detail
    assert detail["against_version_number"] == 1 and detail["version_number"] == 3


def test_drift_limits_are_set_cleared_and_validated(http: Http, tokens: Tokens) -> None:
    ds = dataset(http, "limits")
    set_ = http.call("PUT", f"/datasets/{ds}/drift-limits", {"p_value": 0.01})
    assert set_.status_code == 200 and set_.data["drift_limits"] == {
        "psi": None,
        "p_value": 0.01,
        "columns": [],
    }
    assert http.call("GET", f"/datasets/{ds}").data["drift_limits"]["p_value"] == 0.01
    cleared = http.call("PUT", f"/datasets/{ds}/drift-limits", {})
    assert cleared.status_code == 200 and cleared.data["drift_limits"] is None
    for bad in ({"p_value": 1.5}, {"psi": 0}, {"psi": -1}, {"columns": [""]}):
        refused = http.call("PUT", f"/datasets/{ds}/drift-limits", bad)
        assert refused.status_code == 400 and refused.data["error"], (bad, refused.data)
    created = http.call("POST", "/datasets", {"name": "bad-limits", "drift_limits": {"psi": 0}})
    assert created.status_code == 400
    reader = http.call("PUT", f"/datasets/{ds}/drift-limits", {"psi": 1}, token=tokens.reader)
    assert reader.status_code == 403
    outsider = http.call(
        "PUT", f"/datasets/{ds}/drift-limits", {"psi": 1}, token=tokens.other_writer
    )
    assert outsider.status_code == 404
    assert http.call("GET", f"/datasets/{ds}").data["drift_limits"] is None
