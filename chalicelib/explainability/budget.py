"""Bounded work: every explanation is estimated before it runs and stopped before its deadline.

**The estimate.** A request is described by a :class:`Work` (method, inputs, features or tokens
or superpixels, samples / coalitions / evaluations, background rows, values per model row,
pixels) and :func:`estimate` turns it into seconds::

    seconds = model rows × seconds per model row + the method's own work

*Model rows* are the rows the model is asked to predict (LIME: inputs × ``num_samples``;
KernelSHAP: inputs × coalitions × background rows; Partition SHAP: inputs × evaluations, at most
``max_evals``). The method's own work is what shap and lime do around the model (building masked
rows, the weighted regressions, segmentation), counted in values and priced with the rates in
:data:`RATES`, which ``bench/bench_explain_budget.py`` measures and compares with real runs.
The model's seconds per call and per row are **measured on the model at hand** when it is
loaded (timed predicts on one row and on a small batch, :func:`measure_speed`); without the
model (the API function, which does not load scikit-learn) a floor is used, so the estimate is a
lower bound there.

**The limits** (:class:`Limits`, environment variables, seconds of estimated work):
``SYNAPSE_EXPLAIN_SYNC_SECONDS`` (default 10) is the most a request answered synchronously may
cost; above it the request becomes a job (202). ``SYNAPSE_EXPLAIN_JOB_SECONDS`` (default 240) is
the most a job may cost; above it the request is refused with 422 ``too_expensive``, the message
naming the estimate and the limit. ``SYNAPSE_EXPLAIN_SYNC_DEADLINE`` (default 20, below API
Gateway's 29 s) is when synchronous work is stopped and handed to a job if the estimate was
wrong.

**The deadline.** Work runs inside :func:`bounded`, which records a deadline (a job's: the
function's remaining time less :func:`safety_margin`). :func:`admit` refuses work whose estimate
does not fit; :func:`checkpoint` (called before every model call and between chunks of rows, see
:func:`guarded`) raises :class:`~chalicelib.explainability.errors.DeadlineExceeded` once the
deadline has passed, so a job records a clean failure instead of being killed by Lambda.

This module imports numpy only; shap, lime and scikit-learn are never imported here.
"""

from __future__ import annotations

import functools
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from chalicelib.explainability.errors import DeadlineExceeded, NeedsJob, TooExpensive

# Seconds kept between a job's deadline and its function's timeout to record the outcome (a
# tenth of the time left when that is shorter; see safety_margin).
SAFETY_SECONDS = 5.0
# The largest array an explanation may build (values; 8 bytes each as float64): 1 GiB.
MAX_VALUES = 1 << 27
# Values handed to the model in one call at most (rows × values per row); larger calls are split
# so that a deadline is checked between the parts and memory stays bounded.
CHUNK_VALUES = 1 << 21
# Seconds one model call is planned to take when work runs under a deadline: a call is split into
# parts of at most this long at the speed seen so far (the first part at most FIRST_CHUNK_ROWS
# rows, each next part at most CHUNK_GROWTH times the previous one), and the deadline is checked
# between parts, so work stops within about one part of its deadline.
CHUNK_SECONDS = 0.5
FIRST_CHUNK_ROWS = 256
CHUNK_GROWTH = 4
# Seconds the timing probe of a model may spend (it grows its batch from one row while it
# stays under this; see measure_speed).
PROBE_SECONDS = 0.25
# Rows explained per LinearSHAP call, and by the first TreeSHAP call of a batch under a deadline
# (the deadline is checked between calls); with interaction values, this many row × feature
# cells. Later TreeSHAP calls are sized by time (see next_part_rows).
SHAP_CHUNK = 256
TOKEN_PATTERN = re.compile(r"\W+")


