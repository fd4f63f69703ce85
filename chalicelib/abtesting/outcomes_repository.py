"""DynamoDB storage of outcomes: the dedup table and the sharded counters.

Outcomes are written with ``TransactWriteItems``: one conditional put per request id into a dedup
table plus one ``ADD`` update per (variant, phase, shard) carrying the chunk's sufficient
statistics and latency histogram, so a batch of N outcomes costs about N / 98 write requests and
an outcome is either stored and counted or neither. Segment counters (declared dimensions) live
under their own partition so the analysis query never reads them: per (variant, phase, dimension)
one *group* of items holds every value's counts, conversions, latency moments (and a custom
primary metric's moments), and each further declared metric has its own group (a custom value's
moments, or a ratio's six exact sums), so an item holds one group's attributes for at most
``max_values + 2`` values whatever the number of declared metrics.
"""

from __future__ import annotations

import decimal
import hashlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.models import Model

from chalicelib.abtesting import cuped, sketch
from chalicelib.abtesting.aggregate import PRECISION, custom_attribute, shift_of
from chalicelib.abtesting.metrics import ratio_attribute
from chalicelib.abtesting.models import Dimension, Outcome, OutcomeReceipt
from chalicelib.abtesting.segments import MISSING, OTHER, RESERVED
from chalicelib.core import aws
from chalicelib.core.errors import ServiceUnavailable
from chalicelib.core.tables import meta

# Exact arithmetic for the sums a chunk adds (the default context rounds at 28 digits).
_EXACT = decimal.Context(prec=PRECISION)
MAX_TRANSACTION_ACTIONS = 100
METRIC_SHARDS = 16
# ADD clauses per UpdateExpression: DynamoDB allows 4 KB ("#a119 :v119, " is 13 bytes); moto,
# the local stack, parses an expression recursively and fails from about 200 clauses.
MAX_CLAUSES = 120
# Segment counter attributes are "<value><SEP><counter>"; a value never holds a control character.
SEGMENT_SEPARATOR = "\x1f"
REGISTRY_KEY = "values"
# Experiments whose kept segment values an instance remembers (then it forgets them all).
KNOWN_VALUES_CACHE = 10_000
DEDUP_TTL = timedelta(days=7)
WRITE_ATTEMPTS = 8
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "TransactionInProgressException",
        "TransactionConflictException",
    }
)


class OutcomeDedupTable(Model):
    """Request ids already counted per experiment; expire after ``DEDUP_TTL``."""

    Meta = meta("OUTCOME_DEDUP_TABLE", "outcome-dedup")

    pk = UnicodeAttribute(hash_key=True)
    variant_id = UnicodeAttribute()
    expires_at = TTLAttribute()


class MetricShardTable(Model):
    """Outcome counters per (experiment, variant, shard); histogram buckets are dynamic ``h*``."""

    Meta = meta("EXPERIMENT_METRICS_TABLE", "experiment-metrics")

    experiment_id = UnicodeAttribute(hash_key=True)
    shard_key = UnicodeAttribute(range_key=True)
    request_count = NumberAttribute(default=0)


