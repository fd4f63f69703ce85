"""Segments: outcomes cut by declared dimension attributes, tested per segment.

An experiment declares up to :data:`MAX_DIMENSIONS` dimensions (``{"country": {"max_values":
20}}``). An outcome may carry ``attributes`` with a value for each; a key the experiment did not
declare is refused (422 ``unknown_dimension``: a misspelt key would otherwise count every outcome
as missing), and so is a value that is empty, longer than :data:`MAX_VALUE_LENGTH` characters,
holds a control or bidirectional-formatting character, or is one of the reserved names.

Counting (the repository): every outcome counts once in every declared dimension, under its
value, :data:`MISSING` when it has none, or :data:`OTHER` once the dimension already holds
``max_values`` distinct values (first come, first kept; the set is stored with a conditional
update in the same transaction as the counts, so two writers never keep more). So for each
dimension the segments add up exactly to the experiment's totals.

Analysis (:func:`analyze_segments`): for every (dimension, value, treatment) the primary metric
is compared with the control by the experiment's method (sequential or fixed, stratified by
allocation phase, as the overall analysis), without the split over treatments, and so is every
declared proportion, mean and ratio metric (totals of the comparable phases, as ``/analysis``
compares declared metrics; a declared metric named as the primary one is the primary metric,
tested once). Then one correction (Holm or Benjamini-Hochberg, declared) runs over every test
of the analysis that has data: metrics x segments x treatments; a test where an arm has no
data (``no_data``, p = 1) is left out of the family and keeps adjusted p = 1. A test is
*flagged* when its corrected result disagrees with the overall one of the same metric:
significant with the opposite sign, or significant where the overall comparison is not.

Declared quantile metrics are not tested per segment (:data:`QUANTILE_UNTESTED`): a quantile
needs a histogram per segment value (hundreds of buckets each), which the segment counter items
do not keep; the response lists them under ``untested``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chalicelib.abtesting import correction
from chalicelib.abtesting import metrics as declared
from chalicelib.abtesting.aggregate import merge_metrics
from chalicelib.abtesting.errors import InvalidExperiment
from chalicelib.abtesting.models import (
    LOWER_IS_BETTER,
    AnalysisMethod,
    Dimension,
    Experiment,
    ExperimentMetrics,
    MetricSpec,
    RecommendedAction,
    SegmentSettings,
    SignificanceResult,
)
from chalicelib.abtesting.statistics import (
    ExperimentAnalysis,
    PhaseMetrics,
    StatisticalAnalyzer,
    comparable_pairs,
)
from chalicelib.core.errors import UnprocessableEntity
from chalicelib.core.text import name_problem, visible

MAX_DIMENSIONS = 3
MAX_VALUES = 20
"""Largest ``max_values`` a dimension may declare (keeps a counter item far below 400 KB)."""
MAX_VALUE_LENGTH = 64
OTHER = "(other)"
MISSING = "(missing)"
RESERVED = frozenset({OTHER, MISSING})
TOP_SEGMENTS = 5
CORRECTIONS = ("holm", "bh")
DIMENSION_NAME_LENGTH = 64
QUANTILE_UNTESTED = (
    "quantiles are not tested per segment: a quantile needs a histogram per segment value "
    "(hundreds of buckets each), which segment counters do not keep; /analysis tests it overall"
)


class InvalidAttributes(UnprocessableEntity):
    """An outcome's attributes do not fit the experiment's declared dimensions."""

    code = "invalid_attributes"


def check_settings(settings: SegmentSettings) -> None:
    """Refuses an inconsistent segment declaration.

    Raises:
        InvalidExperiment: More than three dimensions, a repeated or malformed name, a
            ``max_values`` outside 1..20, or an unknown correction (422).
    """
    names = [d.name for d in settings.dimensions]
    if len(names) > MAX_DIMENSIONS:
        raise InvalidExperiment(f"at most {MAX_DIMENSIONS} dimensions (got {len(names)})")
    if len(set(names)) != len(names):
        raise InvalidExperiment("dimension names must be distinct")
    for dimension in settings.dimensions:
        if not _valid_dimension_name(dimension.name):
            raise InvalidExperiment(
                f"dimension '{visible(dimension.name)}': 1-{DIMENSION_NAME_LENGTH} letters, "
                "digits, '_', '.', '-', starting with a letter"
            )
        if not 1 <= dimension.max_values <= MAX_VALUES:
            raise InvalidExperiment(
                f"dimension '{dimension.name}': max_values must be 1-{MAX_VALUES}"
            )
    if settings.correction not in CORRECTIONS:
        raise InvalidExperiment(f"segment correction must be one of {', '.join(CORRECTIONS)}")


def _valid_dimension_name(name: str) -> bool:
    if not 1 <= len(name) <= DIMENSION_NAME_LENGTH or not name[0].isascii():
        return False
    return name[0].isalpha() and all(c.isascii() and (c.isalnum() or c in "_.-") for c in name)


def check_attributes(dimensions: Sequence[Dimension], attributes: Mapping[str, object]) -> None:
    """Refuses attributes that are not values of declared dimensions.

    Raises:
        InvalidAttributes: An undeclared key, or a value that is not a string of 1-64
            characters free of control characters, or a reserved name (422).
    """
    declared = {d.name for d in dimensions}
    for key, value in attributes.items():
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise InvalidAttributes(
                f"attribute '{visible(str(key))}' is not a declared dimension (declared: {known})",
                code="unknown_dimension",
            )
        problem = _value_problem(value)
        if problem is not None:
            raise InvalidAttributes(f"attribute '{key}': {problem}")


def _value_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return "the value must be a string"
    if not 1 <= len(value) <= MAX_VALUE_LENGTH:
        return f"the value must be 1-{MAX_VALUE_LENGTH} characters"
    problem = name_problem(value)
    if problem is not None:
        return f"the value holds a {problem}"
    if value in RESERVED:
        return f"'{value}' is reserved"
    return None


# ---------------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class SegmentTest:
    """One treatment against the control within one segment, on one metric.

    Attributes:
        dimension: The dimension.
        value: The segment's value (or ``(other)`` / ``(missing)``).
        variant_id: The treatment.
        control: The control's metrics in the segment (all phases).
        treatment: The treatment's metrics in the segment.
        significance: The uncorrected comparison on the metric.
        adjusted_p_value: Corrected across every test of the analysis (metrics x segments x
            treatments).
        significant: ``adjusted_p_value < alpha``.
        difference: ``treatment - control`` on the metric (``None`` without data).
        flagged: The corrected result disagrees with the overall one.
        flag_reason: Why it is flagged (``None`` when it is not).
        metric: The metric tested (the primary metric or a declared one).
        kind: ``primary`` for the experiment's primary metric, else the declared kind
            (``proportion``, ``mean``, ``ratio``).
        direction: ``better`` or ``worse`` when significant, else ``None``.
    """

    dimension: str
    value: str
    variant_id: str
    control: ExperimentMetrics
    treatment: ExperimentMetrics
    significance: SignificanceResult
    adjusted_p_value: float
    significant: bool
    difference: float | None
    flagged: bool
    flag_reason: str | None
    metric: str = ""
    kind: str = "primary"
    direction: str | None = None


@dataclass(frozen=True)
class UntestedMetric:
    """A declared metric the segment analysis does not test, and why.

    Attributes:
        metric: The declared metric.
        kind: Its kind.
        reason: Why it has no segment test.
    """

    metric: str
    kind: str
    reason: str


@dataclass(frozen=True)
class _Raw:
    """One uncorrected segment test and what judging it needs."""

    dimension: str
    value: str
    variant_id: str
    control: ExperimentMetrics
    treatment: ExperimentMetrics
    result: SignificanceResult
    metric: str
    kind: str
    lower_is_better: bool


@dataclass(frozen=True)
class SegmentAnalysis:
    """Every segment test of an experiment, its top segments and the flagged ones.

    Attributes:
        experiment_id: The experiment.
        primary_metric: The metric tested.
        method: ``sequential`` or ``fixed``.
        correction: ``holm`` or ``bh``.
        alpha: The level the corrected p-values are compared with (1 - confidence level).
        dimensions: The declared dimensions.
        segments: ``{dimension: {value: {variant: metrics}}}`` over all phases.
        tests: One test per (dimension, value, treatment, metric), in dimension, value,
            treatment order; the primary metric first, then the declared metrics in order.
        top: Up to five tests: the significant ones first, then by absolute relative effect.
        flagged: The tests whose corrected result disagrees with the overall result.
        metrics: The metrics tested per segment (the primary metric first).
        untested: Declared metrics without segment tests, with the reason.
    """

    experiment_id: str
    primary_metric: str
    method: str
    correction: str
    alpha: float
    dimensions: tuple[Dimension, ...]
    segments: dict[str, dict[str, dict[str, ExperimentMetrics]]]
    tests: list[SegmentTest]
    top: list[SegmentTest]
    flagged: list[SegmentTest]
    metrics: tuple[str, ...] = ()
    untested: tuple[UntestedMetric, ...] = ()


SegmentPhases = Mapping[str, Mapping[str, Sequence[PhaseMetrics]]]
"""``{dimension: {value: [metrics per allocation phase]}}``."""


def analyze_segments(
    experiment: Experiment,
    overall: ExperimentAnalysis,
    segment_phases: SegmentPhases,
    method: AnalysisMethod | str | None = None,
) -> SegmentAnalysis:
    """Tests the primary and the declared metrics per segment, corrects across all the tests
    and flags disagreements with the overall results.

    Args:
        experiment: The experiment (its dimensions, correction, metrics and level).
        overall: The experiment's overall analysis (by the same method).
        segment_phases: Metrics per dimension, value and allocation phase.
        method: Overrides the experiment's method.
    """
    chosen = AnalysisMethod(method or experiment.analysis.method)
    alpha = round(1.0 - experiment.confidence_level, 12)
    listed = declared.beside_primary(experiment.analysis.metrics, experiment.primary_metric)
    specs = [s for s in listed if s.kind != "quantile"]
    raw: list[_Raw] = []
    totals: dict[str, dict[str, dict[str, ExperimentMetrics]]] = {}
    for dimension in experiment.segments.dimensions:
        values = segment_phases.get(dimension.name, {})
        totals[dimension.name] = {}
        for value in sorted(values):
            phases = values[value]
            totals[dimension.name][value] = _totals(experiment, phases)
            raw += _segment_tests(experiment, dimension.name, value, phases, chosen, specs)
    method_name = experiment.segments.correction
    adjusted = correction.adjust_tested(
        [_p(item.result) for item in raw], [_ran(item.result) for item in raw], method_name
    )
    verdicts = _overall_verdicts(overall, experiment.primary_metric, chosen)
    tests = [
        _test(item, p_adj, alpha, verdicts.get((item.metric, item.variant_id)))
        for item, p_adj in zip(raw, adjusted, strict=True)
    ]
    return SegmentAnalysis(
        experiment_id=experiment.experiment_id,
        primary_metric=experiment.primary_metric,
        method=chosen.value,
        correction=method_name,
        alpha=alpha,
        dimensions=experiment.segments.dimensions,
        segments=totals,
        tests=tests,
        top=top_segments(tests),
        flagged=[t for t in tests if t.flagged],
        metrics=(experiment.primary_metric, *(s.name for s in specs)),
        untested=tuple(
            UntestedMetric(s.name, s.kind, QUANTILE_UNTESTED)
            for s in listed
            if s.kind == "quantile"
        ),
    )


def _segment_tests(
    experiment: Experiment,
    dimension: str,
    value: str,
    phases: Sequence[PhaseMetrics],
    method: AnalysisMethod,
    specs: Sequence[MetricSpec],
) -> list[_Raw]:
    """The uncorrected tests of one segment: per treatment, the primary metric (stratified by
    phase) and each declared metric (totals of the comparable phases)."""
    analyzer = StatisticalAnalyzer(
        experiment.confidence_level, experiment.minimum_sample_size, experiment.analysis
    )
    alpha = round(1.0 - experiment.confidence_level, 12)
    control_id = experiment.control.variant_id
    primary = experiment.primary_metric
    found = []
    for variant in experiment.treatments:
        pairs = comparable_pairs(phases, control_id, variant.variant_id)
        control = merge_metrics(control_id, [c for c, _ in pairs] or [_empty(control_id)])
        treatment = merge_metrics(
            variant.variant_id, [t for _, t in pairs] or [_empty(variant.variant_id)]
        )
        result = analyzer.calculate_significance(
            control, treatment, primary, None, method, pairs or None
        )
        found.append(_Raw(dimension, value, variant.variant_id, control, treatment, result,
                          primary, "primary", primary in LOWER_IS_BETTER))  # fmt: skip
        for spec in specs:
            compared = declared.compare(
                spec, variant.variant_id, declared.estimate(control, spec),
                declared.estimate(treatment, spec), method.value, alpha,
                experiment.analysis.tuning_sample_size,
            )  # fmt: skip
            found.append(_Raw(dimension, value, variant.variant_id, control, treatment,
                              _as_significance(compared, method, compared.p_value < alpha),
                              spec.name, spec.kind, declared.lower_is_better(spec)))  # fmt: skip
    return found


def _as_significance(
    found: declared.MetricComparison, method: AnalysisMethod, significant: bool
) -> SignificanceResult:
    """A declared metric's comparison in the shape of a primary-metric result."""
    interval = found.interval or (math.nan, math.nan)
    return SignificanceResult(
        metric_name=found.metric_name,
        test=found.test,
        control_value=found.control.value if found.control else None,
        treatment_value=found.treatment.value if found.treatment else None,
        is_significant=significant,
        p_value=found.p_value,
        confidence_interval=interval,
        effect_size=found.relative_change,
        sample_size_adequate=found.difference is not None,
        recommended_action=RecommendedAction.CONTINUE,
        method=method.value,
    )


