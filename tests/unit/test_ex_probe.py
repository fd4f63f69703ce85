"""The timing probe, the rows it uses, a row's width inside a model and time-sized model calls.

Clocks are fakes advanced by the fake models, so nothing here depends on the machine's speed.
"""

from __future__ import annotations

from math import comb
from typing import Any

import numpy as np
import pytest

from chalicelib.explainability import budget
from chalicelib.explainability.budget import (
    CHUNK_VALUES,
    FIRST_CHUNK_ROWS,
    Allowance,
    ModelSpeed,
    bounded,
    guarded,
    measure_speed,
)
from chalicelib.explainability.errors import DeadlineExceeded
from chalicelib.explainability.probe import (
    declared_row_values,
    measured_row_values,
    sample_rows,
)


class FakeClock:
    """Seconds that pass only when a fake model says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def slow_model(clock: FakeClock, per_row: float, calls: list[int]) -> Any:
    def predict(rows: Any) -> np.ndarray:
        calls.append(len(rows))
        clock.now += per_row * len(rows)
        return np.zeros((len(rows), 2))

    return predict


def test_the_probe_times_one_row_first_and_grows_only_while_under_its_budget() -> None:
    clock, calls = FakeClock(), []
    speed = measure_speed(slow_model(clock, 0.01, calls), np.zeros((2048, 3)), clock=clock)
    # 0.01 + 0.04 + 0.16 s spent, then one batch of 64 rows: the probe stops there.
    assert calls == [1, 4, 16, 64]
    assert speed.row_seconds == pytest.approx(0.01)
    clock, calls = FakeClock(), []
    hopeless = measure_speed(slow_model(clock, 3.0, calls), np.zeros((2048, 3)), clock=clock)
    assert calls == [1]  # one row already took longer than the budget
    assert hopeless == ModelSpeed(0.0, 3.0)


def test_the_probe_stops_at_the_running_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, calls = FakeClock(), []
    monkeypatch.setattr(budget.time, "monotonic", clock)
    with bounded(Allowance("sync", 0.5, 10.0, 240.0)), pytest.raises(DeadlineExceeded):
        measure_speed(slow_model(clock, 0.3, calls), np.zeros((64, 3)), clock=clock, budget=9)
    assert calls == [1, 4]  # the call after the deadline never started


def test_model_calls_under_a_deadline_are_sized_by_time_and_stop_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, calls = FakeClock(), []
    monkeypatch.setattr(budget.time, "monotonic", clock)
    wrapped = guarded(slow_model(clock, 0.01, calls))
    with bounded(Allowance("job", 5.0, 10.0, 240.0)), pytest.raises(DeadlineExceeded):
        wrapped(np.zeros((20_000, 4)))
    # First part FIRST_CHUNK_ROWS rows (no admitted speed yet), then 0.5 s at 10 ms per row
    # (32 rows, a power of two), until the deadline (5 s) has passed.
    assert calls[0] == FIRST_CHUNK_ROWS and set(calls[1:]) == {32}
    assert clock.now - 5.0 <= 32 * 0.01 + 1e-9  # stopped within one part of the deadline
    clock.now, calls[:] = 0.0, []
    hinted = Allowance("job", 5.0, 10.0, 240.0, row_seconds=0.01)
    with bounded(hinted), pytest.raises(DeadlineExceeded):
        wrapped(np.zeros((20_000, 4)))
    assert set(calls) == {32}  # the admitted speed sizes the first part too


def test_fast_calls_under_a_deadline_grow_to_the_memory_bound_and_give_the_same_outputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, calls = FakeClock(), []
    monkeypatch.setattr(budget.time, "monotonic", clock)
    X = np.random.default_rng(0).normal(size=(6000, 8))

    def predict(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        clock.now += 1e-7 * len(rows)
        return rows * 2.0

    with bounded(Allowance("job", 60.0, 60.0, 240.0)):
        out = guarded(predict, chunk_values=8 * 2000)(X)
    np.testing.assert_array_equal(out, X * 2.0)
    assert calls == [256, 1024, 2000, 2000, 720]  # ×4 at most, then the 2,000-row memory bound


def test_a_rows_width_inside_the_model_sizes_the_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    wide = Allowance("job", float("inf"), 60.0, 240.0, row_values=CHUNK_VALUES // 3)
    with bounded(wide):
        guarded(lambda rows: calls.append(len(rows)) or np.zeros((len(rows), 2)))(
            np.zeros((10, 12))
        )
    assert calls == [3, 3, 3, 1]


def test_the_probe_sample_is_the_input_then_rows_like_the_explainers() -> None:
    background = np.array([[10.0, 20.0, 30.0], [11.0, 21.0, 31.0], [12.0, 22.0, 32.0]])
    inputs = np.array([[0.0, 1.0, 2.0]])
    kernel = sample_rows("kernel", inputs, background, 200)
    assert kernel.shape == (200, 3) and np.array_equal(kernel[0], inputs[0])
    from_input = kernel[1:] == inputs[0]
    from_background = np.isin(kernel[1:], background)
    assert np.all(from_input | from_background)
    assert 0.3 < from_input.mean() < 0.7  # coalitions mix the input and the background
    lime = sample_rows("lime", inputs, background, 200)
    assert np.array_equal(lime[0], inputs[0])
    for column in range(3):
        assert set(lime[1:, column]) <= set(background[:, column])
    assert np.array_equal(sample_rows("kernel", inputs, background, 200), kernel)  # seeded
    assert np.array_equal(sample_rows("tree", inputs, background, 5), np.repeat(inputs, 5, 0))


def test_a_polynomial_steps_width_is_read_from_the_model_even_when_the_file_lies() -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    X = np.random.default_rng(0).normal(size=(30, 6))
    inner = ColumnTransformer([("poly", PolynomialFeatures(degree=3), [0, 1, 2, 3])])
    model = Pipeline([("cols", inner), ("lr", LogisticRegression())]).fit(X, X[:, 0] > 0)
    assert declared_row_values(model) == comb(4 + 3, 3)
    assert declared_row_values(StandardScaler().fit(X)) == 0
    poly = model.named_steps["cols"].transformers_[0][1]
    poly.n_output_features_ = poly._n_out_full = 1  # a forged file
    poly._max_degree = 12
    assert declared_row_values(model) == comb(4 + 12, 12)


def test_the_memory_one_row_takes_inside_a_model_is_measured() -> None:
    def expanding(rows: np.ndarray) -> np.ndarray:
        wide = np.ones((len(rows), 100_000))  # 800 KB per row
        return wide.sum(axis=1)

    measured = measured_row_values(expanding, np.zeros((8, 3)))
    assert 99_000 <= measured < 110_000  # traced bytes / 8, within the allocator's rounding
    assert measured_row_values(lambda rows: rows, np.zeros((8, 3))) < 1_000


def test_the_n_grams_a_text_vectorizer_builds_from_one_text_are_counted() -> None:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from chalicelib.explainability.probe import declared_text_values

    def model(**options: Any) -> Any:
        pipeline = make_pipeline(CountVectorizer(**options), LogisticRegression())
        return pipeline.fit(["ab b", "aab", "b a", "aaab"], [0, 1, 0, 1])

    text = "abcd efgh"  # 9 characters, 2 words
    # char n-grams of 1..2 over the 9 characters plus 2 per word: 13 + 12 strings, 37 characters
    assert declared_text_values(model(analyzer="char", ngram_range=(1, 2)), text) == 6 * 25 + 4
    # word bigrams and unigrams: 2 + 1 strings of 1 and 2 "characters" (words)
    assert declared_text_values(model(ngram_range=(1, 2)), text) == 6 * 3 + 0
    assert declared_text_values(LogisticRegression(), text) == 0


def test_the_requests_rows_cost_what_they_take_beyond_as_many_known_rows() -> None:
    from chalicelib.explainability.budget import measure_rows

    clock, calls = FakeClock(), []

    def centre_is_slow(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        clock.now += 0.002 + 0.00001 * len(rows) + 0.001 * int((rows[:, 0] == 0).sum())
        return np.zeros((len(rows), 2))

    known = np.ones((64, 3))
    request = np.zeros((64, 3))
    request[1::2, 0] = 1.0  # half the rows (the input among them) at the slow place
    extra = measure_rows(centre_is_slow, request, known, clock=clock)
    # The input alone first, then the reference and the rows twice (0.077 s spent: over 0.05).
    assert calls == [1] + [64, 64] * 2
    assert extra == pytest.approx(32 * 0.001 / 64)
    assert measure_rows(centre_is_slow, known, known, clock=clock) == 0.0
    clock.now, calls[:] = 0.0, []
    hopeless = measure_rows(centre_is_slow, request, known, clock=clock, budget=0.001)
    assert calls == [1] and hopeless == pytest.approx(0.002 + 0.00001 + 0.001)
