"""Disk-cacheable copies of shap's numba functions that numba cannot cache as shap calls them.

Imported only by :mod:`chalicelib.explainability.jit_cache` when ``NUMBA_CACHE_DIR`` is set
(it imports numba). shap's ``_build_fixed_single_output`` takes the link function as an argument,
and a jitted function passed as an argument is typed by its identity, so numba's cache never
matches it in a new process: it was most of the 3 s compiled on every cold start. Every SHAP
explanation here uses the identity link, so this copy (shap 0.51's code with ``link(x)`` read as
``x``) takes no function and is cached; any other link keeps shap's own function.

shap's Partition explainer hands its values down its clustering tree with ``lower_credit``, a
recursive function: numba writes its cache, but a new process crashes loading it, so it was
compiled again on every cold start. :func:`lower_credit_rows` walks the same tree with a
stack instead of recursion; each node's share depends only on its parent's value, so the order
of the walk changes no number. ``tests/unit/test_ex_jit_cache.py`` compares each copy with
shap's function, and text and image explanations made with each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit


@njit(cache=True)
def fixed_single_output_identity(
    averaged_outs: Any,
    last_outs: Any,
    outputs: Any,
    batch_positions: Any,
    varying_rows: Any,
    num_varying_rows: Any,
    linearizing_weights: Any,
) -> None:  # pragma: no cover - compiled by numba (coverage cannot see inside)
    """shap's ``_build_fixed_single_output`` for the identity link (same arguments less the
    link; fills ``averaged_outs`` and ``last_outs`` in place)."""
    sample_count = last_outs.shape[0]
    for i in range(len(averaged_outs)):
        if batch_positions[i] < batch_positions[i + 1]:
            if num_varying_rows[i] == sample_count:
                last_outs[:] = outputs[batch_positions[i] : batch_positions[i + 1]]
            else:
                last_outs[varying_rows[i]] = outputs[batch_positions[i] : batch_positions[i + 1]]
            if linearizing_weights is not None:
                averaged_outs[i] = np.mean(linearizing_weights * last_outs)
            else:
                averaged_outs[i] = np.mean(last_outs)
        else:
            averaged_outs[i] = averaged_outs[i - 1]


def single_output(original: Any, identity: Any) -> Any:
    """A drop-in for shap's ``_build_fixed_single_output``: the cached copy for the identity
    link, ``original`` for any other."""

    def build_fixed_single_output(
        averaged_outs: Any,
        last_outs: Any,
        outputs: Any,
        batch_positions: Any,
        varying_rows: Any,
        num_varying_rows: Any,
        link: Any,
        linearizing_weights: Any,
    ) -> None:
        if link is not identity:
            return original(
                averaged_outs, last_outs, outputs, batch_positions, varying_rows,
                num_varying_rows, link, linearizing_weights,
            )  # fmt: skip
        fixed_single_output_identity(
            averaged_outs, last_outs, outputs, batch_positions, varying_rows,
            num_varying_rows, linearizing_weights,
        )  # fmt: skip
        return None

    build_fixed_single_output.original = original  # type: ignore[attr-defined]
    return build_fixed_single_output


@njit(cache=True)
def lower_credit_rows(
    root: Any, value: Any, M: Any, values: Any, clustering: Any
) -> None:  # pragma: no cover - compiled by numba (coverage cannot see inside)
    """shap's ``lower_credit`` with a stack instead of recursion (fills ``values`` in place):
    ``value`` is added to node ``root`` and each internal node's total is split between its
    two children in proportion to their sizes, down to the leaves (``i < M``). ``values``
    holds a row per node (one column for a model with one output), each share a row."""
    nodes = np.empty(len(values) + 1, dtype=np.int64)
    shares = np.empty((len(values) + 1, values.shape[1]), dtype=np.float64)
    nodes[0] = root
    shares[0, :] = value
    top = 1
    while top > 0:
        top -= 1
        i = nodes[top]
        values[i] += shares[top]
        if i < M:
            continue
        li = int(clustering[i - M, 0])
        ri = int(clustering[i - M, 1])
        group_size = int(clustering[i - M, 3])
        lsize = int(clustering[li - M, 3]) if li >= M else 1
        rsize = int(clustering[ri - M, 3]) if ri >= M else 1
        assert lsize + rsize == group_size
        nodes[top] = ri
        shares[top] = values[i] * rsize / group_size
        nodes[top + 1] = li
        shares[top + 1] = values[i] * lsize / group_size
        top += 2


def cached_lower_credit(original: Any) -> Any:
    """A drop-in for shap's ``lower_credit`` (``original``, kept as ``.original``): the cached
    copy, with ``value`` read as a float so one compiled signature also serves shap's first
    call, which passes the integer 0, and one compiled signature serves one output (a column
    view of the values) and several (a row per node)."""

    def lower_credit(i: int, value: float, M: int, values: Any, clustering: Any) -> None:
        rows = values.reshape(-1, 1) if values.ndim == 1 else values  # a view: written through
        lower_credit_rows(i, float(value), M, rows, clustering)

    lower_credit.original = original  # type: ignore[attr-defined]
    return lower_credit
