"""The cumulative effect of shipped models, measured against a global holdout.

A holdout's users see only controls in every experiment it covers and are counted under the
variant ``holdout``. Its analysis compares, over the experiments that carry the holdout, the
holdout users' outcomes with those of everyone exposed to what the experiments ship: the winner
of a concluded experiment (unless the control won) and the treatments of a running or paused
one. Drafts and rolled-back experiments ship nothing. The two pooled arms are compared by the
declared-metric machinery (:func:`chalicelib.abtesting.metrics.compare`: the always-valid test
by default, or the fixed-horizon Welch/two-proportion z test, Fisher's exact test for small
proportions), with the Bayesian reading of :mod:`bayes` beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chalicelib.abtesting import bayes, sequential
from chalicelib.abtesting import metrics as declared
from chalicelib.abtesting.aggregate import merge_metrics
from chalicelib.abtesting.assignment import HOLDOUT
from chalicelib.abtesting.bayes import BayesianResult
from chalicelib.abtesting.metrics import Estimate, MetricComparison
from chalicelib.abtesting.models import (
    LOWER_IS_BETTER,
    RATE_METRICS,
    Experiment,
    ExperimentMetrics,
    ExperimentStatus,
    MetricSpec,
)

MAX_COVERED_EXPERIMENTS = 100
"""Experiments one holdout analysis reads (one counter query each)."""
EXPOSED = "exposed"


@dataclass(frozen=True)
class CoveredExperiment:
    """One experiment a holdout covers, as the analysis used it.

    Attributes:
        experiment_id: The experiment.
        status: Its status.
        shipped: The variants whose users count as exposed (empty: it ships nothing).
        holdout_requests: Requests of holdout users.
        exposed_requests: Requests of users of the shipped variants.
        shared_holdout: Whether other holdouts cover it too (their users are counted together
            under ``holdout``).
    """

    experiment_id: str
    status: str
    shipped: tuple[str, ...]
    holdout_requests: int
    exposed_requests: int
    shared_holdout: bool


@dataclass(frozen=True)
class HoldoutAnalysis:
    """Holdout users against users exposed to shipped variants, pooled over experiments.

    Attributes:
        holdout_id: The holdout.
        metric: The metric compared (a rate, ``latency_ms`` or a custom metric).
        method: ``sequential`` or ``fixed``.
        alpha: The test's level.
        experiments: The covered experiments the caller may read.
        holdout: The holdout arm's estimate (``None`` without data).
        exposed: The exposed arm's estimate.
        holdout_requests: Requests of holdout users, all experiments.
        exposed_requests: Requests of exposed users, all experiments.
        comparison: Exposed against holdout (``difference`` = exposed − holdout).
        significant: ``p_value < alpha``.
        direction: ``better``/``worse`` for the exposed users when significant, else ``none``.
        bayesian: The Bayesian reading of exposed against holdout (``None`` without data).
    """

    holdout_id: str
    metric: str
    method: str
    alpha: float
    experiments: tuple[CoveredExperiment, ...]
    holdout: Estimate | None
    exposed: Estimate | None
    holdout_requests: int
    exposed_requests: int
    comparison: MetricComparison
    significant: bool
    direction: str
    bayesian: BayesianResult | None


def shipped_variants(experiment: Experiment) -> tuple[str, ...]:
    """The variants whose users see what the experiment ships (see the module docstring)."""
    control = experiment.control.variant_id
    if experiment.status == ExperimentStatus.CONCLUDED:
        winner = experiment.winning_variant_id
        return () if winner in (None, control) else (str(winner),)
    if experiment.status in (ExperimentStatus.RUNNING, ExperimentStatus.PAUSED):
        return tuple(v.variant_id for v in experiment.variants if not v.is_control)
    return ()


def metric_spec(metric: str) -> MetricSpec:
    """The declared-metric reading of a metric name: a rate is a proportion, else a mean."""
    kind = "proportion" if metric in RATE_METRICS else "mean"
    return MetricSpec(metric, kind, "primary", source=metric)


def analyze_holdout(
    holdout_id: str,
    covered: Sequence[tuple[Experiment, Mapping[str, ExperimentMetrics]]],
    metric: str = "conversion_rate",
    method: str = "sequential",
    alpha: float = 0.05,
    tuning: int = sequential.DEFAULT_TUNING,
) -> HoldoutAnalysis:
    """Compares the holdout's users with the users of shipped variants over ``covered``.

    Args:
        holdout_id: The holdout.
        covered: The experiments carrying the holdout with their metrics per variant.
        metric: What to compare.
        method: ``sequential`` (always valid, read any time) or ``fixed``.
        alpha: The test's level (``1 - confidence``).
        tuning: The sequential test's tuning sample size.
    """
    held: list[ExperimentMetrics] = []
    exposed: list[ExperimentMetrics] = []
    rows = []
    for experiment, found in covered:
        shipped = shipped_variants(experiment)
        holdout_arm = found.get(HOLDOUT)
        arms = [found[v] for v in shipped if v in found]
        if holdout_arm is not None and arms:
            held.append(holdout_arm)
            exposed.extend(arms)
        rows.append(
            CoveredExperiment(
                experiment.experiment_id, experiment.status.value, shipped,
                holdout_arm.request_count if holdout_arm is not None and arms else 0,
                sum(a.request_count for a in arms) if holdout_arm is not None else 0,
                len(experiment.holdouts) > 1,
            )
        )  # fmt: skip
    held_total = merge_metrics(HOLDOUT, held) if held else ExperimentMetrics(HOLDOUT)
    exposed_total = merge_metrics(EXPOSED, exposed) if exposed else ExperimentMetrics(EXPOSED)
    spec = metric_spec(metric)
    control, treatment = declared.estimate(held_total, spec), declared.estimate(exposed_total, spec)
    comparison = declared.compare(spec, EXPOSED, control, treatment, method, alpha, tuning)
    significant = comparison.difference is not None and comparison.p_value < alpha
    direction = "none"
    if significant and comparison.difference:
        up = comparison.difference > 0
        direction = "worse" if up == (metric in LOWER_IS_BETTER) else "better"
    reading = None
    if control is not None and treatment is not None:
        reading = bayes.compare_metrics(held_total, exposed_total, metric)
    return HoldoutAnalysis(
        holdout_id, metric, method, alpha, tuple(rows), control, treatment,
        held_total.request_count, exposed_total.request_count, comparison, significant,
        direction, reading,
    )  # fmt: skip