@dataclass
class _VariantDelta:
    """Increments a chunk adds to one (variant, shard) counter item."""

    counts: dict[str, int] = field(default_factory=dict)
    sums: dict[str, Decimal] = field(default_factory=dict)

    def add_count(self, name: str, amount: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + amount

    def add_sum(self, name: str, amount: Decimal) -> None:
        self.sums[name] = _EXACT.add(self.sums.get(name, Decimal(0)), amount)

    def observe(self, outcome: Outcome, cuped_metric: str | None = None) -> None:
        latency = self.observe_core(outcome)
        self.add_count(sketch.attribute_name(sketch.bucket_index(float(latency))))
        for name, raw in outcome.custom_metrics.items():
            # Shifted sums (see aggregate): d = value - shift keeps squares small and exact.
            value = Decimal(str(round(float(raw), 6)))
            shift = shift_of(value)
            delta = _EXACT.subtract(value, shift)
            self.add_count(custom_attribute(name, "n", shift))
            self.add_sum(custom_attribute(name, "s", shift), delta)
            self.add_sum(custom_attribute(name, "ss", shift), _EXACT.multiply(delta, delta))
        if outcome.covariate is not None and cuped_metric is not None:
            response = cuped.response_value(outcome, cuped_metric)
            if response is not None:
                for name, amount in cuped.outcome_sums(outcome.covariate, response).items():
                    self.add_sum(name, amount)
        for name, amount in outcome.declared.items():  # declared ratio and quantile metrics
            self.add_sum(name, amount)

    def observe_core(self, outcome: Outcome, prefix: str = "") -> Decimal:
        """Adds the counts, conversions and latency moments (names prefixed); returns the
        latency as stored."""
        self.add_count(prefix + "request_count")
        self.add_count(prefix + ("success_count" if outcome.success else "error_count"))
        if outcome.converted is not None:
            self.add_count(prefix + "conversion_trials")
            if outcome.converted:
                self.add_count(prefix + "converted_count")
        latency = Decimal(str(round(float(outcome.latency_ms), 3)))
        self.add_sum(prefix + "latency_sum", latency)
        self.add_sum(prefix + "latency_sumsq", _EXACT.multiply(latency, latency))
        return latency

    def observe_segment(self, outcome: Outcome, value: str, metric: str | None) -> None:
        """Adds an outcome to segment ``value`` of a dimension item: the core counters and,
        when ``metric`` is a custom metric it carries, that metric's moments. Its shift is
        the value's power of ten (:func:`segment_shift`), so a segment keeps at most a few
        dozen shift groups whatever the values."""
        prefix = value + SEGMENT_SEPARATOR
        self.observe_core(outcome, prefix)
        if metric is None or metric not in outcome.custom_metrics:
            return
        self.observe_segment_value(value, metric, outcome.custom_metrics[metric])

    def observe_segment_value(self, value: str, name: str, raw: float) -> None:
        """Adds one custom value's moments to segment ``value`` (shifted as
        :meth:`observe_segment`)."""
        prefix = value + SEGMENT_SEPARATOR
        number = Decimal(str(round(float(raw), 6)))
        shift = segment_shift(number)
        delta = _EXACT.subtract(number, shift)
        self.add_count(prefix + custom_attribute(name, "n", shift))
        self.add_sum(prefix + custom_attribute(name, "s", shift), delta)
        self.add_sum(prefix + custom_attribute(name, "ss", shift), _EXACT.multiply(delta, delta))

    def observe_segment_sums(self, value: str, sums: dict[str, Decimal]) -> None:
        """Adds exact sums (a declared ratio's) to segment ``value``."""
        prefix = value + SEGMENT_SEPARATOR
        for name, amount in sums.items():
            self.add_sum(prefix + name, amount)

    def names(self) -> set[str]:
        """The attributes this delta adds to."""
        return {*self.counts, *self.sums}

    def update_expression(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        """One ``ADD`` expression over every attribute (see :meth:`update_parts`)."""
        return _add_expression(list({**self.counts, **self.sums}.items()))

    def update_parts(self) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
        """``ADD`` expressions of at most :data:`MAX_CLAUSES` attributes each, so every
        ``UpdateExpression`` stays under DynamoDB's 4 KB; the parts go to distinct shards."""
        merged = list({**self.counts, **self.sums}.items())
        return [
            _add_expression(merged[start : start + MAX_CLAUSES])
            for start in range(0, len(merged), MAX_CLAUSES)
        ]


def _add_expression(items: list[tuple[str, Any]]) -> tuple[str, dict[str, str], dict[str, Any]]:
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    clauses = []
    for position, (name, amount) in enumerate(items):
        names[f"#a{position}"] = name
        # Plain notation: moto reads "1E-8" (how Decimal prints 0.0001 squared) as an integer.
        text = str(amount) if isinstance(amount, int) else format(amount, "f")
        values[f":v{position}"] = {"N": text}
        clauses.append(f"#a{position} :v{position}")
    return "ADD " + ", ".join(clauses), names, values


def segment_shift(value: Decimal) -> Decimal:
    """The shift of a segment's custom metric value: ``±10^e`` with ``10^e <= |value|``."""
    if value == 0:
        return Decimal(0)
    return Decimal(1).scaleb(value.adjusted()).copy_sign(value)


def shard_for(experiment_id: str, first_request_id: str) -> int:
    """The counter shard a chunk goes to (spreads load; any shard is correct)."""
    digest = hashlib.blake2b(f"{experiment_id}:{first_request_id}".encode(), digest_size=2)
    return int.from_bytes(digest.digest(), "big") % METRIC_SHARDS


def counter_key(outcome: Outcome) -> tuple[str, int]:
    """The (variant, allocation phase) whose counters an outcome adds to."""
    return outcome.variant_id, outcome.phase or 0


def shard_key(variant_id: str, phase: int, shard: int) -> str:
    """Range key of a counter item (phase 0 keeps the original ``<variant>#<shard>`` form)."""
    if phase:
        return f"{variant_id}#p{phase}#{shard:02d}"
    return f"{variant_id}#{shard:02d}"


def parse_shard_key(key: str) -> tuple[str, int]:
    """``(variant_id, phase)`` of a counter item's range key."""
    parts = key.split("#")
    if len(parts) == 3 and parts[1].startswith("p") and parts[1][1:].isdigit():
        return parts[0], int(parts[1][1:])
    return parts[0], 0


@dataclass(frozen=True)
class SegmentPlan:
    """What a batch counts per segment besides the variant totals.

    Attributes:
        dimensions: The experiment's declared dimensions.
        metric: A custom primary metric whose moments each segment keeps (``None``: only the
            counts, conversions and latency moments).
        sources: Further custom values whose moments each segment keeps, each in its own item
            group (the sources of declared proportion and mean metrics).
        ratios: Declared ratio metrics whose exact sums each segment keeps, each in its own
            item group.
    """

    dimensions: tuple[Dimension, ...] = ()
    metric: str | None = None
    sources: tuple[str, ...] = ()
    ratios: tuple[str, ...] = ()

    def groups(self) -> tuple[str, ...]:
        """The item groups of each dimension: ``""`` (counts, latency, the custom primary
        metric), ``m.<source>`` and ``r.<ratio>``."""
        return ("", *(f"m.{s}" for s in self.sources), *(f"r.{r}" for r in self.ratios))


def observe_group(delta: _VariantDelta, outcome: Outcome, value: str, plan: SegmentPlan,
                  group: str) -> None:  # fmt: skip
    """Adds what ``outcome`` counts in segment ``value`` of one item group to ``delta``."""
    kind, _, name = group.partition(".")
    if not group:
        delta.observe_segment(outcome, value, plan.metric)
    elif kind == "m":
        if name in outcome.custom_metrics:
            delta.observe_segment_value(value, name, outcome.custom_metrics[name])
    else:
        prefix = ratio_attribute(name, "")
        delta.observe_segment_sums(
            value, {k: v for k, v in outcome.declared.items() if k.startswith(prefix)}
        )


def segment_partition(experiment_id: str) -> str:
    """Hash key of an experiment's segment counters and kept values (apart from the totals,
    so the analysis query never reads them)."""
    return f"{experiment_id}#segments"


def segment_shard_key(
    variant_id: str, phase: int, dimension: str, shard: int, group: str = ""
) -> str:
    """Range key of a segment counter item: one per (variant, phase, dimension, item group,
    shard); the group follows the dimension after ``@`` (none for the first group)."""
    where = f"{dimension}@{group}" if group else dimension
    return f"{variant_id}#p{phase}#{where}#{shard:02d}"


def parse_segment_key(key: str) -> tuple[str, int, str, str]:
    """``(variant_id, phase, dimension, item group)`` of a segment counter item's range key."""
    variant_id, phase, where, _ = key.rsplit("#", 3)
    dimension, _, group = where.partition("@")
    return variant_id, int(phase[1:]), dimension, group


def _outcome_names(
    outcome: Outcome, plan: SegmentPlan, cuped_metric: str | None = None
) -> dict[tuple[str, ...], set[str]]:
    """The counter attributes an outcome adds to, per update key (unfolded values: folding only
    merges values, so this bounds the chunk's updates)."""
    variant_id, phase = counter_key(outcome)
    main = _VariantDelta()
    main.observe(outcome, cuped_metric)
    found: dict[tuple[str, ...], set[str]] = {(variant_id, str(phase)): main.names()}
    for dimension in plan.dimensions:
        value = outcome.attributes.get(dimension.name, MISSING)
        for group in plan.groups():
            delta = _VariantDelta()
            observe_group(delta, outcome, value, plan, group)
            found[(variant_id, str(phase), dimension.name, group)] = delta.names()
    return found


def _fits(actions: int, names: dict[tuple[str, ...], set[str]],
          added: dict[tuple[str, ...], set[str]]) -> bool:  # fmt: skip
    """Whether ``actions`` puts plus the updates of ``names`` grown by ``added`` fit one
    transaction, with no key split over more than :data:`METRIC_SHARDS` parts."""
    for key in names.keys() | added.keys():
        old = names.get(key, set())
        count = len(old) + len(added.get(key, set()) - old)
        parts = -(-count // MAX_CLAUSES)
        if parts > METRIC_SHARDS:
            return False
        actions += parts
    return actions <= MAX_TRANSACTION_ACTIONS


def chunk_outcomes(
    outcomes: list[Outcome], plan: SegmentPlan | None = None, cuped_metric: str | None = None
) -> Iterator[list[Outcome]]:
    """Splits outcomes so each chunk fits one transaction: a put per outcome, the update parts
    of each (variant, phase) and of each (variant, phase, dimension), and one update of the kept
    segment values when dimensions are declared."""
    plan = plan or SegmentPlan()
    extra = 1 if plan.dimensions else 0
    chunk: list[Outcome] = []
    names: dict[tuple[str, ...], set[str]] = {}
    for outcome in outcomes:
        added = _outcome_names(outcome, plan, cuped_metric)
        if chunk and not _fits(len(chunk) + 1 + extra, names, added):
            yield chunk
            chunk, names = [], {}
        chunk.append(outcome)
        for key, found in added.items():
            names.setdefault(key, set()).update(found)
    if chunk:
        yield chunk


def variant_deltas(
    outcomes: list[Outcome], cuped_metric: str | None = None
) -> dict[tuple[str, int], _VariantDelta]:
    """What ``outcomes`` add to each (variant, allocation phase)'s counters."""
    deltas: dict[tuple[str, int], _VariantDelta] = {}
    for outcome in outcomes:
        deltas.setdefault(counter_key(outcome), _VariantDelta()).observe(outcome, cuped_metric)
    return deltas


def segment_deltas(
    outcomes: list[Outcome], values: list[dict[str, str]], plan: SegmentPlan
) -> dict[tuple[str, int, str, str], _VariantDelta]:
    """What ``outcomes`` (with their folded ``values`` per dimension) add to each (variant,
    allocation phase, dimension, item group)'s segment counters (see :meth:`SegmentPlan.groups`;
    a group an outcome adds nothing to has an empty delta)."""
    deltas: dict[tuple[str, int, str, str], _VariantDelta] = {}
    for outcome, found in zip(outcomes, values, strict=True):
        variant_id, phase = counter_key(outcome)
        for dimension in plan.dimensions:
            for group in plan.groups():
                delta = deltas.setdefault(
                    (variant_id, phase, dimension.name, group), _VariantDelta()
                )
                observe_group(delta, outcome, found[dimension.name], plan, group)
    return deltas


def fold_segment_values(
    known: dict[str, set[str]], outcomes: list[Outcome], plan: SegmentPlan, final: bool
) -> tuple[list[dict[str, str]], dict[str, list[str]]] | None:
    """Each outcome's value per dimension after folding, and the values to keep newly.

    A dimension keeps its first ``max_values`` values (``known``: those kept so far); later
    ones count as ``(other)``. Returns ``None`` when a dimension would overflow and the kept
    values are not ``final`` (read afresh: the caller reads them and asks again).
    """
    values = [
        {d.name: o.attributes.get(d.name, MISSING) for d in plan.dimensions} for o in outcomes
    ]
    new: dict[str, list[str]] = {}
    for dimension in plan.dimensions:
        have = known.get(dimension.name, set())
        unseen = [v[dimension.name] for v in values]
        candidates = [v for v in dict.fromkeys(unseen) if v not in have and v not in RESERVED]
        room = max(dimension.max_values - len(have), 0)
        if len(candidates) > room and not final:
            return None
        kept = set(candidates[:room])
        for found in values:
            value = found[dimension.name]
            if value not in have and value not in RESERVED and value not in kept:
                found[dimension.name] = OTHER
        if kept:
            new[dimension.name] = [v for v in candidates if v in kept]
    return values, new


class OutcomeStore:
    """Idempotent, sharded outcome counters (low-level DynamoDB client for dynamic attributes).

    Args:
        client: A boto3 DynamoDB client (default: the shared one).
        sleep: Backoff sleep (tests pass a no-op).
    """

    def __init__(self, client: Any = None, sleep: Any = time.sleep) -> None:
        self._client = client
        self._sleep = sleep
        # Kept segment values per experiment and dimension, as last read or written here.
        self._known: dict[str, dict[str, set[str]]] = {}

    @property
    def client(self) -> Any:
        return self._client or aws.client("dynamodb")

    def record(
        self,
        experiment_id: str,
        outcomes: list[Outcome],
        now: datetime,
        cuped_metric: str | None = None,
        plan: SegmentPlan | None = None,
    ) -> OutcomeReceipt:
        """Counts each request id once; returns how many were new and how many were repeats.

        With ``cuped_metric``, outcomes that carry a covariate also add the CUPED sums of that
        metric (in the same counter update). With a ``plan`` declaring dimensions, each outcome
        also counts in one segment per dimension (its value, ``(missing)``, or ``(other)``
        beyond the dimension's kept values), in the same transaction.
        """
        plan = plan or SegmentPlan()
        unique: dict[str, Outcome] = {}
        for outcome in outcomes:
            unique.setdefault(outcome.request_id, outcome)
        duplicates = len(outcomes) - len(unique)
        accepted = 0
        expires = int((now + DEDUP_TTL).timestamp())
        for chunk in chunk_outcomes(list(unique.values()), plan, cuped_metric):
            stored, repeated = self._write_chunk(experiment_id, chunk, expires, cuped_metric, plan)
            accepted += stored
            duplicates += repeated
        return OutcomeReceipt(accepted=accepted, duplicates=duplicates)

    def _actions(
        self,
        experiment_id: str,
        chunk: list[Outcome],
        expires: int,
        cuped_metric: str | None = None,
        segments: tuple[SegmentPlan, list[dict[str, str]], dict[str, list[str]]] | None = None,
    ) -> list[Any]:
        dedup_table = OutcomeDedupTable.Meta.table_name
        metrics_table = MetricShardTable.Meta.table_name
        actions: list[Any] = [
            {
                "Put": {
                    "TableName": dedup_table,
                    "Item": {
                        "pk": {"S": f"{experiment_id}#{outcome.request_id}"},
                        "variant_id": {"S": outcome.variant_id},
                        "expires_at": {"N": str(expires)},
                    },
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
            for outcome in chunk
        ]
        deltas = variant_deltas(chunk, cuped_metric)
        shard = shard_for(experiment_id, chunk[0].request_id)
        if segments is not None and segments[2]:
            actions.append(self._registry_action(experiment_id, segments[0], segments[2]))
        for (variant_id, phase), delta in deltas.items():
            for offset, part in enumerate(delta.update_parts()):
                key = shard_key(variant_id, phase, (shard + offset) % METRIC_SHARDS)
                actions.append(_update(metrics_table, experiment_id, key, part))
        if segments is not None:
            actions.extend(self._segment_actions(experiment_id, chunk, segments, shard))
        return actions

    @staticmethod
    def _segment_actions(
        experiment_id: str,
        chunk: list[Outcome],
        segments: tuple[SegmentPlan, list[dict[str, str]], dict[str, list[str]]],
        shard: int,
    ) -> list[Any]:
        plan, values, _ = segments
        deltas = segment_deltas(chunk, values, plan)
        table = MetricShardTable.Meta.table_name
        partition = segment_partition(experiment_id)
        actions: list[Any] = []
        for (variant_id, phase, dimension_name, group), delta in deltas.items():
            for offset, part in enumerate(delta.update_parts()):
                shard_key = segment_shard_key(
                    variant_id, phase, dimension_name, (shard + offset) % METRIC_SHARDS, group
                )
                actions.append(_update(table, partition, shard_key, part))
        return actions

    @staticmethod
    def _registry_action(
        experiment_id: str, plan: SegmentPlan, new: dict[str, list[str]]
    ) -> dict[str, Any]:
        """Adds newly kept values to each dimension's set, on condition that no set then holds
        more than its ``max_values`` (fails when another writer filled it meanwhile)."""
        limits = {d.name: d.max_values for d in plan.dimensions}
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        adds, conditions = [], []
        for index, (dimension, found) in enumerate(sorted(new.items())):
            names[f"#d{index}"] = f"v:{dimension}"
            values[f":n{index}"] = {"SS": found}
            values[f":m{index}"] = {"N": str(limits[dimension] - len(found))}
            adds.append(f"#d{index} :n{index}")
            conditions.append(f"(attribute_not_exists(#d{index}) OR size(#d{index}) <= :m{index})")
        return {
            "Update": {
                "TableName": MetricShardTable.Meta.table_name,
                "Key": {
                    "experiment_id": {"S": segment_partition(experiment_id)},
                    "shard_key": {"S": REGISTRY_KEY},
                },
                "UpdateExpression": "ADD " + ", ".join(adds),
                "ConditionExpression": " AND ".join(conditions),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def _fold(
        self, experiment_id: str, chunk: list[Outcome], plan: SegmentPlan, fresh: bool
    ) -> tuple[list[dict[str, str]], dict[str, list[str]]] | None:
        """Each outcome's value per dimension after folding, and the values to keep newly.

        Returns ``None`` when a dimension would overflow by this instance's memory of the kept
        values and that memory is not ``fresh`` (the caller reads the stored set and asks again).
        """
        if fresh:
            self._known[experiment_id] = self._read_registry(experiment_id)
        return fold_segment_values(self._known.get(experiment_id, {}), chunk, plan, fresh)

    def _read_registry(self, experiment_id: str) -> dict[str, set[str]]:
        """The stored kept values of each dimension (one consistent read)."""
        item = self.client.get_item(
            TableName=MetricShardTable.Meta.table_name,
            Key={
                "experiment_id": {"S": segment_partition(experiment_id)},
                "shard_key": {"S": REGISTRY_KEY},
            },
            ConsistentRead=True,
        ).get("Item", {})
        return {
            name[2:]: set(value.get("SS", []))
            for name, value in item.items()
            if name.startswith("v:")
        }

    def _remember(self, experiment_id: str, new: dict[str, list[str]]) -> None:
        if len(self._known) >= KNOWN_VALUES_CACHE and experiment_id not in self._known:
            self._known.clear()
        known = self._known.setdefault(experiment_id, {})
        for dimension, values in new.items():
            known.setdefault(dimension, set()).update(values)

    def _segments(
        self, experiment_id: str, pending: list[Outcome], plan: SegmentPlan | None, fresh: bool
    ) -> tuple[tuple[SegmentPlan, list[dict[str, str]], dict[str, list[str]]] | None, bool]:
        """The folded segment values of ``pending`` (``None`` without dimensions) and whether
        the stored kept values had to be read."""
        if plan is None or not plan.dimensions:
            return None, fresh
        folded = self._fold(experiment_id, pending, plan, fresh)
        if folded is None:
            fresh = True
            folded = self._fold(experiment_id, pending, plan, fresh)
            assert folded is not None  # a fresh fold never defers
        return (plan, *folded), fresh

    def _write_chunk(
        self,
        experiment_id: str,
        chunk: list[Outcome],
        expires: int,
        cuped_metric: str | None = None,
        plan: SegmentPlan | None = None,
    ) -> tuple[int, int]:
        """Writes one chunk; drops request ids already counted and retries the rest (after
        reading the kept segment values again when another writer changed them)."""
        from botocore.exceptions import ClientError

        pending, repeated = list(chunk), 0
        fresh = False
        for attempt in range(WRITE_ATTEMPTS):
            segments, fresh = self._segments(experiment_id, pending, plan, fresh)
            try:
                self.client.transact_write_items(
                    TransactItems=self._actions(
                        experiment_id, pending, expires, cuped_metric, segments
                    )
                )
                if segments is not None:
                    self._remember(experiment_id, segments[2])
                return len(pending), repeated
            except ClientError as exc:
                seen = self._already_counted(exc, pending)
                if seen is None:
                    raise
                fresh = segments is not None and _refused_at(exc, len(pending))
                if seen:
                    repeated += len(seen)
                    pending = [o for o in pending if o.request_id not in seen]
                    if not pending:
                        return 0, repeated
                    continue
                if fresh:
                    continue
                self._sleep(min(0.05 * 2**attempt, 1.0) * random.uniform(0.5, 1.0))
        raise ServiceUnavailable("outcome counters are too contended; retry the same request ids")

    @staticmethod
    def _already_counted(exc: Any, pending: list[Outcome]) -> set[str] | None:
        """Request ids whose dedup put failed (already counted); empty set means retry all.

        Returns ``None`` for errors that are not retryable.
        """
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        if code in RETRYABLE_CODES:
            return set()
        if code != "TransactionCanceledException":
            return None
        reasons = exc.response.get("CancellationReasons") or []
        seen = {
            pending[index].request_id
            for index, reason in enumerate(reasons[: len(pending)])
            if (reason or {}).get("Code") == "ConditionalCheckFailed"
        }
        return seen

    def read(self, experiment_id: str) -> dict[str, dict[str, Any]]:
        """Every counter shard of the experiment merged per variant (all phases).

        Returns:
            ``{variant_id: {"sums": {...}, "histogram": {index: n}}}``.
        """
        merged: dict[str, dict[str, Any]] = {}
        for variants in self.read_phases(experiment_id).values():
            for variant_id, raw in variants.items():
                target = merged.setdefault(variant_id, {"sums": {}, "histogram": {}})
                for name, value in raw["sums"].items():
                    target["sums"][name] = target["sums"].get(name, Decimal(0)) + value
                for index, value in raw["histogram"].items():
                    target["histogram"][index] = target["histogram"].get(index, 0) + value
        return merged

    def read_phases(self, experiment_id: str) -> dict[int, dict[str, dict[str, Any]]]:
        """Every counter shard of the experiment merged per allocation phase and variant (one
        query, paginated).

        Returns:
            ``{phase: {variant_id: {"sums": {...}, "histogram": {index: n}}}}``.
        """
        merged: dict[int, dict[str, dict[str, Any]]] = {}
        paginator = self.client.get_paginator("query")
        pages = paginator.paginate(
            TableName=MetricShardTable.Meta.table_name,
            KeyConditionExpression="experiment_id = :e",
            ExpressionAttributeValues={":e": {"S": experiment_id}},
            ConsistentRead=True,
        )
        for page in pages:
            for item in page.get("Items", []):
                variant_id, phase = parse_shard_key(item["shard_key"]["S"])
                variants = merged.setdefault(phase, {})
                target = variants.setdefault(variant_id, {"sums": {}, "histogram": {}})
                _merge_item(target, item)
        return merged

    def read_segments(
        self, experiment_id: str
    ) -> dict[str, dict[str, dict[int, dict[str, dict[str, Any]]]]]:
        """Every segment counter of the experiment merged per dimension, value, allocation
        phase and variant (one query of the segment partition, paginated).

        Returns:
            ``{dimension: {value: {phase: {variant_id: {"sums": {...}, "histogram": {}}}}}}``.
        """
        merged: dict[str, dict[str, dict[int, dict[str, dict[str, Any]]]]] = {}
        pages = self.client.get_paginator("query").paginate(
            TableName=MetricShardTable.Meta.table_name,
            KeyConditionExpression="experiment_id = :e",
            ExpressionAttributeValues={":e": {"S": segment_partition(experiment_id)}},
            ConsistentRead=True,
        )
        for page in pages:
            for item in page.get("Items", []):
                key = item["shard_key"]["S"]
                if key == REGISTRY_KEY:
                    continue
                counters = {name: Decimal(raw["N"]) for name, raw in item.items() if "N" in raw}
                merge_segment_counters(merged, parse_segment_key(key), counters)
        return merged


def _refused_at(exc: Any, index: int) -> bool:
    """Whether the transaction's action at ``index`` (the kept-values update) failed its
    condition."""
    reasons = exc.response.get("CancellationReasons") or []
    return len(reasons) > index and (reasons[index] or {}).get("Code") == "ConditionalCheckFailed"


def _update(table: str, partition: str, key: str, part: tuple[str, Any, Any]) -> dict[str, Any]:
    expression, names, values = part
    return {
        "Update": {
            "TableName": table,
            "Key": {"experiment_id": {"S": partition}, "shard_key": {"S": key}},
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }


def _merge_item(target: dict[str, Any], item: dict[str, Any]) -> None:
    merge_counters(target, {name: Decimal(raw["N"]) for name, raw in item.items() if "N" in raw})


def merge_counters(target: dict[str, Any], counters: dict[str, Decimal]) -> None:
    """Adds a counter item's attributes to ``target`` (``{"sums": {}, "histogram": {}}``):
    latency bucket counts to the histogram, every other counter to the sums."""
    for name, value in counters.items():
        index = sketch.parse_attribute(name)
        if index is not None:
            target["histogram"][index] = target["histogram"].get(index, 0) + int(value)
        else:
            target["sums"][name] = target["sums"].get(name, Decimal(0)) + value


def merge_segment_counters(
    merged: dict[str, dict[str, dict[int, dict[str, dict[str, Any]]]]],
    key: tuple[str, int, str, str],
    counters: dict[str, Decimal],
) -> None:
    """Adds a segment counter item (``key``: variant, phase, dimension, item group; the group
    only bounds the item, merging ignores it) to ``merged``
    (``{dimension: {value: {phase: {variant_id: {"sums": {...}, "histogram": {}}}}}}``)."""
    variant_id, phase, dimension, _ = key
    values = merged.setdefault(dimension, {})
    for name, amount in counters.items():
        value, separator, counter = name.partition(SEGMENT_SEPARATOR)
        if not separator:
            continue
        phases = values.setdefault(value, {}).setdefault(phase, {})
        sums = phases.setdefault(variant_id, {"sums": {}, "histogram": {}})["sums"]
        sums[counter] = sums.get(counter, Decimal(0)) + amount


# The DynamoDB tables this module declares (listed through the repository's ``TABLES``).
TABLES = (OutcomeDedupTable, MetricShardTable)
