"""GET /datasets/{id}/drift: per-column PSI and KS / chi-square p-values, checked against scipy
and numpy computed on the same columns read independently with csv."""

from __future__ import annotations

import csv
import io
import random

import numpy as np
from scipy import stats

from tests.conftest import Http, Tokens


def make_csv(seed: int, shift: float, rows: int = 400) -> str:
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "score", "segment", "note"])
    for i in range(rows):
        segment = rng.choices(["a", "b", "c"], weights=[5, 3, 2 + 6 * shift])[0]
        score = "" if i % 40 == 0 else f"{rng.gauss(shift, 1.0):.6f}"
        writer.writerow([i, score, segment, "multi\nline" if i % 7 == 0 else "x"])
    return out.getvalue()


def column(text: str, name: str) -> list[str]:
    return [row[name] for row in csv.DictReader(io.StringIO(text, newline="")) if row[name] != ""]


def psi_oracle(a: np.ndarray, b: np.ndarray) -> float:
    """PSI over the deciles of a, written out independently."""
    cuts = np.unique(np.percentile(a, [10, 20, 30, 40, 50, 60, 70, 80, 90]))
    total = 0.0
    for low, high in zip([-np.inf, *cuts], [*cuts, np.inf], strict=True):
        p = max(np.mean((a >= low) & (a < high)), 1e-4)
        q = max(np.mean((b >= low) & (b < high)), 1e-4)
        total += (q - p) * np.log(q / p)
    return float(total)


def test_drift_matches_scipy_and_numpy_on_the_columns(http: Http) -> None:
    dataset = http.call("POST", "/datasets", {"name": "drifting", "access_groups": ["ml"]}).data
    ds = dataset["dataset_id"]
    before, after = make_csv(1, 0.0), make_csv(2, 0.8)
    http.call("POST", f"/datasets/{ds}/versions", {"data": before})
    http.call("POST", f"/datasets/{ds}/versions", {"data": after})
    http.call("PUT", f"/datasets/{ds}/tags/candidate", {"version": "2"})
    response = http.call("GET", f"/datasets/{ds}/drift?a=1&b=candidate")
    assert response.status_code == 200, response.data
    report = response.data
    assert report["rows"] == {"a": 400, "b": 400} and report["sampled_rows"] == {"a": 400, "b": 400}
    found = {c["column"]: c for c in report["columns"]}
    a = np.array([float(v) for v in column(before, "score")])
    b = np.array([float(v) for v in column(after, "score")])
    score = found["score"]
    assert score["kind"] == "numeric" and score["test"] == "ks"
    expected = stats.ks_2samp(a, b)
    assert np.isclose(score["statistic"], expected.statistic)
    assert np.isclose(score["p_value"], expected.pvalue, rtol=1e-9, atol=0)
    assert np.isclose(score["psi"], psi_oracle(a, b))
    assert score["p_value"] < 1e-6 and score["psi"] > 0.25  # a real shift is found
    assert score["nulls"] == {"a": 0.025, "b": 0.025}
    segment = found["segment"]
    assert segment["kind"] == "categorical" and segment["test"] == "chi2"
    sa, sb = column(before, "segment"), column(after, "segment")
    table = [[sa.count(k) for k in "abc"], [sb.count(k) for k in "abc"]]
    chi2 = stats.chi2_contingency(table, correction=False)
    assert np.isclose(segment["statistic"], chi2.statistic)
    assert np.isclose(segment["p_value"], chi2.pvalue)
    shares = np.array(table, dtype=float) / 400
    assert np.isclose(
        segment["psi"], float(np.sum((shares[1] - shares[0]) * np.log(shares[1] / shares[0])))
    )
    assert found["note"]["kind"] == "categorical"  # quoted multi-line values read as csv does


def test_identical_distributions_do_not_drift(http: Http) -> None:
    ds = http.call("POST", "/datasets", {"name": "steady"}).data["dataset_id"]
    http.call("POST", f"/datasets/{ds}/versions", {"data": make_csv(3, 0.0, 2000)})
    http.call("POST", f"/datasets/{ds}/versions", {"data": make_csv(4, 0.0, 2000)})
    report = http.call("GET", f"/datasets/{ds}/drift?a=1&b=2").data
    score = {c["column"]: c for c in report["columns"]}["score"]
    assert score["p_value"] > 0.01 and score["psi"] < 0.1


def test_the_schema_diff_is_reported(http: Http, tokens: Tokens) -> None:
    ds = http.call("POST", "/datasets", {"name": "reshaped", "access_groups": ["ml"]}).data
    ds = ds["dataset_id"]
    http.call("POST", f"/datasets/{ds}/versions", {"data": "id,a\n1,2\n2,3\n"})
    http.call("POST", f"/datasets/{ds}/versions", {"data": "id,b\n1,x\n2,y\n"})
    report = http.call("GET", f"/datasets/{ds}/drift?a=1&b=2").data
    assert report["schema"]["added"] == ["b"] and report["schema"]["removed"] == ["a"]
    assert [c["column"] for c in report["columns"]] == ["id"]
    assert http.call("GET", f"/datasets/{ds}/drift?a=1&b=2", token=tokens.reader).status_code == 200
    outsider = http.call("GET", f"/datasets/{ds}/drift?a=1&b=2", token=tokens.other_writer)
    assert outsider.status_code == 404
    assert http.call("GET", f"/datasets/{ds}/drift?a=1&b=9").status_code == 404