# --- limits ------------------------------------------------------------------------------------
def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name) or str(default)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {text!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """How much estimated work a request may have (seconds); environment first, arguments override.

    Attributes:
        sync_seconds: Most a synchronous answer may cost (``SYNAPSE_EXPLAIN_SYNC_SECONDS``, 10).
        sync_deadline_seconds: When synchronous work is stopped and becomes a job
            (``SYNAPSE_EXPLAIN_SYNC_DEADLINE``, 20; keep it under API Gateway's 29 s).
        job_seconds: Most a job may cost; more is a 422 (``SYNAPSE_EXPLAIN_JOB_SECONDS``, 240;
            keep it under the explanation function's timeout less :data:`SAFETY_SECONDS`).
    """

    sync_seconds: float = field(
        default_factory=lambda: _seconds("SYNAPSE_EXPLAIN_SYNC_SECONDS", 10)
    )
    sync_deadline_seconds: float = field(
        default_factory=lambda: _seconds("SYNAPSE_EXPLAIN_SYNC_DEADLINE", 20)
    )
    job_seconds: float = field(default_factory=lambda: _seconds("SYNAPSE_EXPLAIN_JOB_SECONDS", 240))

    def __post_init__(self) -> None:
        if not self.sync_seconds <= self.sync_deadline_seconds:
            raise ValueError(
                "SYNAPSE_EXPLAIN_SYNC_SECONDS must not exceed SYNAPSE_EXPLAIN_SYNC_DEADLINE"
            )
        if not self.sync_seconds <= self.job_seconds:
            raise ValueError(
                "SYNAPSE_EXPLAIN_SYNC_SECONDS must not exceed SYNAPSE_EXPLAIN_JOB_SECONDS"
            )


# --- rates -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rates:
    """Seconds per unit of the explainers' own work, and the floor of a model's speed.

    Measured on a shared 2-vCPU VM with single-threaded BLAS (``bench/bench_explain_budget.py``
    compares the estimates with real runs); a model's own speed is measured on the model.

    Attributes:
        model_call: Floor of a model call (scikit-learn's input checks).
        model_row: Floor of a model row; ``model_value`` per value of the row.
        result_value: Building one contribution of a result (every method).
        kernel_input: KernelSHAP/exact per input; ``kernel_coalition`` per coalition
            (shap adds each one in Python); ``kernel_value`` per synthesized value
            (coalitions × background rows × features).
        tree_value: TreeSHAP floor per input and feature (the real cost is measured on the
            model by a pilot).
        linear_value: LinearSHAP per input and feature.
        lime_input: LIME per input (discretizer, regressions); ``lime_sample`` per tabular
            sample and ``lime_value`` per sample and feature.
        lime_text_sample: LIME text per sample; ``lime_text_token`` per sample and token.
        lime_image_value: LIME image per sample and RGB value (building the masked image);
            ``lime_image_segment`` per sample and superpixel (distances, regression).
        partition_eval: Partition SHAP on images per evaluation; ``partition_image_value`` per
            evaluation and pixel value; ``partition_first_call`` once per process (numba
            compiles shap's partition code on its first call), ``partition_cached_call``
            instead when numba's disk cache holds that code (loading it: 0.3 s in a fresh
            process, against 3.2–3.7 s compiling).
        partition_text_eval: Partition SHAP on text per evaluated mask (shap's queue and
            masked model); ``partition_text_token`` per mask and token (shap's Text masker
            joins the kept tokens in Python); ``partition_text_pair`` per pair of tokens (the
            Text masker's clustering, once per text). Measured with a constant model
            (``bench/bench_explain_budget.py``): 6.1e-5 s per mask at 20 tokens, 2.4e-4 at
            1,000; clustering 5.4–5.8e-7 s per pair from 50 to 1,000 tokens.
        segment_pixel: Segmentation per pixel, by algorithm.
    """

    model_call: float = 5e-5
    model_row: float = 0.0
    model_value: float = 2e-10
    result_value: float = 8e-6
    kernel_input: float = 1e-2
    kernel_coalition: float = 5e-5
    kernel_value: float = 2.5e-8
    tree_value: float = 1e-6
    linear_value: float = 1e-7
    lime_input: float = 2e-2
    lime_sample: float = 5e-6
    lime_value: float = 1e-6
    lime_text_sample: float = 6e-5
    lime_text_token: float = 5e-7
    lime_image_value: float = 1.3e-8
    lime_image_segment: float = 1e-7
    partition_eval: float = 5e-4
    partition_text_eval: float = 6e-5
    partition_text_token: float = 1.8e-7
    partition_text_pair: float = 5.6e-7
    partition_image_value: float = 1e-8
    partition_first_call: float = 3.0
    partition_cached_call: float = 0.4
    segment_pixel: dict[str, float] = field(
        default_factory=lambda: {"slic": 2e-6, "quickshift": 8e-6, "felzenszwalb": 5e-6}
    )


RATES = Rates()


# --- what a request asks for -------------------------------------------------------------------
METHODS = (
    "tree",
    "linear",
    "exact",
    "kernel",
    "model_specific",
    "lime_tabular",
    "lime_text",
    "lime_image",
    "partition_text",
    "partition_image",
)


@dataclass(frozen=True)
class Work:
    """One request's work, counted before it runs.

    Attributes:
        method: One of :data:`METHODS` (``model_specific``: tree or linear SHAP, not yet known
            which because the model is not loaded).
        inputs: Inputs explained (rows, texts, images).
        features: Tabular features, text tokens or image superpixels.
        samples: LIME ``num_samples``, Partition ``max_evals`` (kernel/exact: unused, the
            coalitions follow from ``features``).
        background_rows: Background rows used by KernelSHAP/exact SHAP.
        row_values: Values in one model row (features, characters of a text, pixels × channels).
        pixels: Pixels segmented per image.
        segmentation: Segmentation algorithm (images).
        interactions: TreeSHAP interaction values.
        outputs: Outputs TreeSHAP explains per row (a classifier's classes, 2 for a binary
            one; 1 for a regressor or when unknown).
        hierarchy_masks: Partition SHAP on text: the masks that exhaust the text's own
            hierarchy (:func:`hierarchy_masks`; 0: unknown, counted as a balanced one's, the
            fewest any hierarchy of that many tokens takes).
    """

    method: str
    inputs: int = 1
    features: int = 1
    samples: int = 0
    background_rows: int = 0
    row_values: int = 1
    pixels: int = 0
    segmentation: str = "slic"
    interactions: bool = False
    outputs: int = 1
    hierarchy_masks: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}")


