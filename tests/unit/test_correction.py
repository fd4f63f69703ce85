"""Holm and Benjamini-Hochberg adjusted p-values against statsmodels' ``multipletests``."""

from __future__ import annotations

import numpy as np
import pytest

from chalicelib.abtesting import correction
from tests.helpers.oracles import multipletests

CASES = [
    [0.01],
    [0.04, 0.01, 0.03, 0.02],
    [0.5, 0.5, 0.5, 0.001],  # ties
    [1.0, 1.0, 0.0, 0.0],
    [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216],
]


@pytest.mark.parametrize("values", CASES + [list(np.random.default_rng(s).random(40) ** 3)
                                            for s in range(20)])  # fmt: skip
@pytest.mark.parametrize(("method", "oracle"), [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjusted_p_values_equal_statsmodels(values: list[float], method: str, oracle: str) -> None:
    expected = multipletests(values, alpha=0.05, method=oracle)[1]

    assert correction.adjust(values, method) == pytest.approx(list(expected), abs=1e-15)


def test_nothing_to_adjust_is_an_empty_list() -> None:
    assert correction.adjust([], "holm") == [] == correction.adjust([], "bh")


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown correction"):
        correction.adjust([0.1], "bonferroni")


def test_adjust_tested_needs_one_flag_per_p_value() -> None:
    from chalicelib.abtesting.correction import adjust_tested

    with pytest.raises(ValueError, match="one tested flag"):
        adjust_tested([0.1, 0.2], [True], "holm")
    assert adjust_tested([0.01, 1.0, 0.04], [True, False, True], "holm") == [0.02, 1.0, 0.04]


def test_no_correction_returns_the_raw_p_values_in_order_and_still_checks_them() -> None:
    """``none`` adjusts nothing (not even the cap Holm and BH apply), but a p-value outside
    [0, 1] is refused as by the other methods."""
    raw = [0.04, 0.01, 1.0, 0.03]

    assert correction.adjust(raw, "none") == [0.04, 0.01, 1.0, 0.03]
    assert correction.adjust(raw, "holm") != raw  # the corrections do change these
    with pytest.raises(ValueError, match=r"p-values must be in \[0, 1\]"):
        correction.adjust([0.2, 1.5], "none")
    with pytest.raises(ValueError, match=r"p-values must be in \[0, 1\]"):
        correction.adjust([float("nan")], "none")
