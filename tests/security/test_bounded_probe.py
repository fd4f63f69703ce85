"""A model that is cheap where its author measured it and slow where the request sends it.

Hostile tester, finding 7: the planner timed a model on its background rows, which the model's
author chooses. A nearest-neighbour pipeline over points on a circle on a KD-tree answered rows
on the circle in microseconds and rows at its centre in about half a millisecond (the tree
cannot prune). KD-trees are now refused at registration, so the child here makes the model slow
near the centre on purpose (a sleep per such row, the same on any machine);
KernelSHAP takes ``x0``, ``x1`` from the input (the centre) in half its coalitions. Measured on
the background, the request looked like a fraction of a second and ran synchronously for about a
minute, and because the model got all its rows in one call, neither the synchronous deadline
nor a job's deadline could stop it.

Now (tests below, one child process, small limits from the environment):

* the model is timed on rows like the ones the explainer sends (the input, coalitions mixed
  from the input and the background): the request becomes a job before any coalition is run;
* when an estimate is wrong anyway (here forced to zero), model calls are split into parts of
  about half a second and the deadline is checked between them: a synchronous request is
  handed to a job, a job stops at its deadline as ``deadline_exceeded``, and no part starts
  after the deadline.

Nothing here asserts how long anything took: the tests count model rows and compare the start
of every model call with the deadline in force when it started.
"""

from __future__ import annotations

import base64
import textwrap
from typing import Any

import numpy as np
import pytest

from tests.security import forge
from tests.security.app_child import WORKER, run_app

FEATURES = 12
POINTS = 2_000
# Each row near the centre costs this much more (a sleep in the child: the model is slow there
# on any machine; KD-trees themselves are refused at registration since the structures check).
# 5 ms, not 2: the probe counts rows up to twice the background's time as noise, and a clean-clone
# make test once saw the 2 ms rows read as noise (a 200 where the job's 202 was due).
SLOW_SECONDS_PER_ROW = 0.005
BACKGROUND = 10
NAMES = [f"x{i}" for i in range(FEATURES)]
# KernelSHAP's rows for one input: shap's auto coalitions (2·12 + 2048) × background rows.
KERNEL_ROWS = (2 * FEATURES + 2048) * BACKGROUND
# A job may cost a year: the measured estimate of the slow rows grows with machine load (on a
# 2-core machine at load 12 it once passed an hour: 20,720 model rows priced from a few timed
# rows), and what is tested is that it exceeds the synchronous budget (a job), not the job
# budget (a 422).
LIMITS = {
    "SYNAPSE_EXPLAIN_SYNC_SECONDS": "1",
    "SYNAPSE_EXPLAIN_SYNC_DEADLINE": "2",
    "SYNAPSE_EXPLAIN_JOB_SECONDS": str(365 * 24 * 3600),
}


def circle_pipeline() -> bytes:
    """Keeps columns 0 and 1 and classifies them by their 5 nearest points on a circle."""
    from sklearn.compose import ColumnTransformer
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    angles = np.linspace(0, 2 * np.pi, POINTS, endpoint=False)
    X = np.zeros((POINTS, FEATURES))
    X[:, 0], X[:, 1] = np.cos(angles), np.sin(angles)
    y = (np.arange(POINTS) % 2).astype(np.int8)
    scale = StandardScaler(with_mean=False, with_std=False)
    model = Pipeline(
        [
            ("pick", ColumnTransformer([("xy", scale, [0, 1])])),
            ("knn", KNeighborsClassifier(algorithm="brute")),
        ]
    ).fit(X, y)
    return forge.dumps(model)