@dataclass(frozen=True)
class ModelSpeed:
    """What the model costs: seconds per call plus seconds per row (:func:`measure_speed`)."""

    call_seconds: float
    row_seconds: float


@dataclass(frozen=True)
class Estimate:
    """What a request will cost.

    Attributes:
        seconds: Estimated seconds of computation.
        model_calls: Calls to the model.
        model_rows: Rows the model will be asked to predict.
        row_values: Values per model row.
        model_row_seconds: Seconds per model row used (measured, or the floor).
        model_call_seconds: Seconds per model call used (measured, or the floor).
        measured: Whether the model's speed was measured on the model.
        peak_values: Values in the largest array the method builds at once (KernelSHAP's
            synthesized rows, LIME's sample matrix, the superpixel distances); bounded by
            :data:`MAX_VALUES`.
        summary: The counts in words, for messages.
    """

    seconds: float
    model_calls: int
    model_rows: int
    row_values: int
    model_row_seconds: float
    model_call_seconds: float
    measured: bool
    peak_values: int
    summary: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (error details, the Lambda boundary)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        """Rebuilds an estimate from :meth:`to_dict` output."""
        return cls(
            seconds=float(data["seconds"]),
            model_calls=int(data["model_calls"]),
            model_rows=int(data["model_rows"]),
            row_values=int(data["row_values"]),
            model_row_seconds=float(data["model_row_seconds"]),
            model_call_seconds=float(data["model_call_seconds"]),
            measured=bool(data["measured"]),
            peak_values=int(data["peak_values"]),
            summary=str(data["summary"]),
        )


def combine(estimates: Sequence[Estimate]) -> Estimate:
    """The cost of several pieces of work done one after the other (at least one)."""
    first = estimates[0]
    if len(estimates) == 1:
        return first
    return Estimate(
        seconds=sum(e.seconds for e in estimates),
        model_calls=sum(e.model_calls for e in estimates),
        model_rows=sum(e.model_rows for e in estimates),
        row_values=max(e.row_values for e in estimates),
        model_row_seconds=max(e.model_row_seconds for e in estimates),
        model_call_seconds=max(e.model_call_seconds for e in estimates),
        measured=all(e.measured for e in estimates),
        peak_values=max(e.peak_values for e in estimates),
        summary=f"{len(estimates):,} inputs, the first {first.summary}",
    )


def kernel_coalitions(features: int) -> int:
    """Coalitions KernelSHAP evaluates per input with shap's ``auto`` budget (2M + 2048, or every
    one of the 2^M − 2 when that is fewer)."""
    auto = 2 * features + 2048
    if features <= 30:
        return max(1, min(auto, 2**features - 2))
    return auto


def exact_coalitions(features: int) -> int:
    """Coalitions exact SHAP evaluates per input (all 2^M − 2)."""
    return max(1, 2 ** min(features, 62) - 2)


def partition_evaluations(features: int, max_evals: int) -> int:
    """Model rows the Partition explainer evaluates: at most ``max_evals``, and about 1.25·M²
    when the hierarchy is exhausted before that (measured: 84 rows for M=10, 3,052 for M=50)."""
    return max(1, min(max_evals, math.ceil(1.25 * features * features) + 2 * features + 4))


# Masks shap's Partition explainer sends per model call on text: its Text masker's default batch
# size is 5, and masks are added in pairs while a batch holds fewer.
TEXT_MASKS_PER_CALL = 6
# Calls (of one row each) the text engine makes besides the Partition explainer's batches: the
# predicted class, shap's base value (every token masked) and full value, and the explained
# prediction. A text of one token makes 2 calls of 3 rows (the class, then masked and whole).
TEXT_EXTRA_CALLS = 4


def balanced_hierarchy_masks(leaves: int) -> int:
    """Masks shap's Partition explainer evaluates to exhaust a balanced hierarchy of ``leaves``:
    the fewest of any hierarchy of that many leaves (each node costs 2 masks per visit and is
    visited twice as often as its parent, and that cost is convex in the leaves)."""
    visits = _balanced_visits(max(1, leaves))
    return 2 * visits


@functools.lru_cache(maxsize=4096)
def _balanced_visits(leaves: int) -> int:
    if leaves < 2:
        return 0
    half = leaves // 2
    return 1 + 2 * _balanced_visits(half) + 2 * _balanced_visits(leaves - half)


def hierarchy_masks(linkage: np.ndarray) -> int:
    """Masks shap's Partition explainer evaluates to exhaust a hierarchy (a linkage matrix as
    shap's maskers give it: children in the first two columns, a negative distance in the third
    marks a node shap does not split). A split costs 2 masks and reaches each child twice, once
    with its sibling hidden and once shown, so a node at depth d is split 2^d times."""
    leaves = len(linkage) + 1
    total = 0
    stack = [(2 * leaves - 2, 1)]
    while stack:
        node, visits = stack.pop()
        if node < leaves or (linkage.shape[1] >= 3 and linkage[node - leaves, 2] < 0):
            continue
        total += 2 * visits
        left, right = (int(v) for v in linkage[node - leaves, :2])
        stack += [(left, 2 * visits), (right, 2 * visits)]
    return total