def _overall_verdicts(
    overall: ExperimentAnalysis, primary: str, method: AnalysisMethod
) -> dict[tuple[str, str], SignificanceResult]:
    """The overall result of every (metric, treatment) a segment test is judged against (the
    declared metrics' after their own correction)."""
    found = {(primary, t.variant_id): t.significance for t in overall.treatments}
    for item in overall.metrics:
        found[(item.metric_name, item.variant_id)] = _as_significance(
            item, method, item.significant
        )
    return found


def top_segments(tests: Sequence[SegmentTest], count: int = TOP_SEGMENTS) -> list[SegmentTest]:
    """The ``count`` tests to look at first: significant ones before the others, each group
    by absolute relative effect (then absolute difference), largest first."""

    def key(test: SegmentTest) -> tuple[bool, float, float]:
        relative = test.significance.effect_size
        size = abs(relative) if relative is not None and math.isfinite(relative) else 0.0
        return (not test.significant, -size, -abs(test.difference or 0.0))

    return sorted((t for t in tests if t.difference is not None), key=key)[:count]


def _p(result: SignificanceResult) -> float:
    value = result.p_value
    return 1.0 if value is None or math.isnan(value) else value


def _ran(result: SignificanceResult) -> bool:
    """Whether the test ran: both arms had data (a test without data is left out of the
    correction's family and keeps p = 1)."""
    return "no_data" not in (result.test, result.decision)


