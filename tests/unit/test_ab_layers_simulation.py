"""Layers, a global holdout and targeting on 1,000,000 simulated users (seeded).

The rules are written again here with numpy from the documented hashing (blake2b-64 of
``salt:key``; a layer bucket ``floor(h * 10000 / 2**64)``; a holdout ``h < ceil(share * 2**64)``;
variants by cumulative thresholds) and checked against the service's scalar
:class:`~chalicelib.abtesting.assignment.Assigner` on a sample; then, over all users: no user is
in two experiments of one layer, slice and holdout shares are within binomial tolerance, holdout
users see only controls and are counted as the holdout, and targeting never admits an
ineligible user.
"""

from __future__ import annotations

import math
from fractions import Fraction
from hashlib import blake2b
from typing import Any

import numpy as np
import pytest

from chalicelib.abtesting.assignment import Assigner

USERS = 1_000_000
SCALAR_SAMPLE = 20_000
BUCKETS = 10_000
HOLDOUT_SHARE = Fraction(5, 100)
LAYER = "layer-sim"
HOLDOUT = "hold-sim"
COUNTRIES = np.array(["DE", "FR", "US", "BR", "JP"])
TARGETING = {
    "all": [
        {"attribute": "country", "in": ["DE", "FR"]},
        {
            "any": [
                {"attribute": "age", "gte": 18, "lt": 30},
                {"attribute": "plan", "equals": "pro"},
            ]
        },
    ]
}
# (experiment id, slice, treatment weight, targeted)
EXPERIMENTS = [
    ("exp-a", (0, 3000), "0.5", False),
    ("exp-b", (3000, 5000), "0.2", True),
    ("exp-c", (5000, 9000), "0.75", False),
]


def _config(name: str, bounds: tuple[int, int], weight: str, targeted: bool) -> dict[str, Any]:
    control = str(1 - Fraction(weight))
    return {
        "salt": name,
        "variants": [
            {"variant_id": "treatment", "model_version": 2, "weight": weight},
            {"variant_id": "control", "model_version": 1, "weight": control},
        ],
        "layer": {
            "layer_id": LAYER,
            "salt": LAYER,
            "buckets": BUCKETS,
            "start": bounds[0],
            "end": bounds[1],
        },  # fmt: skip
        "holdouts": [{"holdout_id": HOLDOUT, "salt": HOLDOUT, "share": str(HOLDOUT_SHARE)}],
        "targeting": TARGETING if targeted else None,
    }


def _hashes(salt: str, keys: list[str]) -> np.ndarray:
    """blake2b-64 of ``salt:key`` for every key, as uint64 (the digests joined, read big-endian)."""
    prefix = f"{salt}:"
    raw = b"".join(blake2b((prefix + key).encode(), digest_size=8).digest() for key in keys)
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


def _buckets(hashes: np.ndarray) -> np.ndarray:
    """``floor(h * BUCKETS / 2**64)`` exactly, without 128-bit integers (split h in halves)."""
    high, low = hashes >> np.uint64(32), hashes & np.uint64(0xFFFFFFFF)
    return (high * np.uint64(BUCKETS) + ((low * np.uint64(BUCKETS)) >> np.uint64(32))) >> np.uint64(
        32
    )


def _threshold(share: Fraction) -> int:
    return math.ceil(share * 2**64)


@pytest.fixture(scope="module")
def population() -> dict[str, Any]:
    rng = np.random.default_rng(20261201)
    keys = [f"user-{index}" for index in range(USERS)]
    country = COUNTRIES[rng.integers(0, len(COUNTRIES), USERS)]
    age = rng.integers(10, 80, USERS)
    plan = np.where(rng.random(USERS) < 0.1, "pro", "free")
    holdout_hash = _hashes(HOLDOUT, keys)
    held = holdout_hash < np.uint64(_threshold(HOLDOUT_SHARE))
    bucket = _buckets(_hashes(LAYER, keys))
    eligible = np.isin(country, ["DE", "FR"]) & (((age >= 18) & (age < 30)) | (plan == "pro"))
    exposure, variant = {}, {}
    for name, (start, end), weight, targeted in EXPERIMENTS:
        in_slice = (bucket >= start) & (bucket < end)
        admitted = in_slice & ~held & (eligible if targeted else True)
        chosen = np.full(USERS, "", dtype=object)
        members = np.flatnonzero(admitted)
        point = _hashes(name, [keys[i] for i in members])
        treated = point < np.uint64(_threshold(Fraction(weight)))
        chosen[members] = np.where(treated, "treatment", "control")
        why = np.full(USERS, "outside_layer", dtype=object)
        why[in_slice] = "experiment"
        if targeted:
            why[~eligible] = "ineligible"
        why[held & (why != "ineligible")] = "holdout"
        exposure[name], variant[name] = why, chosen
    return {
        "keys": keys, "country": country, "age": age, "plan": plan, "held": held,
        "bucket": bucket, "eligible": eligible, "exposure": exposure, "variant": variant,
    }  # fmt: skip