CHILD = """
import numpy as np
from sklearn.neighbors import KNeighborsClassifier
from chalicelib.explainability import budget
from chalicelib.explainability import planner as planner_module

calls = []
original = KNeighborsClassifier.predict_proba

def counted(self, X):
    allowance = budget.current()
    deadline = None if allowance is None else allowance.deadline
    started = time.monotonic()
    xy = np.asarray(X, dtype=float)[:, :2]
    inner = int(((xy ** 2).sum(axis=1) < 0.25).sum())  # the slow rows, near the centre
    time.sleep({slow} * inner)
    calls.append({{"rows": len(X), "inner": inner,
                  "after_deadline": deadline is not None and started > deadline}})
    return original(self, X)

KNeighborsClassifier.predict_proba = counted

def take():
    found = list(calls)
    calls.clear()
    return found

data = base64.b64decode({artifact!r})
model_id = http.call("POST", "/models", {{"name": "circle"}}).data["model_id"]
angles = np.arange({background}) * 2 * np.pi / {background}
background = [[float(np.cos(a)), float(np.sin(a))] + [1.0 + r] * ({features} - 2)
              for r, a in enumerate(angles)]
body = {{"artifact_base64": base64.b64encode(data).decode(), "format": "skops",
        "task": "classification", "feature_names": {names!r}, "background_sample": background}}
registered = http.call("POST", f"/models/{{model_id}}/versions", body)
report("registered", registered.status_code)
request = {{"model_id": model_id, "model_version": 1, "explanation_type": "shap",
           "algorithm": "kernel", "input_data": dict.fromkeys({names!r}, 0.0)}}
# Warm up (imports, the model's load) under limits no machine load can exceed (the warm-up is
# not what is tested), then the small ones.
from chalicelib.core.imports import import_clean
import_clean("shap")
os.environ.update({{"SYNAPSE_EXPLAIN_SYNC_SECONDS": "600", "SYNAPSE_EXPLAIN_SYNC_DEADLINE": "600",
                   "SYNAPSE_EXPLAIN_JOB_SECONDS": "600"}})
warm = http.call("POST", "/explanations", {{**request, "explanation_type": "lime",
                                            "num_samples": 20}})
report("warm", warm.status_code)
os.environ.update({limits!r})
take()

# 1. The real planner: timed on the request's kind of rows. What is tested is the estimate
# against the synchronous limit, so the synchronous deadline is far away: on a loaded machine
# the probe alone once outlasted a 2 s deadline and the job was submitted without its estimate.
os.environ["SYNAPSE_EXPLAIN_SYNC_DEADLINE"] = "600"
answer = http.call("POST", "/explanations", request)
report("measured", {{"status": answer.status_code, "calls": take(),
                    "estimate": answer.data.get("estimated_seconds"),
                    "error": answer.data.get("error"), "message": answer.data.get("message")}})
drain_jobs()

# 2. An estimate that is wrong (zero): the deadline must stop the work.
os.environ.update({limits!r})
free = budget.Estimate(0.0, 0, 0, 1, 0.0, 0.0, True, 0, "free")
planner_module.CostPlanner.measured = lambda *a, **k: free
answer = http.call("POST", "/explanations", {{**request, "seed": 1}})
report("sync", {{"status": answer.status_code, "calls": take()}})
drain_jobs()

# 3. The same as a job, in a worker whose function has {worker_seconds} s left.
submitted = http.call("POST", "/explanations", {{**request, "seed": 2, "asynchronous": True}})
for message in drain_jobs():
    run_worker(message, {worker_seconds})
job = http.call("GET", f"/explanations/jobs/{{submitted.data['job_id']}}").data
report("job", {{"submitted": submitted.status_code, "status": job["status"],
               "error": (job.get("error") or {{}}).get("error"), "calls": take()}})
"""


@pytest.fixture(scope="module")
def child() -> dict[str, Any]:
    script = WORKER + textwrap.dedent(
        CHILD.format(
            artifact=base64.b64encode(circle_pipeline()).decode(),
            background=BACKGROUND,
            features=FEATURES,
            names=NAMES,
            worker_seconds=3.0,
            slow=SLOW_SECONDS_PER_ROW,
            limits=LIMITS,
        )
    )
    done, reported = run_app(script, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert reported["registered"] == 201 and reported["warm"] == 200
    return reported


def _rows(calls: list[dict[str, Any]]) -> int:
    return sum(call["rows"] for call in calls)


def test_a_model_slow_only_on_the_requests_rows_is_estimated_on_them_and_becomes_a_job(
    child: dict[str, Any],
) -> None:
    measured = child["measured"]
    assert measured["status"] == 202, measured
    assert measured["estimate"] > 1.0  # over SYNAPSE_EXPLAIN_SYNC_SECONDS
    # Only the probe's sample of the request's rows ran before the decision: no coalition
    # batch (about half of KERNEL_ROWS are near the centre) was evaluated.
    inner = sum(call["inner"] for call in measured["calls"])
    assert 0 < inner <= 64, measured["calls"]


def test_synchronous_work_misjudged_as_free_stops_at_the_deadline_and_becomes_a_job(
    child: dict[str, Any],
) -> None:
    sync = child["sync"]
    assert sync["status"] == 202, sync
    assert 0 < _rows(sync["calls"]) < KERNEL_ROWS
    assert len(sync["calls"]) > 2  # the coalitions went to the model in parts
    assert not any(call["after_deadline"] for call in sync["calls"])


def test_a_job_misjudged_as_free_stops_at_its_deadline_instead_of_running_on(
    child: dict[str, Any],
) -> None:
    job = child["job"]
    assert job["submitted"] == 202
    assert job["status"] == "failed" and job["error"] == "deadline_exceeded", job
    assert 0 < _rows(job["calls"]) < KERNEL_ROWS
    assert not any(call["after_deadline"] for call in job["calls"])
