"""What the timing probe feeds a model, and how much memory one of its rows takes inside it.

The planner times a model on the rows its explainer will really send, not on rows the model's
author chose: a model can be fast on its background and slow near the request's input (a
nearest-neighbour tree that cannot prune at its centre). :func:`sample_rows` builds such rows
from the request's inputs and the background, seeded by the inputs, so the same request is
always timed on the same rows.

A model can also make each row much larger than it is: ``PolynomialFeatures(degree=10)`` turns
12 values into 646,646. :func:`declared_row_values` reads such widths from the fitted model
without running it (so even one row is never built when it alone is over the limit), and
:func:`measured_row_values` measures the memory one row takes during a call (Python's
``tracemalloc``, which numpy reports its arrays to), so that the estimate counts it and model
calls are split by it.

This module imports numpy only; the model is whatever scikit-learn object was loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from chalicelib.explainability.budget import CHUNK_VALUES, checkpoint

# Rows of the request-shaped sample the model is timed on (the first is the input itself).
SAMPLE_ROWS = 64
# Rows of the memory probe at most (the second measurement; the first is one row).
MEMORY_ROWS = 4
# Objects visited when looking for declared widths (a model is a tree of a few hundred).
MAX_VISITED = 100_000
_TRACE_LOCK = threading.Lock()


def sample_rows(
    method: str, inputs: np.ndarray, background: np.ndarray | None, rows: int = SAMPLE_ROWS
) -> np.ndarray:
    """Rows like the ones the explainer sends, the first input first.

    * KernelSHAP / exact SHAP: background rows with a random subset of the features taken from
      an input (the coalitions shap synthesizes), and the input itself.
    * LIME: every feature drawn independently from the background's values of that feature
      (LIME samples each feature from the training distribution), and the input itself.
    * Otherwise (tree, linear: the model sees the inputs): the inputs.

    Args:
        method: ``kernel``, ``exact``, ``lime`` or another method name.
        inputs: The request's rows (at least one).
        background: The model's background rows (``None``: only the inputs are known).
        rows: Rows wanted.
    """
    if background is None or len(background) == 0 or method not in ("kernel", "exact", "lime"):
        reps = -(-rows // len(inputs))
        return np.tile(inputs, (reps, 1))[:rows]
    rng = np.random.default_rng(_seed(inputs))
    count, width = rows - 1, inputs.shape[1]
    picks = rng.integers(0, len(background), size=(count, width))
    if method == "lime":
        drawn = background[picks, np.arange(width)]
    else:
        drawn = background[picks[:, 0]].copy()
        which = rng.integers(0, len(inputs), size=count)
        mask = rng.random((count, width)) < 0.5
        drawn[mask] = inputs[which][mask]
    return np.concatenate([inputs[:1], drawn.astype(float, copy=False)])


def _seed(inputs: np.ndarray) -> int:
    digest = hashlib.sha256(np.ascontiguousarray(inputs, dtype=np.float64).tobytes()).digest()
    return int.from_bytes(digest[:8], "little")


def declared_row_values(estimator: Any) -> int:
    """The most values one input row becomes inside ``estimator``, as far as its fitted
    attributes tell without running it (0 when nothing expands rows).

    ``PolynomialFeatures`` allocates its output from its fitted ``_n_out_full`` and fills it
    combination by combination; its width is the largest of that, ``n_output_features_`` and
    the count of monomials of its fitted degrees over ``n_features_in_`` inputs (all read from
    the file, so the largest is taken). ``SplineTransformer`` declares ``n_features_out_``.
    """
    widest = 0
    for obj in _objects(estimator):
        kind = type(obj).__name__
        if kind == "PolynomialFeatures" and type(obj).__module__.startswith("sklearn."):
            widest = max(widest, _polynomial_width(obj))
        elif kind == "SplineTransformer" and type(obj).__module__.startswith("sklearn."):
            widest = max(widest, _int(getattr(obj, "n_features_out_", 0)))
    return widest


def declared_text_values(estimator: Any, text: str) -> int:
    """The most values (8 bytes each) the text vectorizers in ``estimator`` build from ``text``
    (0 without one): every n-gram of ``ngram_range`` over the text's characters (``char``,
    ``char_wb``) or words (``word``, counted as the API splits them), as a Python string of its
    characters (about 6 values of object overhead plus one per 8 characters).

    ``CountVectorizer(analyzer="char", ngram_range=(1, 20000))`` on a 20,000-character text
    would build 200 million strings, more than an explanation may hold, from one input.
    """
    from chalicelib.explainability.budget import text_counts

    widest = 0
    for obj in _objects(estimator):
        ngrams = getattr(obj, "ngram_range", None)
        analyzer = getattr(obj, "analyzer", None)
        if not isinstance(analyzer, str) or not isinstance(ngrams, tuple) or len(ngrams) != 2:
            continue
        words = text_counts(text)[0]
        units = words if analyzer == "word" else len(text) + 2 * words
        low, high = max(1, _int(ngrams[0])), min(_int(ngrams[1]), max(1, units))
        strings = characters = 0
        for n in range(low, high + 1):
            count = units - n + 1
            strings += count
            characters += count * n
        widest = max(widest, 6 * strings + characters // 8)
    return widest


def _polynomial_width(poly: Any) -> int:
    found = [_int(getattr(poly, name, 0)) for name in ("_n_out_full", "n_output_features_")]
    with contextlib.suppress(AttributeError, TypeError, ValueError, OverflowError):
        found.append(
            int(
                type(poly)._num_combinations(
                    n_features=_int(poly.n_features_in_),
                    min_degree=0,
                    max_degree=_int(poly._max_degree),
                    interaction_only=bool(poly.interaction_only),
                    include_bias=True,
                )
            )
        )
    return max(found)


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError, OverflowError):
        return 0


def _objects(root: Any) -> Iterator[Any]:
    """scikit-learn objects reachable from ``root`` through attributes, lists, tuples and
    dicts (pipelines, column transformers, unions, meta-estimators)."""
    seen: set[int] = set()
    stack = [root]
    while stack and len(seen) < MAX_VISITED:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, list | tuple):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif type(obj).__module__.startswith("sklearn."):
            yield obj
            stack.extend(getattr(obj, "__dict__", {}).values())


def measured_row_values(predict: Callable[[Any], Any], rows: np.ndarray, declared: int = 0) -> int:
    """Values (8 bytes each) one row takes at most during ``predict``: the growth of the peak of
    traced memory from one row to a few rows (one row's whole peak when only one row may be
    built), measured with ``tracemalloc`` under a lock (it traces the whole process).

    Args:
        predict: The model call.
        rows: Rows to call it on (at least one).
        declared: Values per row the model declares (:func:`declared_row_values`), which bounds
            how many rows are measured together.
    """
    several = max(1, min(MEMORY_ROWS, len(rows), CHUNK_VALUES // max(1, declared)))
    with _TRACE_LOCK:
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        try:
            one = _peak(predict, rows[:1])
            many = _peak(predict, rows[:several]) if several > 1 else one
        finally:
            if started:
                tracemalloc.stop()
    per_row = one if several == 1 else max(0, many - one) / (several - 1)
    return max(declared, int(per_row // 8))


def _peak(predict: Callable[[Any], Any], rows: np.ndarray) -> int:
    """Bytes the traced memory peaked above its level before ``predict(rows)``."""
    checkpoint()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    predict(rows)
    return max(0, tracemalloc.get_traced_memory()[1] - before)
