"""Explanations backed by the dataset versioning service: backgrounds and global importance."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from tests.conftest import Http, Tokens
from tests.helpers.explain import run_queued_jobs as _run_queued_jobs


def _csv(X: np.ndarray, names: list[str]) -> bytes:
    lines = [",".join([*names, "label"])]
    lines += [",".join([*(f"{v:.6f}" for v in row), "x"]) for row in X]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def dataset_model(http: Http) -> Any:
    import skops.io as sio
    from sklearn.linear_model import LinearRegression

    from chalicelib.dataversion.service import get_versioning_engine

    rng = np.random.default_rng(5)
    names = ["f0", "f1", "f2"]
    X = np.round(rng.normal(size=(70, 3)), 6)
    engine = get_versioning_engine()
    dataset = engine.create_dataset("explain-bg", owner="alice", access_groups=["ml"])
    version = engine.create_version(dataset.dataset_id, _csv(X, names))
    model = LinearRegression().fit(X, X @ [2.0, -1.0, 0.5])
    model_id = http.call("POST", "/models", {"name": "dataset-backed"}).data["model_id"]
    registered = http.call(
        "POST",
        f"/models/{model_id}/versions",
        {
            "artifact_base64": base64.b64encode(sio.dumps(model)).decode(),
            "task": "regression",
            "feature_names": names,
            "background_dataset_version_id": version.version_id,
        },
    )
    assert registered.status_code == 201, registered.data
    rows = [dict(zip(names, row.tolist(), strict=True)) for row in X]
    return type(
        "DS",
        (),
        {
            "id": model_id,
            "dataset_version": version.version_id,
            "X": X,
            "rows": rows,
            "model": model,
            "engine": engine,
            "dataset": dataset,
        },
    )


def test_a_dataset_version_is_the_background_of_a_linear_explanation(
    http: Http, dataset_model: Any
) -> None:
    body = {"model_id": dataset_model.id, "model_version": 1, "input_data": dataset_model.rows[3]}
    response = http.call("POST", "/explanations", body)
    assert response.status_code == 200, response.data
    found = {c["feature_name"]: c["contribution"] for c in response.data["feature_contributions"]}
    X = dataset_model.X
    expected = dataset_model.model.coef_ * (X[3] - X.mean(axis=0))
    np.testing.assert_allclose([found[n] for n in ("f0", "f1", "f2")], expected, atol=1e-6)


def test_global_importance_over_a_dataset_version_runs_as_a_job(
    http: Http, dataset_model: Any, client: Any, tokens: Tokens
) -> None:
    body = {
        "model_id": dataset_model.id,
        "model_version": 1,
        "dataset_version_id": dataset_model.dataset_version,
    }
    denied = http.call("POST", "/explanations/global", body, token=tokens.other_writer)
    assert denied.status_code == 404
    accepted = http.call("POST", "/explanations/global", body)
    assert accepted.status_code == 202, accepted.data
    assert _run_queued_jobs(client) == 1
    job = http.call("GET", f"/explanations/jobs/{accepted.data['job_id']}").data
    assert job["status"] == "succeeded", job
    assert job["result"]["n_explanations"] == 70
    assert next(iter(job["result"]["feature_importances"])) == "f0"


def test_a_dataset_without_a_model_feature_is_422_naming_the_column(
    http: Http, dataset_model: Any
) -> None:
    engine = dataset_model.engine
    other = engine.create_dataset("no-f2", owner="alice", access_groups=["ml"])
    version = engine.create_version(other.dataset_id, b"f0,f1\n1,2\n3,4\n")
    body = {
        "model_id": dataset_model.id,
        "model_version": 1,
        "dataset_version_id": version.version_id,
        "feature": "f0",
    }
    accepted = http.call("POST", "/explanations/dependence", body)
    assert accepted.status_code == 202
    _run_queued_jobs(http.client)
    job = http.call("GET", f"/explanations/jobs/{accepted.data['job_id']}").data
    assert job["status"] == "failed"
    assert job["error"]["status"] == 422 and "'f2'" in job["error"]["message"]


def test_a_background_whose_stored_bytes_changed_is_refused_with_409(
    http: Http, dataset_model: Any
) -> None:
    from chalicelib.dataversion.storage import DataStore

    stored = dataset_model.engine.get_version_by_id(dataset_model.dataset_version)
    DataStore().put(stored.storage_key, _csv(dataset_model.X[:5] + 1.0, ["f0", "f1", "f2"]))
    body = {"model_id": dataset_model.id, "model_version": 1, "input_data": dataset_model.rows[3]}
    response = http.call("POST", "/explanations", body)
    assert response.status_code == 409, response.data
    assert response.data["error"] == "content_integrity"


def test_a_large_background_is_a_seeded_uniform_sample_of_the_whole_version(
    http: Http, dataset_model: Any
) -> None:
    import csv
    import io

    from chalicelib.explainability.loading import DataversionReader

    # Sorted by f0: the first 100 rows would all lie far below the version's mean.
    X = np.round(np.sort(np.random.default_rng(9).normal(size=(1_000, 3)), axis=0), 6)
    data = _csv(X, ["f0", "f1", "f2"])
    version = dataset_model.engine.create_version(dataset_model.dataset.dataset_id, data)
    reader = DataversionReader(max_rows=100)
    rows = reader.read_rows(version.version_id, ["f2", "f0"])
    again = reader.read_rows(version.version_id, ["f2", "f0"])
    np.testing.assert_array_equal(rows, again)  # the same version, the same rows
    oracle = list(csv.DictReader(io.StringIO(data.decode())))
    picked = [
        i for i, row in enumerate(oracle) if [float(row["f2"]), float(row["f0"])] in rows.tolist()
    ]
    assert len(rows) == len(picked) == 100 and max(picked) > 500
    assert rows.tolist() == [[float(oracle[i]["f2"]), float(oracle[i]["f0"])] for i in picked]
    spread = X[:, 0].std() / np.sqrt(100)
    assert abs(rows[:, 1].mean() - X[:, 0].mean()) < 4 * spread
    assert X[:100, 0].mean() < X[:, 0].mean() - 10 * spread  # what the head would have given
