"""Thompson-sampling weights for multi-armed-bandit experiments.

Each arm's primary metric is a Beta(1 + successes, 1 + failures) posterior. The probability
that an arm is best is estimated by Monte Carlo (seeded, so a rerun gives the same weights), every
arm is lifted to a floor, and the weights are quantized to Decimals that sum to exactly 1 (the
rounding residue goes to the largest arm). numpy is imported only here.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal

QUANTUM = Decimal("0.0001")


def quantize_weights(raw: Sequence[float], floor: Decimal) -> list[Decimal]:
    """Decimal weights with exactly sum 1, each at least ``floor`` (needs ``len * floor <= 1``)."""
    count = len(raw)
    total = sum(raw)
    shares = [value / total if total > 0 else 1.0 / count for value in raw]
    spread = 1 - float(floor) * count
    lifted = [Decimal(str(float(floor) + spread * share)) for share in shares]
    weights = [max(floor, w.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)) for w in lifted]
    residue = Decimal(1) - sum(weights)
    largest = max(range(count), key=lambda i: weights[i])
    weights[largest] += residue
    return weights


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