def _attributes(population: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "country": str(population["country"][index]),
        "age": int(population["age"][index]),
        "plan": str(population["plan"][index]),
    }


def test_the_vectorised_rules_equal_the_services_assigner_on_a_sample(
    population: dict[str, Any],
) -> None:
    sample = np.random.default_rng(7).choice(USERS, SCALAR_SAMPLE, replace=False)
    for name, bounds, weight, targeted in EXPERIMENTS:
        assigner = Assigner(_config(name, bounds, weight, targeted))
        for index in sample:
            key = population["keys"][index]
            found = assigner.decide("r", key, True, _attributes(population, index))
            why = population["exposure"][name][index]
            expected_variant = {"holdout": "holdout", "experiment": None}.get(why)
            if why == "experiment":
                expected_variant = population["variant"][name][index]
            assert found[2] == why, (name, key)
            assert found[0] == expected_variant, (name, key)
            assert found[1] == (2 if expected_variant == "treatment" else 1), (name, key)


def test_no_user_is_in_two_experiments_of_one_layer(population: dict[str, Any]) -> None:
    exposed = sum(
        (population["exposure"][name] == "experiment").astype(int) for name, *_ in EXPERIMENTS
    )
    assert exposed.max() == 1
    outside = (population["bucket"] >= 9000) & ~population["held"]
    assert not exposed[outside].any()  # [9000, 10000) is free: nobody there is in any


def _within(observed: int, trials: int, share: float, sigmas: float = 5.0) -> bool:
    spread = sigmas * math.sqrt(trials * share * (1 - share))
    return abs(observed - trials * share) <= spread


def test_slice_holdout_and_variant_shares_are_within_binomial_tolerance(
    population: dict[str, Any],
) -> None:
    held = population["held"]
    assert _within(int(held.sum()), USERS, 0.05)
    for name, (start, end), weight, _ in EXPERIMENTS:
        in_slice = (population["bucket"] >= start) & (population["bucket"] < end)
        assert _within(int(in_slice.sum()), USERS, (end - start) / BUCKETS), name
        # the holdout's hash is independent of the layer's: 5 % of every slice is held out
        assert _within(int((in_slice & held).sum()), int(in_slice.sum()), 0.05), name
        chosen = population["variant"][name]
        members = population["exposure"][name] == "experiment"
        treated = int((chosen[members] == "treatment").sum())
        assert _within(treated, int(members.sum()), float(Fraction(weight))), name


def test_holdout_users_see_only_controls_and_count_as_the_holdout(
    population: dict[str, Any],
) -> None:
    held = population["held"]
    for name, *_ in EXPERIMENTS:
        why = population["exposure"][name]
        assert not (why[held] == "experiment").any()
        assert (population["variant"][name][held] == "").all()
    sample = np.flatnonzero(held)[:2000]
    assigners = [Assigner(_config(*spec)) for spec in EXPERIMENTS]
    for index in sample:
        attributes = _attributes(population, index)
        for assigner in assigners:
            found = assigner.decide("r", population["keys"][index], True, attributes)
            assert found[0] in ("holdout", None) and found[1] == 1


def test_targeting_never_admits_an_ineligible_user(population: dict[str, Any]) -> None:
    why = population["exposure"]["exp-b"]
    eligible = population["eligible"]
    assert not (why[~eligible] == "experiment").any()
    assert (why[~eligible] == "ineligible").all()
    # every eligible user in the slice and not held out is admitted
    in_slice = (population["bucket"] >= 3000) & (population["bucket"] < 5000)
    admitted = eligible & in_slice & ~population["held"]
    assert (why[admitted] == "experiment").all()
    assert 0.05 < eligible.mean() < 0.2