def _empty(variant_id: str) -> ExperimentMetrics:
    return ExperimentMetrics(variant_id)


def _totals(experiment: Experiment, phases: Sequence[PhaseMetrics]) -> dict[str, ExperimentMetrics]:
    found = {}
    for variant in experiment.variants:
        name = variant.variant_id
        items = [p.metrics[name] for p in phases if name in p.metrics] or [_empty(name)]
        found[name] = merge_metrics(name, items)
    return found


def _direction(result: SignificanceResult) -> int:
    """+1 when the treatment's value is higher, -1 lower, 0 equal or unknown."""
    if result.control_value is None or result.treatment_value is None:
        return 0
    delta = result.treatment_value - result.control_value
    return (delta > 0) - (delta < 0)


def _test(
    item: _Raw, adjusted: float, alpha: float, overall: SignificanceResult | None
) -> SegmentTest:
    result = item.result
    significant = adjusted < alpha
    difference = None
    if result.control_value is not None and result.treatment_value is not None:
        difference = result.treatment_value - result.control_value
    reason = direction = None
    if significant and difference:
        direction = _better(result, item.lower_is_better)
        reason = _disagreement(result, overall, direction)
    return SegmentTest(
        item.dimension, item.value, item.variant_id, item.control, item.treatment, result,
        adjusted, significant, difference, reason is not None, reason, item.metric, item.kind,
        direction,
    )  # fmt: skip


def _disagreement(
    result: SignificanceResult, overall: SignificanceResult | None, better: str
) -> str | None:
    """Why a significant segment result disagrees with the overall one (``None``: it agrees)."""
    if overall is None or not overall.is_significant:
        return f"significantly {better} here while the overall result is not significant"
    if _direction(overall) != _direction(result):
        return f"significantly {better} here, opposite to the overall result"
    return None


def _better(result: SignificanceResult, lower_is_better: bool) -> str:
    up = _direction(result) > 0
    return "better" if up != lower_is_better else "worse"
