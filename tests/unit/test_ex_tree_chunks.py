"""TreeSHAP batches in as few calls as the deadline and memory allow (issue 16).

A fixed 256-row split cost XGBoost batches ~18% wall clock over one shap call; parts are now
sized by the memory bound alone without a deadline, and under one from the speed seen so far.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from chalicelib.explainability import budget
from chalicelib.explainability.budget import CHUNK_VALUES, Allowance, bounded
from chalicelib.explainability.errors import DeadlineExceeded
from chalicelib.explainability.explainers._common import in_timed_chunks


def _recorder(calls: list[int]):
    def compute(part: np.ndarray) -> np.ndarray:
        calls.append(len(part))
        return part * 2.0

    return compute


def test_without_a_deadline_a_batch_is_one_call_up_to_the_memory_bound() -> None:
    X = np.arange(3000.0).reshape(1000, 3)
    calls: list[int] = []
    out = in_timed_chunks(_recorder(calls), X, 256, 3)
    assert calls == [1000]
    np.testing.assert_array_equal(out, X * 2.0)
    calls.clear()
    # 1,000 result values per row: CHUNK_VALUES // 1,000 rows per call.
    in_timed_chunks(_recorder(calls), X, 256, 1000)
    cap = CHUNK_VALUES // 1000
    assert calls == [cap] * (1000 // cap) + ([1000 % cap] if 1000 % cap else [])


def test_under_a_far_deadline_a_fast_batch_is_two_calls() -> None:
    X = np.arange(2000.0).reshape(1000, 2)
    calls: list[int] = []
    with bounded(Allowance.lasting("sync", 60.0, 10.0, 240.0)):
        out = in_timed_chunks(_recorder(calls), X, 256, 2)
    # First part 256 rows, then ×4 at most (the speed seen allows far more).
    assert calls == [256, 744]
    np.testing.assert_array_equal(out, X * 2.0)


class _Clock:
    """A fake monotonic clock that the model advances by ``row_seconds`` per row."""

    def __init__(self, row_seconds: float) -> None:
        self.now = 1000.0
        self.row_seconds = row_seconds

    def __call__(self) -> float:
        return self.now


def test_parts_are_sized_from_the_measured_speed_and_stop_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock(0.01)
    monkeypatch.setattr(time, "monotonic", clock)
    calls: list[tuple[int, float]] = []

    def compute(part: np.ndarray) -> np.ndarray:
        calls.append((len(part), budget.current().deadline - clock.now))
        clock.now += clock.row_seconds * len(part)
        return part

    X = np.zeros((100_000, 1))
    allowance = Allowance("job", clock.now + 20.0, 20.0, 240.0)
    with bounded(allowance), pytest.raises(DeadlineExceeded):
        in_timed_chunks(compute, X, 256, 1)
    sizes = [size for size, _ in calls]
    assert sizes[0] == 256
    for size, left in calls[1:]:
        # Each later part planned at most max(0.5 s, a quarter of the time left).
        planned = size * clock.row_seconds  # on the fake clock
        assert planned <= max(budget.CHUNK_SECONDS, left / 4) + 1e-9
    # Work stopped at the first checkpoint past the deadline, within one 0.5 s part of it.
    assert 0 < clock.now - allowance.deadline <= budget.CHUNK_SECONDS + 1e-9
    assert sum(sizes) < len(X)


def test_tree_shap_in_timed_chunks_is_bit_identical_to_one_call() -> None:
    import shap
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(3)
    X = rng.normal(size=(700, 5))
    forest = RandomForestClassifier(20, random_state=0).fit(X, X[:, 0] + X[:, 3] > 0)
    explainer = shap.TreeExplainer(forest, feature_perturbation="tree_path_dependent")
    whole = explainer.shap_values(X, check_additivity=False)
    calls: list[int] = []

    def compute(part: np.ndarray) -> np.ndarray:
        calls.append(len(part))
        return explainer.shap_values(part, check_additivity=False)

    with bounded(Allowance.lasting("sync", 60.0, 10.0, 240.0)):
        parts = in_timed_chunks(compute, X, 64, 10)
    assert calls == [64, 256, 380]
    np.testing.assert_array_equal(np.asarray(parts), np.asarray(whole))
    pieces = in_timed_chunks(lambda part: [part[:, :2], part[:, 2:]], X, 64, 5)
    np.testing.assert_array_equal(pieces[0], X[:, :2])
    np.testing.assert_array_equal(pieces[1], X[:, 2:])


@pytest.mark.parametrize(
    ("row_seconds", "call_seconds", "seconds", "rows", "row_values"),
    [
        (0.001, 0.03, 20.0, 15_000, 2),  # time binds: parts of a quarter of the time left
        (1e-5, 0.001, 20.0, 50_000, 256),  # growth and the memory bound bind
        (0.02, 0.0, 600.0, 20_000, 2),  # a slow model under a job's long deadline
        (1e-6, 0.0, None, 10_000, 700),  # no deadline: parts of the memory bound
    ],
)
def test_the_estimate_plans_the_parts_the_engine_makes(
    monkeypatch: pytest.MonkeyPatch,
    row_seconds: float,
    call_seconds: float,
    seconds: float | None,
    rows: int,
    row_values: int,
) -> None:
    """On a clock that a call of k rows advances by ``call_seconds + k × row_seconds``, the
    parts :func:`budget.planned_parts` plans are the parts in_timed_chunks makes."""
    clock = _Clock(row_seconds)
    monkeypatch.setattr(time, "monotonic", clock)
    sizes: list[int] = []

    def compute(part: np.ndarray) -> np.ndarray:
        sizes.append(len(part))
        clock.now += call_seconds + row_seconds * len(part)
        return part

    allowance = None if seconds is None else Allowance("job", clock.now + seconds, 600.0, 600.0)
    with bounded(allowance):
        planned = budget.planned_parts(
            rows,
            256,
            budget.part_cap(row_values),
            budget.ModelSpeed(call_seconds, row_seconds),
            budget.seconds_left(),
        )
        in_timed_chunks(compute, np.zeros((rows, 1)), 256, row_values)
    assert planned == sizes
    assert sum(sizes) == rows and len(sizes) > 1


def test_the_estimate_a_job_is_submitted_with_is_the_one_the_job_runs_under() -> None:
    """A batch submitted as a job is estimated as the job will run it: under the job's
    deadline (a first TreeSHAP call of SHAP_CHUNK rows, then larger ones), not as if there were
    none (one call). The submitted estimate, the job's own and the calls the job makes agree
    when the job's function has at least the job limit left."""
    from sklearn.ensemble import RandomForestClassifier

    from tests.helpers.explain import count_shap_values, memory_context, register

    ctx = memory_context()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 20))
    forest = RandomForestClassifier(5, max_depth=3, random_state=0).fit(X, X[:, 0] > 0)
    names = [f"f{i}" for i in range(20)]
    model = register(ctx.reg, forest, "classification", names, X[:20])
    planned: list[budget.Estimate] = []
    measured = ctx.svc.planner.measured

    def recording(*args: object, **kwargs: object) -> budget.Estimate:
        planned.append(measured(*args, **kwargs))
        return planned[-1]

    ctx.svc.planner.measured = recording
    inputs = [dict(zip(names, row, strict=True)) for row in X.tolist()]
    submitted = ctx.svc.explain_batch(
        {
            "model_id": model.model_id,
            "model_version": model.version,
            "explanation_type": "shap",
            "inputs": inputs,
        }
    )
    loaded = ctx.svc.model_loader.load(model.model_id, model.version)
    counted = count_shap_values(ctx.svc.shap.tree_explainer(loaded))
    assert ctx.svc.jobs.run(submitted.job.job_id) == "succeeded"
    before, during = planned
    # 2,000 rows under a deadline: 256, 1,024, then 720 rows (one call without a deadline).
    assert before.model_calls == during.model_calls == counted["calls"] == 3
    assert submitted.estimated_seconds == before.seconds
