"""Thompson-sampling weights for multi-armed-bandit experiments.

Each arm's primary metric is a Beta(1 + successes, 1 + failures) posterior. The probability
that an arm is best is estimated by Monte Carlo (seeded, so a rerun gives the same weights), and the
weights are apportioned in whole quanta: every arm keeps its floor exactly and the weights sum to
exactly 1. numpy is imported only here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import ROUND_CEILING, Decimal
from fractions import Fraction

QUANTUM = Decimal("0.0001")


def _quantum(floor: Decimal) -> Decimal:
    """``QUANTUM``, or finer when the floor has more decimals (so the floor is a whole number of
    quanta and can be kept exactly)."""
    exponent = floor.normalize().as_tuple().exponent
    coarsest = QUANTUM.as_tuple().exponent
    if isinstance(exponent, int) and isinstance(coarsest, int) and exponent < coarsest:
        return Decimal(1).scaleb(exponent)
    return QUANTUM


def quantize_weights(raw: Sequence[float], floor: Decimal) -> list[Decimal]:
    """Decimal weights summing to exactly 1, each at least ``floor`` (needs ``len * floor <= 1``).

    Integer apportionment in quanta of ``0.0001`` (finer if the floor needs it): every arm gets
    the floor, and the remaining quanta are shared in proportion to ``raw`` by the largest-
    remainder method, so no rounding can take an arm below its floor.
    """
    count = len(raw)
    quantum = _quantum(floor)
    units = int(Decimal(1) / quantum)
    floor_units = int((floor / quantum).to_integral_value(rounding=ROUND_CEILING))
    spare = units - floor_units * count
    total = sum(raw)
    shares = [
        Fraction(value) / Fraction(total) if total > 0 else Fraction(1, count) for value in raw
    ]
    exact = [share * spare for share in shares]
    given = [math.floor(value) for value in exact]
    order = sorted(range(count), key=lambda i: (exact[i] - given[i], -i), reverse=True)
    for index in order[: spare - sum(given)]:
        given[index] += 1
    return [(floor_units + extra) * quantum for extra in given]


def thompson_weights(
    arms: Sequence[tuple[int, int]],
    floor: Decimal = Decimal("0.01"),
    samples: int = 20_000,
    seed: int = 0,
) -> list[Decimal]:
    """Weights proportional to each arm's probability of being best.

    Args:
        arms: ``(successes, failures)`` per arm.
        floor: The smallest weight an arm keeps.
        samples: Monte Carlo draws.
        seed: Random seed (the caller derives it from the experiment and revision).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    alpha = np.array([1 + s for s, _ in arms], dtype=float)
    beta = np.array([1 + f for _, f in arms], dtype=float)
    draws = rng.beta(alpha, beta, size=(samples, len(arms)))
    wins = np.bincount(np.argmax(draws, axis=1), minlength=len(arms))
    return quantize_weights([float(w) for w in wins], floor)
