"""A small model whose rows become huge inside it.

Hostile tester, finding 6: a genuine 28 KB file, ``Pipeline(PolynomialFeatures(degree=10),
DecisionTreeClassifier)`` on 12 features, turns every row into 646,646 values (5 MB). The
planner's timing probe alone asked for 2,048 such rows (10.6 GB); the ``MemoryError`` was a 500.

Now (one child process, its address space capped 3 GiB above its size, as the tester ran it):

* the values one row takes inside the model are read from the fitted model when it declares
  them (``PolynomialFeatures``) and measured otherwise, counted in the estimate, and every model
  call holds at most ``CHUNK_VALUES`` of them (here 3 rows): the explanation is answered;
* a model whose single row would be over ``MAX_VALUES`` (degree 20: 225,792,840 values) is
  refused with 422 ``too_expensive`` before the model is called at all;
* a ``MemoryError`` anywhere in an explanation is a 422 ``too_expensive``, synchronously and in
  a job (which fails once with the reason instead of being retried).
"""

from __future__ import annotations

import base64
import textwrap
from math import comb
from typing import Any

import numpy as np
import pytest

from chalicelib.explainability.budget import CHUNK_VALUES, MAX_VALUES
from tests.security import forge
from tests.security.app_child import WORKER, run_app

FEATURES = 12
NAMES = [f"x{i}" for i in range(FEATURES)]
DEGREE_10 = comb(FEATURES + 10, 10)  # 646,646 monomials of degree ≤ 10
DEGREE_20 = comb(FEATURES + 20, 20)  # 225,792,840


def polynomial_pipeline(degree: int = 10) -> bytes:
    """The tester's model; ``degree`` above 10 is written into the fitted file (a model that
    large cannot be fitted here), as a forger would."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import PolynomialFeatures
    from sklearn.tree import DecisionTreeClassifier

    X = np.random.default_rng(0).normal(size=(20, FEATURES))
    y = (X[:, 0] > 0).astype(int)
    model = Pipeline(
        [("poly", PolynomialFeatures(degree=10)), ("tree", DecisionTreeClassifier(max_depth=1))]
    ).fit(X, y)
    if degree != 10:
        poly = model.named_steps["poly"]
        poly.degree = poly._max_degree = degree
        poly.n_output_features_ = poly._n_out_full = comb(FEATURES + degree, degree)
    return forge.dumps(model)


CHILD = """
import resource
from sklearn.pipeline import Pipeline

calls = []
original = Pipeline.predict_proba

def counted(self, X):
    calls.append(len(X))
    return original(self, X)

Pipeline.predict_proba = counted

def register(name, artifact):
    model_id = http.call("POST", "/models", {{"name": name}}).data["model_id"]
    body = {{"artifact_base64": artifact, "format": "skops", "task": "classification",
            "feature_names": {names!r},
            "background_sample": [[float(r) / 4] * {features} for r in range(4)]}}
    response = http.call("POST", f"/models/{{model_id}}/versions", body)
    return model_id, response.status_code

def lime(model_id, **extra):
    return {{"model_id": model_id, "model_version": 1, "explanation_type": "lime",
            "num_samples": 100, "input_data": dict.fromkeys({names!r}, 0.5), **extra}}

size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1])
cap = size * 1024 + (3 << 30)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

wide, status = register("poly-10", {degree_10!r})
answer = http.call("POST", "/explanations", lime(wide))
report("wide", {{"registered": status, "status": answer.status_code, "calls": list(calls),
                "error": answer.data.get("error"), "algorithm": answer.data.get("algorithm")}})
calls.clear()

huge, status = register("poly-20", {degree_20!r})
answer = http.call("POST", "/explanations", lime(huge))
report("huge", {{"registered": status, "status": answer.status_code, "calls": list(calls),
                "error": answer.data.get("error"), "details": answer.data.get("details")}})

from chalicelib.explainability.lime_engine import LIMEExplainer

def exhausted(*args, **kwargs):
    raise MemoryError()

LIMEExplainer._tabular = exhausted
answer = http.call("POST", "/explanations", lime(wide, seed=1))
report("memory_sync", {{"status": answer.status_code, "body": answer.data}})
submitted = http.call("POST", "/explanations", lime(wide, seed=2, asynchronous=True))
job = {{}}
if "job_id" in submitted.data:
    for message in drain_jobs():
        try:
            run_worker(message, 60.0)
        except Exception as exc:  # redelivered by SQS in AWS: what the job records counts
            report("worker_error", type(exc).__name__)
    job = http.call("GET", f"/explanations/jobs/{{submitted.data['job_id']}}").data
report("memory_job", {{"submitted": submitted.status_code, "status": job.get("status"),
                      "error": job.get("error"), "attempts": job.get("attempts")}})
"""


@pytest.fixture(scope="module")
def child() -> dict[str, Any]:
    script = WORKER + textwrap.dedent(
        CHILD.format(
            names=NAMES,
            features=FEATURES,
            degree_10=base64.b64encode(polynomial_pipeline(10)).decode(),
            degree_20=base64.b64encode(polynomial_pipeline(20)).decode(),
        )
    )
    done, reported = run_app(script, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return reported


def test_a_model_that_makes_each_row_5_mb_is_explained_a_few_rows_per_call(
    child: dict[str, Any],
) -> None:
    wide = child["wide"]
    assert wide["registered"] == 201
    assert wide["status"] == 200, wide
    assert wide["calls"] and max(wide["calls"]) <= CHUNK_VALUES // DEGREE_10 == 3
    assert sum(wide["calls"]) >= 100  # LIME's samples were all evaluated, in parts


def test_a_model_whose_single_row_is_over_the_array_limit_is_refused_before_it_runs(
    child: dict[str, Any],
) -> None:
    huge = child["huge"]
    assert DEGREE_20 > MAX_VALUES
    assert huge["registered"] == 201  # a valid file: what it costs is known only with the model
    assert huge["status"] == 422 and huge["error"] == "too_expensive", huge
    assert huge["details"]["estimate"]["peak_values"] == DEGREE_20
    assert huge["calls"] == []


def test_running_out_of_memory_in_an_explanation_is_a_422_synchronously_and_in_a_job(
    child: dict[str, Any],
) -> None:
    sync = child["memory_sync"]
    assert sync["status"] == 422 and sync["body"]["error"] == "too_expensive", sync
    assert "ran out of memory" in sync["body"]["message"]
    job = child["memory_job"]
    assert job["submitted"] == 202 and job["status"] == "failed", job
    assert job["error"]["error"] == "too_expensive" and job["attempts"] == 1
    assert "worker_error" not in child
