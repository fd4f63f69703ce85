"""Assignment of requests to variants from an experiment's routing config: pure, stdlib only.

The service's router (:mod:`chalicelib.abtesting.routing`) and the Python client's local
assignment (``synapse_client``) run this very module on the same config, the JSON document that
``GET /experiments/{id}/routing-config`` serves, so both put every user in the same variant.
``synapse_client/_assignment.py`` is a byte-for-byte copy (the client must not import
``chalicelib``); ``tests/client/test_assignment_identity.py`` fails if the copies differ or if
this module imports anything but the standard library.

How a request is assigned:

* The key is the user id (sticky) or, without one or with ``sticky=False``, the request id.
* ``h`` = the first 8 bytes (big-endian) of ``blake2b(salt + ":" + key)``, i.e. the point
  ``h / 2**64`` of the unit interval.
* Each variant owns an interval of the unit interval in the config's order (treatments first,
  the control last). Integer thresholds ``ceil(c * 2**64)`` of the cumulative weights ``c``
  (exact fractions of the decimal weight strings) make ``h < threshold`` exactly
  ``h / 2**64 < c``; ``bisect`` finds the variant.
* ``fixed`` (paused, rolled back, concluded) sends everyone to one variant; ``blocked`` (a draft)
  refuses to route; ``sticky_store`` (a running bandit) means a user's first assignment is
  stored by the service, so a sticky user's variant comes from ``POST /route``, not the hash.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from hashlib import blake2b
from typing import Any

SCALE = 2**64
HASH_NAME = "blake2b-64"
Choice = tuple[str, int]


class NotRoutable(Exception):
    """The experiment does not route requests (a draft); the message says why."""


def thresholds(weights: Sequence[Fraction]) -> list[int]:
    """Integer thresholds ``ceil(cumulative * 2**64)`` of weights given as exact fractions."""
    found, total = [], Fraction(0)
    for weight in weights:
        total += weight
        found.append(math.ceil(total * SCALE))
    return found


def unit_hash(salt: str, key: str) -> int:
    """The 64-bit hash of ``salt:key`` (a point ``h / 2**64`` of the unit interval)."""
    return int.from_bytes(blake2b(f"{salt}:{key}".encode(), digest_size=8).digest(), "big")


def _picker(prefix: str, bounds: list[int], choices: list[Choice]) -> Callable[[str], Choice]:
    """``key -> the variant whose interval holds blake2b-64(prefix + key)`` (names bound once:
    this runs for every request)."""

    def pick(
        key: str, _hash: Any = blake2b, _int: Any = int.from_bytes, _find: Any = bisect_right
    ) -> Choice:
        return choices[_find(bounds, _int(_hash((prefix + key).encode(), digest_size=8).digest(),
                                          "big"))]  # fmt: skip

    return pick


class Assigner:
    """One experiment's assignment state, precomputed from its routing config.

    Attributes:
        revision: The experiment revision the config describes.
        prefix: ``salt + ":"``.
        thresholds: Integer cumulative thresholds in layout order.
        choices: ``(variant_id, model_version)`` in layout order.
        by_id: Model version by variant id.
        fixed: The single choice when the state sends everyone to one variant.
        persist: Whether the service stores first assignments of users (running bandits).
        blocked: Why routing is refused (draft), else ``None``.
    """

    __slots__ = ("revision", "prefix", "thresholds", "choices", "by_id", "fixed", "persist",
                 "blocked", "pick")  # fmt: skip

    def __init__(self, config: Mapping[str, Any]) -> None:
        if config.get("hash", HASH_NAME) != HASH_NAME:
            raise ValueError(f"unknown hash {config.get('hash')!r}; this code knows {HASH_NAME}")
        variants = config["variants"]
        self.revision = int(config.get("revision", 0))
        self.prefix = f"{config['salt']}:"
        self.choices: list[Choice] = [(v["variant_id"], int(v["model_version"])) for v in variants]
        self.by_id = dict(self.choices)
        self.thresholds = thresholds([Fraction(str(v["weight"])) for v in variants])
        fixed = config.get("fixed")
        self.fixed: Choice | None = (
            None if fixed is None else (fixed["variant_id"], int(fixed["model_version"]))
        )
        self.blocked: str | None = config.get("blocked")
        self.persist = bool(config.get("sticky_store", False))
        self.pick: Callable[[str], Choice] = _picker(self.prefix, self.thresholds, self.choices)

    def route(self, request_id: str, user_id: str | None = None, sticky: bool = True) -> Choice:
        """``(variant_id, model_version)`` for a request whose variant the hash decides.

        Raises:
            NotRoutable: The experiment does not route (a draft).
        """
        if self.fixed is not None:
            return self.fixed
        if self.blocked is not None:
            raise NotRoutable(self.blocked)
        if user_id is None or not sticky:
            return self.pick(request_id)
        return self.pick(user_id)

    def user_picker(self) -> Callable[[str], Choice] | None:
        """How a sticky user is assigned, as one function of the user id (the hot path of local
        assignment); ``None`` when the service's stored first assignment decides (a running
        bandit). The function raises :class:`NotRoutable` for a draft."""
        fixed, reason = self.fixed, self.blocked
        if fixed is not None:
            return lambda key: fixed
        if reason is not None:

            def refuse(key: str) -> Choice:
                raise NotRoutable(reason)

            return refuse
        return None if self.persist else self.pick

    def needs_store(self, user_id: str | None, sticky: bool = True) -> bool:
        """Whether the service's stored first assignment decides (a running bandit's user)."""
        return self.persist and self.fixed is None and user_id is not None and sticky