def partition_text_masks(tokens: int, max_evals: int, hierarchy: int = 0) -> int:
    """Masks shap's Partition explainer evaluates on a text of ``tokens`` tokens: those that
    exhaust its hierarchy (``hierarchy``; 0: a balanced one's), or the ``max_evals`` − 2 it is
    given after the base and full values, rounded up to a pair (0 for one token: no hierarchy)."""
    if tokens < 2:
        return 0
    cap = 2 * math.ceil((max_evals - 2) / 2)
    return max(0, min(hierarchy or balanced_hierarchy_masks(tokens), cap))


def image_batch_size(num_samples: int, values_per_image: int) -> int:
    """Perturbed images LIME builds per model call: up to 500, and at most ``CHUNK_VALUES``
    values (a batch of 500 RGB 512×512 images would be 3 GB)."""
    return max(1, min(num_samples, 500, CHUNK_VALUES // max(1, values_per_image)))


def _calls(rows: int, values: int) -> int:
    """Model calls for ``rows`` rows of ``values`` values (:func:`guarded` splits large calls)."""
    return max(1, math.ceil(rows * max(1, values) / CHUNK_VALUES))


@dataclass(frozen=True)
class _Count:
    calls: int
    rows: int
    own_seconds: float
    peak_values: int


def _count(work: Work, rates: Rates, speed: ModelSpeed, left: float | None) -> _Count:
    """Model calls and rows, the seconds of the method's own work and its largest array
    (TreeSHAP's calls as it splits the rows at ``speed`` with ``left`` seconds to go)."""
    n, m, samples = work.inputs, work.features, work.samples
    method, width = work.method, work.row_values
    results = n * m * rates.result_value
    if method in ("kernel", "exact"):
        coalitions = kernel_coalitions(m) if method == "kernel" else exact_coalitions(m)
        synthesized = coalitions * work.background_rows
        own = n * (
            rates.kernel_input
            + coalitions * rates.kernel_coalition
            + synthesized * m * rates.kernel_value
        )
        # Per input: the coalitions over the background, and the input itself; once: the
        # background (the explainer's expected value).
        calls = n * (_calls(synthesized, width) + 1) + 1
        rows = n * (synthesized + 1) + work.background_rows
        return _Count(calls, rows, own + results, synthesized * m)
    if method in ("tree", "model_specific", "linear"):
        rate = rates.tree_value if method == "tree" else rates.linear_value
        cells = n * m * (m if work.interactions else 1)
        if method == "linear":  # LinearSHAP: SHAP_CHUNK rows per call
            return _Count(math.ceil(n / SHAP_CHUNK), n, cells * rate + results, cells)
        # TreeSHAP (or, without the model, the fewer calls of tree and linear)
        return _Count(_tree_calls(work, speed, left), n, cells * rate + results, cells)
    if method == "lime_tabular":
        per_input = rates.lime_input + samples * (rates.lime_sample + rates.lime_value * m)
        calls = n * _calls(samples, width)
        return _Count(calls, n * samples, n * per_input + results, samples * m)
    if method == "lime_text":
        per_sample = rates.lime_text_sample + rates.lime_text_token * m
        own = n * (rates.lime_input + samples * per_sample) + results
        return _Count(n * _calls(samples, width), n * samples, own, samples * m)
    segmenting = work.pixels * rates.segment_pixel.get(work.segmentation, max_rate(rates))
    if method == "lime_image":
        # lime works on the RGB view: three values per pixel whatever the model sees.
        rgb = 3 * work.pixels
        per_sample = rates.lime_image_value * rgb + rates.lime_image_segment * m
        own = n * (rates.lime_input + segmenting + samples * per_sample) + results
        calls = n * math.ceil(samples / image_batch_size(samples, rgb))
        return _Count(calls, n * samples, own, samples * m)
    if method == "partition_text":
        return _partition_text(work, rates, results)
    evaluations = partition_evaluations(m, samples)
    calls = n * (evaluations // 10 + 3)
    per_eval = rates.partition_eval + rates.partition_image_value * width
    own = n * (segmenting + evaluations * per_eval) + results
    # scipy's Ward linkage of the superpixels holds m·(m−1)/2 distances.
    return _Count(calls, n * evaluations, own, max(evaluations * m, m * (m - 1) // 2))


def _partition_text(work: Work, rates: Rates, results: float) -> _Count:
    """Text SHAP: the masks shap evaluates (:func:`partition_text_masks`) in its calls of
    :data:`TEXT_MASKS_PER_CALL` (the root's split alone first), the engine's
    :data:`TEXT_EXTRA_CALLS`; own work: the clustering, and per mask its queue and masking."""
    n, m = work.inputs, work.features
    masks = partition_text_masks(m, work.samples, work.hierarchy_masks)
    if masks:
        calls = 1 + math.ceil((masks - 2) / TEXT_MASKS_PER_CALL) + TEXT_EXTRA_CALLS
        rows = masks + TEXT_EXTRA_CALLS
    else:
        calls, rows = 2, 3
    per_mask = rates.partition_text_eval + rates.partition_text_token * m
    own = n * (rates.partition_text_pair * m * m + masks * per_mask) + results
    return _Count(n * calls, n * rows, own, max(masks * m, m * m))


def _tree_calls(work: Work, speed: ModelSpeed, left: float | None) -> int:
    """The shap calls TreeSHAP makes for ``work`` (see :func:`planned_parts`): SHAP values in
    calls of at most :data:`CHUNK_VALUES` result values (features × outputs per row), the first
    one under a deadline of :data:`SHAP_CHUNK` rows; with interaction values, also the
    interaction calls (features² × outputs per row, the first one of :data:`SHAP_CHUNK` row ×
    feature cells)."""
    m, k = max(1, work.features), max(1, work.outputs)
    calls = len(planned_parts(work.inputs, SHAP_CHUNK, part_cap(m * k), speed, left))
    if work.interactions:
        first = max(1, SHAP_CHUNK // m)
        calls += len(planned_parts(work.inputs, first, part_cap(m * m * k), speed, left))
    return calls


def max_rate(rates: Rates) -> float:
    """The slowest segmentation rate (for an algorithm without its own)."""
    return max(rates.segment_pixel.values())


def floor_speed(row_values: int, rates: Rates = RATES) -> ModelSpeed:
    """The cheapest a model can be (a linear model): the estimate's floor."""
    return ModelSpeed(rates.model_call, rates.model_row + rates.model_value * row_values)


def estimate(work: Work, speed: ModelSpeed | None = None, rates: Rates = RATES) -> Estimate:
    """The cost of ``work`` (see the module docstring).

    Args:
        work: What the request asks for.
        speed: The model's measured speed (``None``: the floor). For TreeSHAP a "model row"
            is one input explained, measured by a pilot on a few rows; its calls are counted
            as the engine splits the rows under the running request's deadline, if any (inside
            :func:`counted_under`, under that block's deadline instead).
        rates: The method rates.
    """
    used = speed if speed is not None else floor_speed(work.row_values, rates)
    planned = _COUNTED_LEFT.get()
    counted = _count(work, rates, used, seconds_left() if planned is None else planned)
    model = counted.calls * used.call_seconds + counted.rows * used.row_seconds
    return Estimate(
        seconds=counted.own_seconds + model,
        model_calls=counted.calls,
        model_rows=counted.rows,
        row_values=work.row_values,
        model_row_seconds=used.row_seconds,
        model_call_seconds=used.call_seconds,
        measured=speed is not None,
        # A model call holds at least one row's values (its intermediate arrays when measured).
        peak_values=max(counted.peak_values, work.row_values),
        summary=describe(work, counted.rows),
    )


_COUNTED_LEFT: ContextVar[float | None] = ContextVar("explanation_counted_left", default=None)


@contextmanager
def counted_under(seconds: float) -> Iterator[None]:
    """Estimates made in the block count TreeSHAP's calls as work with ``seconds`` before its
    deadline would make them (a job's, for a request estimated before it is submitted as one),
    whatever the running request's own deadline; the work of estimating is not stopped by it."""
    token = _COUNTED_LEFT.set(seconds)
    try:
        yield
    finally:
        _COUNTED_LEFT.reset(token)


def describe(work: Work, rows: int) -> str:
    """The counts behind an estimate, in words."""
    unit = {
        "lime_text": "tokens",
        "partition_text": "tokens",
        "lime_image": "superpixels",
        "partition_image": "superpixels",
    }.get(work.method, "features")
    parts = [f"{work.method}: {work.inputs:,} input(s) of {work.features:,} {unit}"]
    if work.method in ("kernel", "exact"):
        coalitions = (
            kernel_coalitions(work.features)
            if work.method == "kernel"
            else exact_coalitions(work.features)
        )
        parts.append(f"{coalitions:,} coalitions × {work.background_rows:,} background rows each")
    elif work.method.startswith("lime"):
        parts.append(f"{work.samples:,} samples each")
    elif work.method.startswith("partition"):
        parts.append(f"max_evals {work.samples:,}")
    if work.pixels:
        parts.append(f"{work.pixels:,} pixels ({work.segmentation})")
    parts.append(f"{rows:,} model rows of {work.row_values:,} values")
    return ", ".join(parts)


# --- counting inputs without loading anything ---------------------------------------------------
def text_counts(text: Any) -> tuple[int, int]:
    """(tokens, characters) of a text input as the explainers split it (``\\W+``)."""
    if not isinstance(text, str):
        return 1, 1
    tokens = [t for t in TOKEN_PATTERN.split(text) if t]
    return max(1, len(tokens)), max(1, len(text))


def image_counts(image: Any) -> tuple[int, int]:
    """(pixels, values) of an image input (H×W or H×W×3 nested lists) without converting it."""
    if not isinstance(image, Sequence) or not image or isinstance(image, str):
        return 1, 1
    first = image[0]
    width = len(first) if isinstance(first, Sequence) and not isinstance(first, str) else 1
    pixel = first[0] if width and isinstance(first, Sequence) and len(first) else None
    channels = 3 if isinstance(pixel, Sequence) and not isinstance(pixel, str) else 1
    pixels = max(1, len(image) * width)
    return pixels, pixels * channels


# --- measuring the model ----------------------------------------------------------------------
def measure_speed(
    predict: Callable[[Any], Any],
    rows: Any,
    repeat: int = 3,
    clock: Callable[[], float] = time.perf_counter,
    budget: float = PROBE_SECONDS,
) -> ModelSpeed:
    """The model's seconds per call and per row, measured without unbounded work.

    One row is timed first; then batches of 4, 16, 64, ... of ``rows`` while the probe has
    spent less than ``budget`` seconds (so a slow model is timed on few rows, never on the whole
    batch); then, if time is left, one row and the largest batch ``repeat`` − 1 more times (the
    best of each counts). The deadline of the running request is checked before every call.
    When even one row took longer than ``budget``, that row's time is the per-row figure.

    Args:
        predict: The model call the explainer will make.
        rows: Rows shaped like the explainer's (the rows it will send, when known).
        repeat: Timed calls of each size at most.
        clock: Seconds now.
        budget: Seconds the probe may spend (about; one batch more at most).
    """
    count = max(1, len(rows))
    one = _timed(predict, rows[:1], clock)
    spent, size, many = one, 1, one
    while size < count and spent < budget:
        size = min(count, size * CHUNK_GROWTH)
        many = _timed(predict, rows[:size], clock)
        spent += many
    for _ in range(max(1, repeat) - 1):
        if spent >= budget:
            break
        again_one = _timed(predict, rows[:1], clock)
        again_many = _timed(predict, rows[:size], clock) if size > 1 else again_one
        one, many = min(one, again_one), min(many, again_many)
        spent += again_one + again_many
    if size == 1:
        return ModelSpeed(0.0, one)
    # At least a quarter of the batch's mean per row: timer noise can make both calls equal.
    per_row = max((many - one) / (size - 1), many / size / 4)
    return ModelSpeed(max(0.0, one - per_row), per_row)


def measure_rows(
    predict: Callable[[Any], Any],
    rows: Any,
    reference: Any,
    clock: Callable[[], float] = time.perf_counter,
    budget: float = PROBE_SECONDS,
) -> float:
    """Seconds per row that ``rows`` cost beyond as many ``reference`` rows (whose speed is
    known): one row of ``rows`` is timed first (if it alone takes ``budget``, its time is the
    answer), then ``reference`` and ``rows`` alternately, twice, or three times while under a
    fifth of ``budget`` (this runs on every request), the best time of each counting: a pause of the
    process (load, a context switch) would otherwise read as slow rows. ``rows`` taking up to
    twice the reference's time is counted as noise (0): a model only that much slower on the
    request's rows is still stopped by the deadline checks between parts of its calls.

    Args:
        predict: The model call.
        rows: The rows to time (the first one alone first).
        reference: As many rows of known speed (the model's background).
        clock: Seconds now.
        budget: Seconds the one row may take for the rest to be timed.
    """
    one = _timed(predict, rows[:1], clock)
    if one >= budget or len(rows) <= 1:
        return one
    seen = known = math.inf
    spent = one
    for turn in range(3):
        began = clock()
        known = min(known, _timed(predict, reference, clock))
        seen = min(seen, _timed(predict, rows, clock))
        spent += clock() - began
        if turn and spent > budget / 5:
            break
    if seen <= 2 * known:
        return 0.0
    return (seen - known) / len(rows)


def _timed(predict: Callable[[Any], Any], rows: Any, clock: Callable[[], float]) -> float:
    """Seconds of one ``predict(rows)``, after checking the running request's deadline."""
    checkpoint()
    started = clock()
    predict(rows)
    return clock() - started


# --- the allowance of the running request -------------------------------------------------------
@dataclass(frozen=True)
class Allowance:
    """What the running request may still spend.

    Attributes:
        mode: ``sync`` (an API answer: over ``limit_seconds`` becomes a job) or ``job``.
        deadline: ``time.monotonic()`` value at which work stops.
        limit_seconds: Most the estimate may be (sync: the sync limit; job: the job limit, or the
            time left before the deadline if less).
        job_seconds: Above this the request is refused (422) rather than made a job.
        row_seconds: Seconds per model row of the admitted estimate (0: none admitted yet); the
            first part of a :func:`guarded` call is sized with it.
        row_values: Values one model row holds inside the model at most (its measured
            intermediate arrays, 0: unknown); :func:`guarded` sizes its parts with it.
    """

    mode: str
    deadline: float
    limit_seconds: float
    job_seconds: float
    row_seconds: float = 0.0
    row_values: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The allowance for another process (relative seconds: clocks differ; ``None``: no
        deadline, since JSON has no infinity)."""
        left = max(0.0, self.deadline - time.monotonic())
        return {
            "mode": self.mode,
            "seconds_left": left if math.isfinite(left) else None,
            "limit_seconds": self.limit_seconds,
            "job_seconds": self.job_seconds,
            "row_seconds": self.row_seconds,
            "row_values": self.row_values,
        }

    @classmethod
    def lasting(
        cls, mode: str, seconds: float, limit_seconds: float, job_seconds: float
    ) -> Allowance:
        """An allowance whose deadline is ``seconds`` from now (negative: already passed)."""
        return cls(mode, time.monotonic() + seconds, limit_seconds, job_seconds)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Allowance:
        """Rebuilds an allowance sent by :meth:`to_dict`."""
        left = data["seconds_left"]
        return cls(
            mode=str(data["mode"]),
            deadline=time.monotonic() + (math.inf if left is None else float(left)),
            limit_seconds=float(data["limit_seconds"]),
            job_seconds=float(data["job_seconds"]),
            row_seconds=float(data.get("row_seconds") or 0.0),
            row_values=int(data.get("row_values") or 0),
        )


_ALLOWANCE: ContextVar[Allowance | None] = ContextVar("explanation_allowance", default=None)


def sync_allowance(limits: Limits | None = None) -> Allowance:
    """The allowance of a synchronous answer."""
    limits = limits or Limits()
    return Allowance(
        "sync",
        time.monotonic() + limits.sync_deadline_seconds,
        limits.sync_seconds,
        limits.job_seconds,
    )


def job_allowance(seconds_available: float | None, limits: Limits | None = None) -> Allowance:
    """The allowance of a job whose function has ``seconds_available`` left (``None``: no
    function timeout, only the job limit)."""
    limits = limits or Limits()
    budget = limits.job_seconds
    if seconds_available is not None:
        budget = min(budget, max(0.0, seconds_available - safety_margin(seconds_available)))
    return Allowance("job", time.monotonic() + budget, budget, limits.job_seconds)


def safety_margin(seconds_available: float) -> float:
    """Time kept to record a job's outcome before its function's timeout:
    :data:`SAFETY_SECONDS`, or a tenth of the time left when that is less."""
    return min(SAFETY_SECONDS, 0.1 * max(0.0, seconds_available))


@contextmanager
def bounded(allowance: Allowance | None) -> Iterator[Allowance | None]:
    """Runs the block under ``allowance`` (``None``: unbounded, e.g. library use)."""
    token = _ALLOWANCE.set(allowance)
    try:
        yield allowance
    finally:
        _ALLOWANCE.reset(token)


def current() -> Allowance | None:
    """The allowance of the running request, if any."""
    return _ALLOWANCE.get()


_PENDING: ContextVar[Callable[[], None] | None] = ContextVar(
    "explanation_pending_admission", default=None
)


@contextmanager
def on_compute(check: Callable[[], None]) -> Iterator[None]:
    """Runs ``check`` (an :func:`admit` of the request's estimate) when the block computes
    something, i.e. at :func:`before_compute` after a cache miss, and at most once."""
    token = _PENDING.set(check)
    try:
        yield
    finally:
        _PENDING.reset(token)


def before_compute() -> None:
    """Called by the engines after a cache miss, before computing: the pending check runs."""
    check = _PENDING.get()
    if check is not None:
        _PENDING.set(None)
        check()


def refuse_if_over_job(cost: Estimate, job_seconds: float) -> None:
    """Raises :class:`TooExpensive` when no job could do ``cost``: over the job limit, or an
    array over :data:`MAX_VALUES`."""
    if cost.peak_values > MAX_VALUES:
        raise TooExpensive.too_large(cost, MAX_VALUES)
    if cost.seconds > job_seconds:
        raise TooExpensive.over(cost, job_seconds, "SYNAPSE_EXPLAIN_JOB_SECONDS")


def decide(cost: Estimate, limits: Limits) -> str:
    """``sync`` or ``job`` for a request of cost ``cost`` (the API's choice).

    Raises:
        TooExpensive: Over what a job may do.
    """
    refuse_if_over_job(cost, limits.job_seconds)
    return "job" if cost.seconds > limits.sync_seconds else "sync"


def admit(cost: Estimate) -> None:
    """Lets work of cost ``cost`` start under the running allowance, or refuses it.

    Raises:
        TooExpensive: Over what a job may do (422); in a job, over the time it has left.
        NeedsJob: A synchronous request over the synchronous limit (the service submits a job).
    """
    allowance = _ALLOWANCE.get()
    if allowance is None:
        return
    refuse_if_over_job(cost, allowance.job_seconds)
    left = max(0.0, min(allowance.limit_seconds, allowance.deadline - time.monotonic()))
    if cost.seconds <= left:
        _ALLOWANCE.set(
            replace(
                allowance,
                row_seconds=max(allowance.row_seconds, cost.model_row_seconds),
                row_values=max(allowance.row_values, cost.row_values),
            )
        )
        return
    if allowance.mode == "sync":
        raise NeedsJob(cost)
    raise TooExpensive.over(cost, left, "the time this job has left")


def checkpoint() -> None:
    """Raises :class:`DeadlineExceeded` once the running request's deadline has passed."""
    allowance = _ALLOWANCE.get()
    if allowance is not None and time.monotonic() > allowance.deadline:
        raise DeadlineExceeded.now(allowance.mode)


def guarded(predict: Callable[[Any], Any], chunk_values: int = CHUNK_VALUES) -> Callable:
    """``predict`` checking the deadline before each call and splitting large calls.

    Rows are independent, so splitting a call into consecutive parts gives the same outputs.
    A part holds at most ``chunk_values`` values (counting a row as the larger of its width and
    the model's measured intermediate values per row, :attr:`Allowance.row_values`). Under a
    deadline, parts are also sized by time: the first one at most :data:`FIRST_CHUNK_ROWS` rows
    and :data:`CHUNK_SECONDS` at the admitted speed, each next one :data:`CHUNK_SECONDS` at the
    speed the previous part showed (growing at most :data:`CHUNK_GROWTH` times), and the
    deadline is checked before each part.
    """

    def call(data: Any) -> Any:
        checkpoint()
        allowance = current()
        count = len(data)
        hinted = 0 if allowance is None else allowance.row_values
        step = _chunk_rows(data, chunk_values, hinted)
        if allowance is None or not math.isfinite(allowance.deadline):
            return _in_parts(predict, data, [step] * -(-count // step))
        rows = min(step, FIRST_CHUNK_ROWS, _rows_in(CHUNK_SECONDS, allowance.row_seconds))
        if count <= rows:
            return predict(data)
        parts = []
        start = 0
        while start < count:
            checkpoint()
            began = time.monotonic()
            parts.append(np.asarray(predict(data[start : start + rows])))
            spent = time.monotonic() - began
            start += rows
            by_time = _rows_in(CHUNK_SECONDS, spent / rows)
            rows = max(1, min(step, rows * CHUNK_GROWTH, by_time))
        return np.concatenate(parts, axis=0)

    return call


def next_part_rows(previous: int, spent: float, cap: int) -> int:
    """Rows of the next part of a computation split by rows, after a part of ``previous`` rows
    took ``spent`` seconds, under the running request's deadline (:func:`part_rows`)."""
    return part_rows(previous, spent, cap, seconds_left())


def seconds_left() -> float | None:
    """Seconds before the running request's deadline (``None``: no deadline)."""
    allowance = current()
    if allowance is None or not math.isfinite(allowance.deadline):
        return None
    return allowance.deadline - time.monotonic()


def part_cap(row_values: int) -> int:
    """Rows in one part at most: :data:`CHUNK_VALUES` result values of ``row_values`` each."""
    return max(1, CHUNK_VALUES // max(1, row_values))


def first_part_rows(first: int, cap: int, left: float | None) -> int:
    """Rows of the first part: ``cap`` without a deadline, at most ``first`` under one."""
    return cap if left is None else max(1, min(cap, first))


def part_rows(previous: int, spent: float, cap: int, left: float | None) -> int:
    """Rows of the next part after a part of ``previous`` rows took ``spent`` seconds, with
    ``left`` seconds before the deadline.

    Without a deadline: ``cap`` (the memory bound). Under one: as many rows as take the larger
    of :data:`CHUNK_SECONDS` and a quarter of the time left at the speed the previous part
    showed (a part planned to end well before the deadline needs no checkpoint inside it; near
    the deadline parts shrink to :data:`CHUNK_SECONDS`), growing at most :data:`CHUNK_GROWTH`
    times, at least one row and at most ``cap``.
    """
    if left is None:
        return max(1, cap)
    seconds = max(CHUNK_SECONDS, left / 4)
    by_time = _rows_in(seconds, spent / max(1, previous))
    return max(1, min(cap, previous * CHUNK_GROWTH, by_time))


def planned_parts(
    rows: int, first: int, cap: int, speed: ModelSpeed, left: float | None
) -> list[int]:
    """The rows of each call a computation split by rows makes (TreeSHAP's
    :func:`~chalicelib.explainability.explainers._common.in_timed_chunks`) over ``rows`` rows,
    sized as it sizes them, when a call of ``k`` rows takes ``call_seconds + k × row_seconds``
    and ``left`` seconds remain before the deadline (``None``: no deadline)."""
    size = first_part_rows(first, cap, left)
    parts: list[int] = []
    done = 0
    while done < rows:
        parts.append(min(size, rows - done))
        done += size
        spent = speed.call_seconds + size * speed.row_seconds
        left = None if left is None else left - spent
        size = part_rows(size, spent, cap, left)
    return parts


def _in_parts(predict: Callable[[Any], Any], data: Any, sizes: list[int]) -> Any:
    """``predict`` over consecutive parts of ``data`` of ``sizes`` rows (checking the deadline
    before each part); one call when there is one part."""
    if len(sizes) <= 1:
        return predict(data)
    parts = []
    start = 0
    for size in sizes:
        checkpoint()
        parts.append(np.asarray(predict(data[start : start + size])))
        start += size
    return np.concatenate(parts, axis=0)


def _rows_in(seconds: float, row_seconds: float) -> int:
    """Rows that take about ``seconds`` at ``row_seconds`` each (a power of two, at least 1,
    so that parts, and so outputs, stay the same from run to run unless the speed changes a
    lot); no limit for an unknown or zero speed."""
    if not row_seconds > 0:
        return 1 << 62
    rows = int(seconds / row_seconds)
    return 1 << max(0, rows.bit_length() - 1)


def _chunk_rows(data: Any, chunk_values: int, row_values: int = 0) -> int:
    """Rows per call so that a call holds about ``chunk_values`` values (text: characters;
    ``row_values``: the model's own values per row when larger)."""
    if isinstance(data, np.ndarray) and data.ndim >= 2:
        width = int(np.prod(data.shape[1:])) or 1
    elif len(data) and isinstance(data[0], str):
        width = max(1, max(len(text) for text in data[:16]))
    else:
        width = 1
    return max(1, chunk_values // max(width, row_values))
