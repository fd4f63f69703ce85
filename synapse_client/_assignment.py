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

Before the variant is chosen, a gate decides whether the request is in the experiment at all
(:meth:`Assigner.decide` answers which, as the ``exposure``):

1. ``targeting`` (a condition, see :func:`compile_condition`) on the request's attributes: a
   request it does not admit is ``ineligible``.
2. ``holdouts``: for each, ``blake2b-64(holdout salt + ":" + key) < ceil(share * 2**64)`` puts
   the key in the holdout (``holdout``).
3. ``layer``: the key's bucket ``floor(blake2b-64(layer salt + ":" + key) * buckets / 2**64)``
   must lie in the experiment's slice ``[start, end)`` of the layer, else ``outside_layer``.

A request kept out gets the default model (the control's version): a holdout user under the
variant id ``holdout`` (counted as the holdout), an ineligible or outside-layer request under no
variant (not an exposure). This holds in every state (a concluded experiment's winner reaches
only its own population); a draft still refuses to route.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from hashlib import blake2b
from typing import Any

SCALE = 2**64
HASH_NAME = "blake2b-64"
Choice = tuple[str, int]
Decision = tuple[str | None, int, str]
"""``(variant_id or None, model_version, exposure)``."""

HOLDOUT = "holdout"
"""The variant id a holdout user is counted under."""
IN_EXPERIMENT = "experiment"
HELD_OUT = HOLDOUT
INELIGIBLE = "ineligible"
OUTSIDE_LAYER = "outside_layer"
EXPOSURES = (IN_EXPERIMENT, HELD_OUT, INELIGIBLE, OUTSIDE_LAYER)

# The targeting grammar's bounds (a condition beyond them is refused, never evaluated).
MAX_DEPTH = 4
MAX_NODES = 64
MAX_VALUES = 100
MAX_TEXT = 256
ATTRIBUTE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
RANGE_OPERATORS = ("gt", "gte", "lt", "lte")


class NotRoutable(Exception):
    """The experiment does not route requests (a draft); the message says why."""


class InvalidCondition(ValueError):
    """A targeting condition outside the grammar or its bounds; the message says where."""


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


def _salted(prefix: str) -> Callable[[], Any]:
    """A fresh blake2b-64 hasher that has already read ``prefix`` (the ``copy`` of one made
    once: copying a hasher costs about half of building one with ``digest_size=8``, and
    ``prefix + key`` then never has to be concatenated). ``copy().update(key.encode())`` hashes
    exactly the bytes of ``(prefix + key).encode()``."""
    return blake2b(prefix.encode(), digest_size=8).copy


def _picker(prefix: str, bounds: list[int], choices: list[Choice]) -> Callable[[str], Choice]:
    """``key -> the variant whose interval holds blake2b-64(prefix + key)`` (names bound once:
    this runs for every request)."""

    def pick(
        key: str,
        _copy: Any = _salted(prefix),
        _int: Any = int.from_bytes,
        _find: Any = bisect_right,
    ) -> Choice:
        hasher = _copy()
        hasher.update(key.encode())
        return choices[_find(bounds, _int(hasher.digest(), "big"))]

    return pick


Attributes = Mapping[str, Any]
Test = Callable[[Attributes], bool]


def _kind(value: Any) -> str | None:
    """``bool``, ``number`` or ``text`` for a value the grammar compares, else ``None``."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return "number"
    return "text" if isinstance(value, str) else None


def _scalar(value: Any, where: str) -> tuple[str | None, Any]:
    kind = _kind(value)
    if (
        kind is None
        or (kind == "text" and len(value) > MAX_TEXT)
        or (kind == "number" and not abs(value) <= 2**53)
    ):
        raise InvalidCondition(
            f"{where}: a value is a string of at most {MAX_TEXT} characters, a number with "
            "|value| <= 2**53 or a boolean"
        )
    return (kind, value)


def compile_condition(condition: Any) -> Test:
    """A targeting condition as a test of a request's attributes.

    The grammar (JSON)::

        condition := {"all": [condition, ...]} | {"any": [condition, ...]}
                   | {"attribute": NAME, "equals": VALUE}
                   | {"attribute": NAME, "in": [VALUE, ...]}
                   | {"attribute": NAME, "gt"|"gte": NUMBER, "lt"|"lte": NUMBER}  (one or both)

    ``VALUE`` is a string (at most 256 characters), a number (``|value| <= 2**53``) or a
    boolean; equality is typed (``true`` is not ``1``, ``"1"`` is not ``1``). A missing
    attribute, or one of another type, fails its test. Bounds: ``all``/``any`` nest at most
    ``MAX_DEPTH`` (4) levels, a condition has at most ``MAX_NODES`` (64) parts, an ``in`` list at
    most ``MAX_VALUES`` (100) values.

    Raises:
        InvalidCondition: Outside the grammar or its bounds (the message says where).
    """
    return _compile(condition, 1, [MAX_NODES], "targeting")


def _compile(node: Any, depth: int, budget: list[int], where: str) -> Test:
    if not isinstance(node, Mapping):
        raise InvalidCondition(f"{where}: a condition is a JSON object")
    budget[0] -= 1
    if budget[0] < 0:
        raise InvalidCondition(f"a condition has at most {MAX_NODES} parts")
    if len(node) == 1 and ("all" in node or "any" in node):
        return _combine(node, depth, budget, where)
    return _leaf(node, where)


def _combine(node: Mapping[str, Any], depth: int, budget: list[int], where: str) -> Test:
    ((operator, parts),) = node.items()
    if depth >= MAX_DEPTH:
        raise InvalidCondition(f"{where}: 'all' and 'any' nest at most {MAX_DEPTH - 1} levels")
    if not isinstance(parts, list) or not parts:
        raise InvalidCondition(f"{where}.{operator}: a non-empty list of conditions")
    tests = tuple(
        _compile(part, depth + 1, budget, f"{where}.{operator}[{index}]")
        for index, part in enumerate(parts)
    )
    return _joined(operator, tests)


def _joined(operator: str, tests: tuple[Test, ...]) -> Test:
    """``all`` / ``any`` of the tests (plain loops: a generator per request costs more)."""
    if len(tests) == 1:
        return tests[0]
    if operator == "all":

        def every(attributes: Attributes) -> bool:
            for test in tests:  # noqa: SIM110 - the hot path; all() would build a generator
                if not test(attributes):
                    return False
            return True

        return every

    def some(attributes: Attributes) -> bool:
        for test in tests:  # noqa: SIM110 - the hot path; any() would build a generator
            if test(attributes):
                return True
        return False

    return some


def _leaf(node: Mapping[str, Any], where: str) -> Test:
    name = node.get("attribute")
    if not isinstance(name, str) or not ATTRIBUTE_NAME.match(name):
        raise InvalidCondition(
            f"{where}: 'all', 'any', or 'attribute' naming an attribute (1-64 letters, digits, "
            "'_', '.', '-')"
        )
    operators = set(node) - {"attribute"}
    if operators == {"equals"}:
        kind, expected = _scalar(node["equals"], f"{where}.equals")
        exact = {"text": str, "bool": bool}.get(kind or "")

        def equals(attributes: Attributes) -> bool:
            value = attributes.get(name)
            if exact is not None and type(value) is exact:  # the common case, no _kind call
                return bool(value == expected)
            return _kind(value) == kind and bool(value == expected)

        return equals
    if operators == {"in"}:
        return _member(name, node["in"], f"{where}.in")
    if operators and operators <= set(RANGE_OPERATORS):
        return _range(name, {op: node[op] for op in operators}, where)
    raise InvalidCondition(
        f"{where}: exactly one of 'equals', 'in', or range bounds ('gt' or 'gte', 'lt' or 'lte')"
    )


def _member(name: str, values: Any, where: str) -> Test:
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_VALUES:
        raise InvalidCondition(f"{where}: a list of 1 to {MAX_VALUES} values")
    allowed = frozenset(_scalar(value, where) for value in values)
    texts = frozenset(value for kind, value in allowed if kind == "text")
    numbers = frozenset(value for kind, value in allowed if kind == "number")
    flags = frozenset(value for kind, value in allowed if kind == "bool")

    def member(attributes: Attributes) -> bool:
        value = attributes.get(name)
        exact = type(value)
        if exact is str:
            return value in texts
        if exact is int or exact is float:  # inf and nan are in no set of bounded numbers
            return value in numbers
        if exact is bool:
            return value in flags
        kind = _kind(value)  # None for a list or a dict: unhashable, and in no set
        return kind is not None and (kind, value) in allowed

    return member


def _range(name: str, bounds: dict[str, Any], where: str) -> Test:
    if {"gt", "gte"} <= set(bounds) or {"lt", "lte"} <= set(bounds):
        raise InvalidCondition(f"{where}: at most one lower ('gt', 'gte') and one upper bound")
    for operator, bound in bounds.items():
        if _scalar(bound, f"{where}.{operator}")[0] != "number":
            raise InvalidCondition(f"{where}.{operator}: a bound is a number")
    low = bounds.get("gt", bounds.get("gte", -math.inf))
    high = bounds.get("lt", bounds.get("lte", math.inf))
    low_open, high_open = "gt" in bounds, "lt" in bounds

    def admits(attributes: Attributes) -> bool:
        value = attributes.get(name)
        exact = type(value)
        if exact is float:
            if not math.isfinite(value):  # type: ignore[arg-type]  # exact type float
                return False
        elif exact is not int and _kind(value) != "number":
            return False
        above = value > low if low_open else value >= low
        return above and (value < high if high_open else value <= high)

    return admits


def layer_bucket(salt: str, key: str, buckets: int) -> int:
    """The key's bucket ``floor(blake2b-64(salt:key) * buckets / 2**64)`` of a layer."""
    return unit_hash(salt, key) * buckets >> 64


def _gate(
    eligible: Test | None, holdouts: tuple[tuple[str, int], ...], layer: Any
) -> Callable[[str, Attributes | None], str | None]:
    """``(key, attributes) -> why the request is kept out, or None`` (names bound once: this runs
    for every request of a gated experiment)."""

    held = tuple((_salted(prefix), bound) for prefix, bound in holdouts)
    sliced = None if layer is None else (_salted(layer[0]), *layer[1:])
    gated = bool(held) or sliced is not None

    def gate(key: str, attributes: Attributes | None, _int: Any = int.from_bytes) -> str | None:
        if eligible is not None and not eligible(attributes or {}):
            return INELIGIBLE
        if not gated:
            return None
        encoded = key.encode()
        for copy, bound in held:
            hasher = copy()
            hasher.update(encoded)
            if _int(hasher.digest(), "big") < bound:
                return HELD_OUT
        if sliced is not None:
            copy, buckets, start, end = sliced
            hasher = copy()
            hasher.update(encoded)
            if not start <= _int(hasher.digest(), "big") * buckets >> 64 < end:
                return OUTSIDE_LAYER
        return None

    return gate


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
        default: The control's choice (what a request kept out of the experiment gets).
        eligible: The targeting test, or ``None`` (everyone is eligible).
        holdouts: ``(salt + ":", threshold)`` of each holdout that covers the experiment.
        layer: ``(salt + ":", buckets, start, end)`` of the experiment's slice, or ``None``.
        gated: Whether targeting, a holdout or a layer can keep a request out.
    """

    __slots__ = ("revision", "prefix", "thresholds", "choices", "by_id", "fixed", "persist",
                 "blocked", "pick", "default", "eligible", "holdouts", "layer",
                 "gated", "gate")  # fmt: skip

    def __init__(self, config: Mapping[str, Any]) -> None:
        if config.get("hash", HASH_NAME) != HASH_NAME:
            raise ValueError(f"unknown hash {config.get('hash')!r}; this code knows {HASH_NAME}")
        variants = config["variants"]
        self.revision = int(config.get("revision", 0))
        self.prefix = f"{config['salt']}:"
        self.choices: list[Choice] = [(v["variant_id"], int(v["model_version"])) for v in variants]
        self.by_id = dict(self.choices)
        self.default: Choice = self.choices[-1]
        self.thresholds = thresholds([Fraction(str(v["weight"])) for v in variants])
        fixed = config.get("fixed")
        self.fixed: Choice | None = (
            None if fixed is None else (fixed["variant_id"], int(fixed["model_version"]))
        )
        self.blocked: str | None = config.get("blocked")
        self.persist = bool(config.get("sticky_store", False))
        self.pick: Callable[[str], Choice] = _picker(self.prefix, self.thresholds, self.choices)
        targeting = config.get("targeting")
        self.eligible: Test | None = None if targeting is None else compile_condition(targeting)
        self.holdouts = tuple(
            (f"{h['salt']}:", math.ceil(Fraction(str(h["share"])) * SCALE))
            for h in config.get("holdouts") or ()
        )
        layer = config.get("layer")
        self.layer: tuple[str, int, int, int] | None = None
        if layer is not None:
            self.layer = (f"{layer['salt']}:", int(layer["buckets"]), int(layer["start"]),
                          int(layer["end"]))  # fmt: skip
        self.gated = self.eligible is not None or bool(self.holdouts) or self.layer is not None
        self.gate = _gate(self.eligible, self.holdouts, self.layer)

    def exclusion(self, key: str, attributes: Attributes | None = None) -> str | None:
        """Why the request with this key and attributes is kept out (``ineligible``,
        ``holdout``, ``outside_layer``), or ``None`` when it is in the experiment."""
        return self.gate(key, attributes)

    def decide(
        self,
        request_id: str,
        user_id: str | None = None,
        sticky: bool = True,
        attributes: Attributes | None = None,
    ) -> Decision:
        """``(variant_id, model_version, exposure)`` of a request: ``exposure`` is
        ``experiment``, or why the request is kept out (it then gets the control's version,
        under the variant id ``holdout`` for a holdout user and under none otherwise).

        Raises:
            NotRoutable: The experiment does not route (a draft).
        """
        if self.blocked is not None and self.fixed is None:
            raise NotRoutable(self.blocked)
        key = request_id if user_id is None or not sticky else user_id
        reason = self.gate(key, attributes) if self.gated else None
        if reason is not None:
            return (HOLDOUT if reason == HELD_OUT else None), self.default[1], reason
        variant_id, version = self.fixed or self.pick(key)
        return variant_id, version, IN_EXPERIMENT

    def route(
        self,
        request_id: str,
        user_id: str | None = None,
        sticky: bool = True,
        attributes: Attributes | None = None,
    ) -> Choice:
        """``(variant_id, model_version)`` for a request whose variant the hash decides (the
        control's for a request kept out of the experiment; see :meth:`decide`).

        Raises:
            NotRoutable: The experiment does not route (a draft).
        """
        key = request_id if user_id is None or not sticky else user_id
        if self.gated:
            if self.blocked is not None and self.fixed is None:
                raise NotRoutable(self.blocked)
            if self.gate(key, attributes) is not None:
                return self.default
        if self.fixed is not None:
            return self.fixed
        if self.blocked is not None:
            raise NotRoutable(self.blocked)
        return self.pick(key)

    def user_picker(self) -> Callable[[str], Choice] | None:
        """How a sticky user without attributes is assigned, as one function of the user id
        (the hot path of local assignment); ``None`` when the service's stored first assignment
        decides (a running bandit). The function raises :class:`NotRoutable` for a draft."""
        fixed, reason = self.fixed, self.blocked
        if self.gated and reason is None:
            if self.persist and fixed is None:
                return None
            return lambda key: self.route(key, key)
        if fixed is not None:
            return lambda key: fixed
        if reason is not None:

            def refuse(key: str) -> Choice:
                raise NotRoutable(reason)

            return refuse
        return None if self.persist else self.pick

    def needs_store(self, user_id: str | None, sticky: bool = True) -> bool:
        """Whether the service's stored first assignment decides (a running bandit's user
        in the experiment's population: check :meth:`exclusion` first when :attr:`gated`)."""
        return self.persist and self.fixed is None and user_id is not None and sticky
