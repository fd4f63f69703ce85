"""A reference pins its target's access: the one rule for narrowing a referenced resource.

A resource may name another: an experiment its variants' models, a model version its background
dataset version, a usage record its experiment, a dataset version its parents and sources. Whoever
reads the referring resource is shown the target's id (and routing hands it to clients), so the
target's owner may not take the target away from them: narrowing a target's ``access_groups`` is
refused (409 ``referenced``) while a referrer readable by a group the change would drop exists,
as a foreign key refuses to delete a row still pointed at. The answer names only the kinds and the
number of referrers, never their ids or names. Narrowing the referrer first (or adding the group
back) lifts the constraint, since the referrer's groups are read when the target is narrowed.

Each reference is recorded here as a *pin* (one item per target and reference, in one partition
per target), so a narrowing finds every referrer with one strongly consistent query. Making a
reference and narrowing its target cannot interleave unseen: the maker writes its pin and then
reads the target's narrowing marker; the narrower writes that marker and then queries the pins
(Dekker's protocol over strongly consistent single-item reads). One of the two sees the other:
the narrower refuses, or the maker refuses (409 ``access_changing``) or re-checks the caller's
rights after the narrowing is done.

``core`` knows no domain: the domain that owns a target passes how to read each referrer kind's
current groups (through that kind's facade).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pynamodb.attributes import UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.exceptions import DeleteError, DoesNotExist, PutError
from pynamodb.models import Model

from chalicelib.core.clock import utc_now
from chalicelib.core.errors import Conflict
from chalicelib.core.tables import meta, string_list

#: The sort key of a target's narrowing marker (sorts after every ``kind#…`` pin).
MARKER = "~narrowing"
#: How long a narrowing marker holds before a crashed narrowing stops blocking new references.
MARKER_SECONDS = 60
#: How long a pin whose referrer does not exist (yet) still counts, with the groups it was made
#: with: a referrer being created, or one whose creation failed after its pin was written.
PENDING_SECONDS = 900

GroupsOf = Callable[[str], "Sequence[str] | None"]


class ReferenceTable(Model):
    """Pins (``target`` = ``kind#id`` of the referenced resource, ``referrer`` =
    ``kind#id#nonce``) and each target's narrowing marker (``referrer`` = :data:`MARKER`)."""

    class Meta(meta("REFERENCES_TABLE", "references")):  # type: ignore[misc]
        # Granted apart from core's event outbox: only the API makes and checks references.
        grant_domain = "references"

    target = UnicodeAttribute(hash_key=True)
    referrer = UnicodeAttribute(range_key=True)
    groups = string_list()
    made_at = UTCDateTimeAttribute()
    until = UTCDateTimeAttribute(null=True)


TABLES = (ReferenceTable,)


@dataclass(frozen=True, order=True)
class Ref:
    """A resource by kind (``model``, ``dataset``, ``experiment``) and id."""

    kind: str
    id: str

    @property
    def key(self) -> str:
        """``kind#id``."""
        return f"{self.kind}#{self.id}"


class AccessChanging(Conflict):
    """The target's access is being changed right now (409): retry."""

    code = "access_changing"


class Referenced(Conflict):
    """Narrowing would hide the target from readers of resources that refer to it (409)."""

    code = "referenced"


@dataclass
class Referring:
    """The pins held while a referrer is made; :meth:`bind` names a referrer created with them.

    Attributes:
        kind: The referrer's kind.
        groups: The referrer's groups when it is made.
        nonce: Distinguishes this reference from others by the same referrer.
        referrer_id: The referrer's id (``""`` until :meth:`bind` when it has none yet).
        targets: The targets pinned so far.
    """

    kind: str
    groups: list[str]
    nonce: str
    referrer_id: str = ""
    targets: list[Ref] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The pins' sort key."""
        return f"{self.kind}#{self.referrer_id}#{self.nonce}"

    def bind(self, referrer_id: str) -> None:
        """Moves the pins of a referrer made without an id to its id (the pending pins stay until
        the named ones are written, so no narrowing can slip between)."""
        pending = self.key
        self.referrer_id = referrer_id
        for target in self.targets:
            _put(target, self.key, self.groups)
        for target in self.targets:
            _delete(target, pending)


@contextmanager
def referring(
    targets: Iterable[Ref], kind: str, groups: Sequence[str], referrer_id: str = ""
) -> Iterator[Referring]:
    """Pins ``targets`` for a referrer being made; the pins are removed if the block raises.

    Check the caller's rights to every target *inside* the block (after the pins are written):
    a narrowing that finished before the pins sees none of them, and the check then sees its
    result.

    Args:
        targets: What the referrer names.
        kind: The referrer's kind.
        groups: The referrer's groups.
        referrer_id: The referrer's id, or ``""`` when it gets one only when stored (then call
            :meth:`Referring.bind` with it).

    Raises:
        AccessChanging: A target is being narrowed right now.
    """
    held = Referring(kind, sorted(set(groups)), uuid.uuid4().hex, referrer_id)
    try:
        for target in sorted(set(targets)):
            _put(target, held.key, held.groups)
            held.targets.append(target)
            if _marker_active(target):
                raise AccessChanging(
                    f"who may see this {target.kind} is being changed right now; try again"
                )
        yield held
    except BaseException:
        for target in held.targets:
            _delete(target, held.key)
        raise


@contextmanager
def narrowing(
    target: Ref, dropped: Iterable[str], groups_of: Mapping[str, GroupsOf]
) -> Iterator[None]:
    """Holds the target's narrowing marker while its groups change, after checking its pins.

    Args:
        target: The resource whose access changes.
        dropped: The groups the change removes (nothing to check when empty).
        groups_of: For each referrer kind, its current groups by id (``None`` if it is gone).

    Raises:
        AccessChanging: Another change of the target's access is under way.
        Referenced: A referrer readable by a dropped group exists (kinds and counts only).
    """
    removed = {group for group in dropped if group}
    if not removed:
        yield
        return
    _claim(target)
    try:
        blocking = _blocking(target, removed, groups_of)
        if blocking:
            raise Referenced(_refusal(target, blocking))
        yield
    finally:
        _delete(target, MARKER)


def _refusal(target: Ref, blocking: Mapping[str, tuple[set[str], set[str]]]) -> str:
    groups = sorted(set().union(*(hit for _, hit in blocking.values())))
    counts = ", ".join(
        f"{len(referrers)} {kind}{'' if len(referrers) == 1 else 's'}"
        for kind, (referrers, _) in sorted(blocking.items())
    )
    verb = "refers" if sum(len(referrers) for referrers, _ in blocking.values()) == 1 else "refer"
    return (
        f"this {target.kind} cannot stop being visible to group(s) {', '.join(groups)}: "
        f"{counts} readable by those groups {verb} to it; narrow those first or keep the groups"
    )


def _blocking(
    target: Ref, removed: set[str], groups_of: Mapping[str, GroupsOf]
) -> dict[str, tuple[set[str], set[str]]]:
    """Per referrer kind: the referrers (and the removed groups they are readable by) that
    forbid the change."""
    found: dict[str, tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
    now = utc_now()
    for pin in ReferenceTable.query(target.key, consistent_read=True):
        if pin.referrer == MARKER:
            continue
        kind, _, rest = pin.referrer.partition("#")
        referrer_id, _, nonce = rest.rpartition("#")
        groups = _current_groups(pin, kind, referrer_id, groups_of, now)
        hit = removed & set(groups or ())
        if hit:
            found[kind][0].add(referrer_id or nonce)
            found[kind][1].update(hit)
    return dict(found)


def _current_groups(
    pin: ReferenceTable,
    kind: str,
    referrer_id: str,
    groups_of: Mapping[str, GroupsOf],
    now: datetime,
) -> Sequence[str] | None:
    """The referrer's groups now; while it does not exist (being made), those it was pinned
    with, for :data:`PENDING_SECONDS`."""
    lookup = groups_of.get(kind)
    current = lookup(referrer_id) if referrer_id and lookup is not None else None
    if current is not None:
        return current
    if lookup is None and referrer_id:
        return list(pin.groups)  # a kind this target's domain cannot read: keep it pinned
    if now - pin.made_at < timedelta(seconds=PENDING_SECONDS):
        return list(pin.groups)
    return None


def _put(target: Ref, referrer: str, groups: Sequence[str]) -> None:
    ReferenceTable(target.key, referrer, groups=list(groups), made_at=utc_now()).save()


def _delete(target: Ref, referrer: str) -> None:
    with suppress(DeleteError):  # a lost delete leaves a pin that only over-protects
        ReferenceTable(target.key, referrer).delete()


def _marker_active(target: Ref) -> bool:
    try:
        marker = ReferenceTable.get(target.key, MARKER, consistent_read=True)
    except DoesNotExist:
        return False
    return marker.until is not None and marker.until > utc_now()


def _claim(target: Ref) -> None:
    now = utc_now()
    marker = ReferenceTable(
        target.key, MARKER, made_at=now, until=now + timedelta(seconds=MARKER_SECONDS)
    )
    try:
        marker.save(
            condition=ReferenceTable.referrer.does_not_exist() | (ReferenceTable.until < now)
        )
    except PutError as exc:
        if getattr(exc, "cause_response_code", "") != "ConditionalCheckFailedException":
            raise
        raise AccessChanging(
            f"who may see this {target.kind} is being changed right now; try again"
        ) from None
