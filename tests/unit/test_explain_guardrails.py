"""Explanation guardrails: NDCG and top-k by hand, validation, and the monitor's steps over the
DynamoDB store (moto) with attribution jobs faked, so every transition is seen."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from chalicelib.abtesting.explain_guardrails import (
    ExplanationGuardrail,
    evaluate,
    parse_guardrails,
)
from chalicelib.abtesting.memory import (
    InMemoryExplanationGuardrailStore,
    InMemoryExplanationInputStore,
)
from chalicelib.abtesting.models import ModelVariant
from chalicelib.core.errors import UnprocessableEntity
from chalicelib.core.events import RecordingEventBus
from chalicelib.explainability.facade import AttributionJob, ndcg

CONTROL = {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0}


def test_ndcg_is_clarifys_measure_computed_by_hand() -> None:
    # The treatment ranks b, a, c: DCG@2 scores that order with the control's attributions.
    treatment = {"a": 2.0, "b": 5.0, "c": 1.0, "d": 0.5}
    dcg = 2.0 / math.log2(2) + 3.0 / math.log2(3)  # b then a
    ideal = 3.0 / math.log2(2) + 2.0 / math.log2(3)  # a then b
    assert dcg / ideal == pytest.approx(0.913402, abs=1e-6)
    passing = ExplanationGuardrail("ndcg", min=0.9, top_k=2)
    failing = ExplanationGuardrail("ndcg", min=0.92, top_k=2)
    ok, bad = evaluate((passing, failing), CONTROL, {"t": treatment})
    assert ok.observed == pytest.approx(dcg / ideal) and ok.passed
    assert bad.observed == ok.observed and not bad.passed
    assert "NDCG@2" in bad.reason and "0.9134, below the minimum 0.92" in bad.reason
    (same,) = evaluate((passing,), CONTROL, {"t": dict(CONTROL)})
    assert same.observed == 1.0 and same.passed


def test_feature_not_in_top_k_counts_ranks_and_ignores_a_zero_attribution() -> None:
    guardrail = ExplanationGuardrail("feature_not_in_top_k", feature="d", k=2)
    (inside,) = evaluate((guardrail,), CONTROL, {"t": {"a": 1.0, "d": 0.8, "b": 0.5}})
    assert not inside.passed and inside.observed == 2
    assert inside.reason == "variant t: 'd' is rank 2 in its attribution, inside its top 2"
    (outside,) = evaluate((guardrail,), CONTROL, {"t": {"a": 1.0, "b": 0.9, "d": 0.8}})
    assert outside.passed and outside.observed == 3
    # Two features only: "d" is second, but with attribution 0 it has not entered the top.
    (zero,) = evaluate((guardrail,), CONTROL, {"t": {"a": 1.0, "d": 0.0}})
    assert zero.passed and zero.observed == 2
    (absent,) = evaluate((guardrail,), CONTROL, {"t": {"a": 1.0}})
    assert absent.passed and absent.observed is None


def test_a_feature_tied_into_the_top_k_is_inside_it_whatever_its_name() -> None:
    # zip_code ties the third feature: it is among the three largest attributions, although
    # its name sorts after "c" (and after "Zip" in other spellings).
    guardrail = ExplanationGuardrail("feature_not_in_top_k", feature="zip_code", k=3)
    tied = {"a": 0.5, "b": 0.3, "c": 0.2, "zip_code": 0.2, "d": 0.1}
    (result,) = evaluate((guardrail,), CONTROL, {"t": tied})
    assert not result.passed and result.observed == 3
    everything = {"a": 0.4, "b": 0.4, "c": 0.4, "zip_code": 0.4}
    (flat,) = evaluate((guardrail,), CONTROL, {"t": everything})
    assert not flat.passed and flat.observed == 1


def test_a_tie_in_the_treatment_never_raises_its_ndcg() -> None:
    # A treatment that ranks nothing (every attribution equal, or all 0: a constant model) must
    # not pass because its feature names happen to sort in the control's order: tied features
    # are scored in the order least favourable to the treatment.
    control = {"a": 3.0, "b": 2.0, "c": 1.0}
    for flat in ({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 0.0, "b": 0.0, "c": 0.0}):
        worst = (1.0 / math.log2(2) + 2.0 / math.log2(3)) / (3.0 + 2.0 / math.log2(3))
        assert ndcg(control, flat, 2) == pytest.approx(worst)
    assert ndcg(control, dict(control), 2) == 1.0
    tied_second = (3.0 + 1.0 / math.log2(3)) / (3.0 + 2.0 / math.log2(3))  # a, then c of b/c
    assert ndcg(control, {"a": 3.0, "b": 2.0, "c": 2.0}, 2) == pytest.approx(tied_second)
    reversed_ = {"a": 1.0, "b": 2.0, "c": 3.0}
    expected = (1 + 2 / math.log2(3) + 3 / 2) / (3 + 2 / math.log2(3) + 1 / 2)
    assert ndcg(control, reversed_, 10) == pytest.approx(expected)  # k above the features


def test_an_ndcg_guardrail_against_a_control_without_attribution_passes_any_treatment() -> None:
    # The documented limit (GUARANTEES, What is not guaranteed): a constant control (every
    # attribution 0) gives NDCG no ranking to compare with; it is 1.0 and the guardrail passes.
    guardrail = ExplanationGuardrail("ndcg", min=0.99, top_k=3)
    flat = {"a": 0.0, "b": 0.0, "zip_code": 0.0}
    (result,) = evaluate((guardrail,), flat, {"t": {"a": 0.0, "b": 0.1, "zip_code": 5.0}})
    assert result.passed and result.observed == 1.0


def test_a_feature_encoded_before_registration_is_ranked_column_by_column() -> None:
    # The documented limit (GUARANTEES, What is not guaranteed): a model trained on columns
    # one-hot encoded outside it (no Pipeline) is ranked per encoded column, so a zip code spread
    # over zip_1..zip_4 (0.9 together, the largest) keeps each column out of the top 3.
    guardrail = ExplanationGuardrail("feature_not_in_top_k", feature="zip_1", k=3)
    spread = {"a": 0.5, "b": 0.4, "c": 0.3, "zip_1": 0.25, "zip_2": 0.25, "zip_3": 0.2,
              "zip_4": 0.2}  # fmt: skip
    (result,) = evaluate((guardrail,), CONTROL, {"t": spread})
    assert result.passed and result.observed == 4


def test_a_small_sample_can_put_a_feature_ranked_fourth_into_the_top_3() -> None:
    # The documented limit (GUARANTEES, What is not guaranteed): a guardrail decides on the
    # attributions of sample_size rows, with no sampling error allowed for. zip_code is 4th over
    # 5,000 rows (0.47 against 0.66 for the 3rd); in seeded samples of 10 rows it is in the top
    # 3 about one time in five, in samples of 100 never.
    import numpy as np
    import shap
    from sklearn.ensemble import GradientBoostingClassifier

    names = ["income", "age", "tenure", "balance", "visits", "zip_code"]
    rng = np.random.default_rng(7)
    X = rng.normal(size=(3000, 6))
    y = X @ np.array([1.0, 0.9, 0.8, 0.0, 0.5, 0.6]) + 0.5 * rng.normal(size=3000) > 0
    model = GradientBoostingClassifier(n_estimators=60, max_depth=2, random_state=1)
    rows = np.random.default_rng(11).normal(size=(5000, 6))
    values = np.abs(shap.TreeExplainer(model.fit(X, y), X[:100]).shap_values(rows))
    guardrail = ExplanationGuardrail("feature_not_in_top_k", feature="zip_code", k=3)

    def failures(size: int, draws: int = 500) -> float:
        draw = np.random.default_rng(size)
        failed = 0
        for _ in range(draws):
            mean = values[draw.choice(len(rows), size, replace=False)].mean(axis=0)
            attribution = dict(zip(names, mean.tolist(), strict=True))
            (result,) = evaluate((guardrail,), {}, {"t": attribution})
            failed += not result.passed
        return failed / draws

    overall = dict(zip(names, values.mean(axis=0).tolist(), strict=True))
    (population,) = evaluate((guardrail,), {}, {"t": overall})
    assert population.passed and population.observed == 4
    assert failures(10) > 0.1 and failures(100) == 0.0  # 0.204 and 0.0


FEATURES = {"treatment": ["a", "b", "zip_code"]}


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "ndcg", "min": -0.1},
        {"type": "ndcg", "min": float("nan")},
        {"type": "ndcg", "min": True},
        {"type": "ndcg", "min": 0.9, "top_k": 1.5},
        {"type": "ndcg", "min": 0.9, "top_k": 101},
        {"type": "feature_not_in_top_k", "feature": "zip", "k": 3},
        {"type": "feature_not_in_top_k", "feature": "zip_code"},
        {"type": "feature_not_in_top_k", "feature": "zip_code", "k": 0},
        {"type": "feature_not_in_top_k", "feature": "zip_code", "k": 2, "min": 0.5},
        {"type": "other"},
    ],
)
def test_a_bad_guardrail_is_a_422(raw: dict[str, Any]) -> None:
    with pytest.raises(UnprocessableEntity):
        parse_guardrails([raw], "hold", 100, FEATURES)


def test_a_feature_must_belong_to_every_treatments_model() -> None:
    raw = [{"type": "feature_not_in_top_k", "feature": "zip_code", "k": 1}]
    assert parse_guardrails(raw, "rollback", 10, FEATURES)[0].feature == "zip_code"
    with pytest.raises(UnprocessableEntity, match="not a feature of variant t2's model"):
        parse_guardrails(raw, "hold", 100, {**FEATURES, "t2": ["a", "b"]})
    for action, size in (("pause", 100), ("hold", 9), ("hold", 501)):
        with pytest.raises(UnprocessableEntity):
            parse_guardrails(raw, action, size, FEATURES)


# ---- the monitor over the DynamoDB store, with attribution jobs faked -----------------------


@dataclass
class FakeJobs:
    """Attribution jobs that finish when told to."""

    results: dict[str, dict[str, float]]
    submitted: list[tuple[str, int, int]] = field(default_factory=list)
    inputs: list[list[dict[str, Any]]] = field(default_factory=list)
    done: bool = False
    fail: str | None = None

    def submit(self, model_id: str, model_version: int, inputs: list[dict[str, Any]],
               seed: int) -> str:  # fmt: skip
        self.submitted.append((model_id, model_version, len(inputs)))
        self.inputs.append(inputs)
        return f"job-{len(self.submitted)}-v{model_version}"

    def job(self, job_id: str) -> AttributionJob:
        version = int(job_id.rsplit("-v", 1)[1])
        if not self.done:
            return AttributionJob(job_id, "running")
        if self.fail is not None and version == 2:
            return AttributionJob(job_id, "failed", error={"error": "x", "message": self.fail})
        return AttributionJob(job_id, "succeeded", self.results[str(version)])


def _experiment() -> Any:
    from chalicelib.abtesting.models import Experiment, ExperimentStatus, TrafficAllocationStrategy
    from chalicelib.core.clock import utc_now

    now = utc_now()
    variants = (ModelVariant("control", "m", 1, Decimal("0.5"), True),
                ModelVariant("treatment", "m", 2, Decimal("0.5")))  # fmt: skip
    return Experiment("exp-1", "e", "", variants, ExperimentStatus.RUNNING,
                      TrafficAllocationStrategy.PERCENTAGE, now, None, 100, 0.95, "conversion_rate",
                      (), now, now)  # fmt: skip


def _monitor(store: Any, jobs: FakeJobs, bus: RecordingEventBus) -> Any:
    """A monitor over ``store`` (the in-memory store: DynamoDB's passes the same contract)."""
    from chalicelib.abtesting.explain_monitor import ExplanationGuardrailMonitor

    rows = [{"a": str(i), "b": i, "zip_code": 0.5} for i in range(30)]
    return ExplanationGuardrailMonitor(
        store=store,
        attributions=jobs,
        sample_rows=lambda version_id, n, seed: rows[:n],
        feature_names=lambda model_id, version: ["a", "b", "zip_code"],
        event_bus=bus,
    )


RAW = [{"type": "feature_not_in_top_k", "feature": "zip_code", "k": 1}]


def test_the_monitor_never_waits_and_two_monitors_submit_and_decide_once() -> None:
    bus = RecordingEventBus()
    jobs = FakeJobs({"1": {"a": 1.0, "b": 0.5, "zip_code": 0.1},
                     "2": {"a": 0.2, "b": 0.5, "zip_code": 0.9}})  # fmt: skip
    store = InMemoryExplanationGuardrailStore()  # the table both monitors share
    first, second = _monitor(store, jobs, bus), _monitor(store, jobs, bus)
    experiment = _experiment()
    first.declare(experiment, RAW, "dv-1", "rollback", sample_size=20)
    verdict = first.check(experiment, "t1")
    assert verdict.hold and verdict.rollback_reason is None and verdict.status == "pending"
    assert [(v, n) for _, v, n in jobs.submitted] == [(1, 20), (2, 20)]
    assert second.check(experiment, "t1").status == "pending"  # the same tick again
    assert second.check(experiment, "t2").status == "pending"  # jobs still running
    assert len(jobs.submitted) == 2 and bus.events == []
    jobs.done = True
    decided = second.check(experiment, "t3")
    assert decided.status == "failed" and decided.hold
    assert "1 of 1 checks on variant(s) treatment" in str(decided.rollback_reason)
    assert decided.details and decided.details["failed"] == [
        {"variant_id": "treatment", "type": "feature_not_in_top_k"}
    ]
    again = first.check(experiment, "t4")
    assert again.rollback_reason == decided.rollback_reason
    assert len(jobs.submitted) == 2 and len(bus.events) == 1
    assert bus.events[0].detail["status"] == "failed"
    declaration, evaluation = first.get("exp-1")
    assert evaluation.status == "failed" and evaluation.top_features["treatment"][0] == "zip_code"
    assert evaluation.attributions["control"] == jobs.results["1"]
    assert declaration.sample_size == 20 and evaluation.sample_rows == 20


def test_a_failed_job_is_an_error_and_a_new_declaration_starts_over() -> None:
    bus = RecordingEventBus()
    jobs = FakeJobs({"1": {"a": 1.0, "b": 0.5, "zip_code": 0.0},
                     "2": {"a": 0.9, "b": 0.6, "zip_code": 0.0}}, fail="too_expensive")  # fmt: skip
    monitor = _monitor(InMemoryExplanationGuardrailStore(), jobs, bus)
    experiment = _experiment()
    monitor.declare(experiment, RAW, "dv-1", "hold")
    monitor.check(experiment, "t1")
    jobs.done = True
    errored = monitor.check(experiment, "t2")
    assert errored.status == "error" and errored.hold and errored.rollback_reason is None
    _, evaluation = monitor.get("exp-1")
    assert evaluation.reason == "the attribution of variant treatment failed: too_expensive"
    assert monitor.check(experiment, "t3").status == "error" and len(jobs.submitted) == 2
    jobs.fail = None
    monitor.declare(experiment, RAW, "dv-1", "hold")
    assert monitor.get("exp-1")[1] is None
    assert monitor.check(experiment, "t4").status == "pending" and len(jobs.submitted) == 4
    passed = monitor.check(experiment, "t5")
    assert passed.status == "passed" and not passed.hold
    assert monitor.remove("exp-1") and not monitor.remove("exp-1")
    assert monitor.check(experiment, "t6").status is None


class StaleStore:
    """A guardrail store, except that reads see the item as it was before the first write (as
    a second monitor that read just before the first one wrote would)."""

    def __init__(self) -> None:
        self.inner = InMemoryExplanationGuardrailStore()
        self.frozen: Any = None

    def freeze(self, experiment_id: str) -> None:
        self.frozen = self.inner.get(experiment_id)

    def get(self, experiment_id: str) -> Any:
        if self.frozen is not None:
            found, self.frozen = self.frozen, None
            return found
        return self.inner.get(experiment_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_monitor_that_loses_a_race_adopts_what_the_winner_recorded() -> None:
    from chalicelib.abtesting.explain_monitor import ExplanationGuardrailMonitor

    bus = RecordingEventBus()
    jobs = FakeJobs({"1": {"a": 1.0, "b": 0.5, "zip_code": 0.1},
                     "2": {"a": 0.9, "b": 0.6, "zip_code": 0.2}})  # fmt: skip
    stale = StaleStore()
    rows = [{"a": 1.0, "b": 2.0, "zip_code": 0.5}] * 12
    late = ExplanationGuardrailMonitor(stale, jobs, lambda *_: rows, lambda *_: ["a", "b",
                                       "zip_code"], bus)  # fmt: skip
    first = _monitor(stale.inner, jobs, bus)
    experiment = _experiment()
    first.declare(experiment, RAW, "dv-1", "rollback", sample_size=12)
    stale.freeze("exp-1")  # the late monitor read before anything was submitted
    first.check(experiment, "t1")
    recorded = first.get("exp-1")[1].jobs
    assert late.check(experiment, "t1").status == "pending"
    assert len(jobs.submitted) == 4 and first.get("exp-1")[1].jobs == recorded  # one set kept
    jobs.done = True
    stale.freeze("exp-1")  # it still sees "pending" when the first one decides
    assert first.check(experiment, "t2").status == "passed"
    assert late.check(experiment, "t2").status == "passed"
    assert [e.detail["status"] for e in bus.events] == ["passed"]


def test_no_rows_is_an_error_and_a_dependency_failure_is_retried_next_tick() -> None:
    from chalicelib.abtesting.explain_monitor import ExplanationGuardrailMonitor
    from chalicelib.core.errors import ServiceUnavailable

    bus, jobs = RecordingEventBus(), FakeJobs({})
    answers: list[Any] = [ServiceUnavailable("S3 is throttling"), []]

    def sample(version_id: str, rows: int, seed: int) -> list[dict[str, Any]]:
        found = answers.pop(0)
        if isinstance(found, Exception):
            raise found
        return found

    monitor = ExplanationGuardrailMonitor(
        InMemoryExplanationGuardrailStore(), jobs, sample, lambda *_: ["a"], bus
    )
    experiment = _experiment()
    monitor.declare(experiment, [{"type": "ndcg", "min": 0.5}], "dv-1")
    with pytest.raises(ServiceUnavailable):
        monitor.check(experiment, "t1")
    assert monitor.get("exp-1")[1] is None  # nothing recorded: the next tick tries again
    errored = monitor.check(experiment, "t2")
    assert errored.status == "error" and errored.hold
    assert "has no rows to explain" in monitor.get("exp-1")[1].reason
    assert bus.events[0].detail["status"] == "error"


def test_csv_cells_become_numbers_and_other_text_is_passed_on() -> None:
    from chalicelib.abtesting.explain_monitor import _value

    assert _value("1.5") == 1.5 and _value("north") == "north" and _value(3) == 3


def test_the_python_api_declares_guardrails_and_the_monitor_thread_acts_on_them() -> None:
    from chalicelib.abtesting.explain_monitor import ExplanationGuardrailMonitor
    from chalicelib.abtesting.memory import InMemoryCanaryCheckStore
    from chalicelib.abtesting.rollback import AutoRollbackManager
    from chalicelib.core.clock import SystemClock
    from tests.helpers.abtesting import FakeRegistry, memory_engine, running_experiment

    bus = RecordingEventBus()
    engine = memory_engine(FakeRegistry(), bus, SystemClock())
    experiment = running_experiment(engine, "0.5", "0.5")
    jobs = FakeJobs({"1": {"a": 1.0, "b": 0.5, "zip_code": 0.1},
                     "2": {"a": 0.2, "b": 0.1, "zip_code": 0.9}}, done=True)  # fmt: skip
    rows = [{"a": 1.0, "b": 2.0, "zip_code": 0.5}] * 10
    monitor = ExplanationGuardrailMonitor(InMemoryExplanationGuardrailStore(), jobs,
                                          lambda *_: rows, lambda *_: ["a", "b", "zip_code"],
                                          bus)  # fmt: skip
    manager = AutoRollbackManager(engine, InMemoryCanaryCheckStore(), explanations=monitor)
    declared = manager.register_explanation_guardrails(
        experiment.experiment_id, RAW, "dv-1", action="rollback", sample_size=10
    )
    assert declared.action == "rollback" and manager.explanations is monitor
    assert manager.run_once().rolled_back == []  # the jobs were just submitted
    manager.start_monitoring(interval=0.05)
    try:
        stopped = engine.get_experiment(experiment.experiment_id)
        for _ in range(200):
            stopped = engine.get_experiment(experiment.experiment_id)
            if stopped.status.value == "rolled_back":
                break
            time.sleep(0.05)
    finally:
        manager.stop_monitoring()
    assert stopped.status.value == "rolled_back"
    assert stopped.rollback_details["metric"] == "explanation_guardrails"
    assert str(stopped.rollback_reason).startswith("explanation guardrails failed")
    assert not manager.monitoring


# ---- posted inputs: the bottom-k sample --------------------------------------------------------


def test_posted_inputs_keep_exactly_the_500_smallest_hashes_whatever_the_order() -> None:
    import hashlib
    import random

    from chalicelib.abtesting.explain_inputs import MAX_POSTED_INPUTS, PostedInputs

    ids = [f"req-{i}" for i in range(1500)]
    random.Random(3).shuffle(ids)
    table = InMemoryExplanationInputStore()  # DynamoDB's passes the same contract
    writers = (PostedInputs(table), PostedInputs(table))  # two instances, interleaved batches
    for start in range(0, len(ids), 100):
        batch = [(rid, {"x": int(rid[4:]), "tag": "a"}) for rid in ids[start : start + 100]]
        receipt = writers[start // 100 % 2].post("exp-k", batch)
        assert receipt.held == min(start + 100, MAX_POSTED_INPUTS)
    again = writers[0].post("exp-k", [(ids[0], {"x": int(ids[0][4:]), "tag": "a"})])
    assert again.sampled == 0 and again.held == MAX_POSTED_INPUTS  # a retry changes nothing
    oracle = sorted(ids, key=lambda r: hashlib.sha256(f"exp-k\x1f{r}".encode()).hexdigest()[:16])
    kept = writers[1].sample("exp-k", MAX_POSTED_INPUTS)
    assert [f"req-{row['x']}" for row in kept] == oracle[:MAX_POSTED_INPUTS]
    assert writers[0].count("exp-k") == MAX_POSTED_INPUTS  # storage stays bounded
    # Uniform over the ids: each third of them is kept about a third of the time.
    thirds = [sum(1 for row in kept if row["x"] // 500 == t) for t in range(3)]
    assert all(130 <= n <= 205 for n in thirds), thirds


@pytest.mark.parametrize(
    "row", [{}, {"x": float("inf")}, {"x": [1, 2]}, {"x": "y" * 257}, "flat", {"x": None}]
)
def test_a_bad_posted_row_is_a_422_and_stores_nothing(row: Any) -> None:
    from chalicelib.abtesting.explain_inputs import PostedInputs

    posted = PostedInputs(InMemoryExplanationInputStore())
    with pytest.raises(UnprocessableEntity):
        posted.post("exp-bad", [("ok", {"x": 1.0}), ("bad", row)])
    assert posted.count("exp-bad") == 0


def test_posted_inputs_wait_until_the_sample_is_full_then_are_explained() -> None:
    from chalicelib.abtesting.explain_inputs import PostedInputs
    from chalicelib.abtesting.explain_monitor import ExplanationGuardrailMonitor

    bus = RecordingEventBus()
    jobs = FakeJobs({"1": {"a": 1.0, "b": 0.5, "zip_code": 0.1},
                     "2": {"a": 0.9, "b": 0.4, "zip_code": 0.2}}, done=True)  # fmt: skip
    posted = PostedInputs(InMemoryExplanationInputStore())
    monitor = ExplanationGuardrailMonitor(InMemoryExplanationGuardrailStore(), jobs, None,
                                          lambda *_: ["a", "b", "zip_code"], bus,
                                          posted=posted)  # fmt: skip
    experiment = _experiment()
    with pytest.raises(UnprocessableEntity):
        monitor.declare(experiment, RAW, "dv-1", source="posted_inputs")
    with pytest.raises(UnprocessableEntity):
        monitor.declare(experiment, RAW, None)
    monitor.declare(experiment, RAW, None, sample_size=20, source="posted_inputs")
    rows = [(f"r{i}", {"a": i, "b": "2.5", "zip_code": 0.5}) for i in range(30)]
    posted.post("exp-1", rows[:12])
    waiting = monitor.check(experiment, "t1")
    assert waiting.status == "waiting" and waiting.hold and jobs.submitted == []
    assert monitor.get("exp-1")[1] is None
    posted.post("exp-1", rows[12:])
    assert monitor.check(experiment, "t2").status == "pending"
    assert [n for _, _, n in jobs.submitted] == [20, 20]
    assert monitor.check(experiment, "t3").status == "passed"
    assert monitor.get("exp-1")[0].source == "posted_inputs"


def test_posted_inputs_are_explained_with_the_types_they_were_posted_with() -> None:
    # A zip code the model encodes as a category ("02139") is a string the client posted as
    # served; read as the number 2139.0 the pipeline would see an unknown category (all zeros
    # with handle_unknown="ignore"), and the guardrail would judge attributions of rows the
    # model never served.
    from chalicelib.abtesting.explain_inputs import PostedInputs
    from chalicelib.abtesting.explain_monitor import ExplanationGuardrailMonitor

    jobs = FakeJobs({"1": {"a": 1.0}, "2": {"a": 1.0}})
    posted = PostedInputs(InMemoryExplanationInputStore())
    monitor = ExplanationGuardrailMonitor(InMemoryExplanationGuardrailStore(), jobs, None,
                                          lambda *_: ["a", "zip_code"], RecordingEventBus(),
                                          posted=posted)  # fmt: skip
    experiment = _experiment()
    monitor.declare(experiment, RAW, None, sample_size=10, source="posted_inputs")
    posted.post("exp-1", [(f"r{i}", {"a": i, "zip_code": f"0{2139 + i}"}) for i in range(10)])
    assert monitor.check(experiment, "t1").status == "pending"
    for inputs in jobs.inputs:
        assert sorted(row["zip_code"] for row in inputs) == [f"0{2139 + i}" for i in range(10)]
        assert all(isinstance(row["a"], int) for row in inputs)


def test_a_dataset_versions_numeric_looking_category_is_read_as_a_number() -> None:
    # The documented limit (GUARANTEES, What is not guaranteed): a dataset version's cells that
    # read as numbers are sent as numbers, a zip code "02139" as 2139.0.
    from chalicelib.abtesting.explain_monitor import ExplanationGuardrailMonitor

    jobs = FakeJobs({"1": {"a": 1.0}, "2": {"a": 1.0}})
    rows = [{"a": "1.5", "zip_code": "02139", "city": "Paris"}] * 10
    monitor = ExplanationGuardrailMonitor(InMemoryExplanationGuardrailStore(), jobs,
                                          lambda *_: rows, lambda *_: ["a", "zip_code", "city"],
                                          RecordingEventBus())  # fmt: skip
    experiment = _experiment()
    monitor.declare(experiment, RAW, "dv-1", sample_size=10)
    assert monitor.check(experiment, "t1").status == "pending"
    assert jobs.inputs[0][0] == {"a": 1.5, "zip_code": 2139.0, "city": "Paris"}


def test_a_posted_row_the_models_cannot_be_explained_on_is_a_422_and_stores_nothing() -> None:
    # Stored, such a row failed every evaluation it was sampled into, for good: the bottom-k
    # sample keeps a small hash whatever is posted after it, and no route removes a row (one
    # row of request id "bad3709" held a 400-row experiment's guardrails in "error").
    from chalicelib.abtesting.explain_inputs import PostedInputs, sample_key
    from chalicelib.abtesting.explain_monitor import ExplanationGuardrailMonitor

    jobs = FakeJobs({"1": {"a": 1.0}, "2": {"a": 1.0}}, done=True)
    posted = PostedInputs(InMemoryExplanationInputStore())
    reads: list[Any] = []
    monitor = ExplanationGuardrailMonitor(InMemoryExplanationGuardrailStore(), jobs, None,
                                          lambda *key: reads.append(key) or ["a", "zip_code"],
                                          RecordingEventBus(), posted=posted)  # fmt: skip
    experiment = _experiment()
    monitor.declare(experiment, RAW, None, sample_size=10, source="posted_inputs")
    good = [(f"r{i}", {"a": i, "zip_code": "02139", "extra": True}) for i in range(40)]
    assert monitor.post_inputs(experiment, good).held == 40
    bad_id = next(f"bad{i}" for i in range(10**6) if sample_key("exp-1", f"bad{i}") < "0008")
    for bad in ({"a": 1}, {"a": 1, "zip_code": True}):
        with pytest.raises(UnprocessableEntity, match="'zip_code', a feature"):
            monitor.post_inputs(experiment, [("ok", {"a": 2, "zip_code": 0.5}), (bad_id, bad)])
    assert posted.count("exp-1") == 40
    assert monitor.check(experiment, "t1").status == "pending"
    assert monitor.check(experiment, "t2").status == "passed"
    assert sorted(set(reads)) == [("m", 1), ("m", 2)]
    assert reads.count(("m", 1)) == 2  # once for all the posts, once to submit the jobs


def test_a_poster_who_chooses_request_ids_can_fill_the_sample_with_its_rows() -> None:
    # The documented limit (GUARANTEES, What is not guaranteed): request ids are not checked
    # against routed requests and their hash is public, so a writer who grinds ids whose hash is
    # below every honest one (about 200 hashes per row for 200 honest ids) owns the sample.
    from chalicelib.abtesting.explain_inputs import PostedInputs, sample_key

    posted = PostedInputs(InMemoryExplanationInputStore())
    honest = [(f"r{i}", {"a": float(i)}) for i in range(200)]
    posted.post("exp-grind", honest)
    first = min(sample_key("exp-grind", rid) for rid, _ in honest)
    chosen = [f"x{i}" for i in range(100_000) if sample_key("exp-grind", f"x{i}") < first][:10]
    posted.post("exp-grind", [(rid, {"a": -1.0}) for rid in chosen])
    assert [row["a"] for row in posted.sample("exp-grind", 10)] == [-1.0] * 10


def test_reevaluation_rounds_keep_the_last_decision_until_the_next_one() -> None:
    from chalicelib.abtesting.explain_monitor import ExplanationGuardrailMonitor
    from chalicelib.core.clock import FixedClock, utc_now

    clock = FixedClock(utc_now())
    bus = RecordingEventBus()
    leaning = {"a": 0.2, "b": 0.1, "zip_code": 0.9}
    jobs = FakeJobs({"1": {"a": 1.0, "b": 0.5, "zip_code": 0.1}, "2": leaning}, done=True)
    rows = [{"a": 1.0, "b": 2.0, "zip_code": 0.5}] * 10
    names = ["a", "b", "zip_code"]
    monitor = ExplanationGuardrailMonitor(
        InMemoryExplanationGuardrailStore(), jobs, lambda *_: rows, lambda *_: names, bus, clock
    )
    experiment = _experiment()
    for minutes in (4, 10_081, True):
        with pytest.raises(UnprocessableEntity):
            monitor.declare(experiment, RAW, "dv-1", reevaluate_minutes=minutes)
    monitor.declare(experiment, RAW, "dv-1", "hold", sample_size=10, reevaluate_minutes=30)
    monitor.check(experiment, "t1")
    assert monitor.check(experiment, "t2").status == "failed"
    clock.advance(minutes=29)
    assert monitor.check(experiment, "t3").status == "failed" and len(jobs.submitted) == 2
    clock.advance(minutes=1)
    jobs.done = False
    jobs.results["2"] = {"a": 0.9, "b": 0.6, "zip_code": 0.05}  # the treatment was fixed
    again = monitor.check(experiment, "t4")
    assert again.status == "pending" and again.hold  # still held by the failed round 0
    assert len(jobs.submitted) == 4 and monitor.check(experiment, "t4").status == "pending"
    jobs.done = True
    passed = monitor.check(experiment, "t5")
    assert passed.status == "passed" and not passed.hold
    _, evaluation = monitor.get("exp-1")
    assert evaluation.round == 1 and evaluation.previous == "failed"
    clock.advance(minutes=30)
    jobs.done = False
    third = monitor.check(experiment, "t6")
    assert third.status == "pending" and not third.hold  # a passing ramp is not held meanwhile
    assert [e.detail["status"] for e in bus.events] == ["failed", "passed"]
