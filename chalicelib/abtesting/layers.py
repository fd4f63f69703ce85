"""Layers and global holdouts: who decides which experiments may share a user.

A **layer** is a named hash space of ``LAYER_BUCKETS`` (10,000) buckets; an experiment takes a
slice ``[start, end)`` of it, and no two experiments' slices of one layer overlap (checked with a
conditional write on the layer, so two concurrent reservations cannot both succeed). A user's
bucket is a hash of the user with the layer's own salt, so each user is in at most one slice of
a layer: two experiments in one layer never see the same user.

A **holdout** is a fixed share of users (a hash with the holdout's own salt) who see only the
controls of the experiments it covers (every experiment, or those in its declared layers). An
experiment carries the holdouts that exist when it is created (so a later holdout does not move
users of a running experiment); the routing config sends them to the client.

Callers are checked by :mod:`chalicelib.abtesting.facade`, not here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from chalicelib.abtesting.errors import InvalidExperiment, SliceTaken
from chalicelib.abtesting.models import (
    LAYER_BUCKETS,
    Holdout,
    HoldoutRef,
    Layer,
    LayerSlice,
)
from chalicelib.abtesting.ports import LayerRecords
from chalicelib.abtesting.repository import LayerRepository
from chalicelib.core import references
from chalicelib.core.clock import Clock, SystemClock
from chalicelib.core.errors import Conflict, UnprocessableEntity
from chalicelib.core.events import EventBus, get_event_bus
from chalicelib.core.singleton import lazy

RESERVE_ATTEMPTS = 20
MAX_HOLDOUT_SHARE = Decimal("0.5")
MAX_HOLDOUTS = 10


def check_slice(found: LayerSlice) -> None:
    """Raises ``InvalidExperiment`` (422) unless ``0 <= start < end <= LAYER_BUCKETS``."""
    if not 0 <= found.start < found.end <= LAYER_BUCKETS:
        raise InvalidExperiment(
            f"a layer slice is [start, end) with 0 <= start < end <= {LAYER_BUCKETS}; "
            f"got [{found.start}, {found.end})"
        )


class LayerService:
    """Layers, their slices and holdouts.

    Args:
        repository: Storage of layers and holdouts (DynamoDB by default; tests pass
            :class:`~chalicelib.abtesting.memory.InMemoryLayerRepository`).
        event_bus: Lifecycle events.
        clock: Time source.
    """

    def __init__(
        self,
        repository: LayerRecords | None = None,
        event_bus: EventBus | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.repository = repository or LayerRepository()
        self.event_bus = event_bus or get_event_bus()
        self.clock = clock or SystemClock()

    # ----------------------------------------------------------------- layers

    def create_layer(
        self, name: str, description: str = "", owner: str = "", access_groups: Sequence[str] = ()
    ) -> Layer:
        """Stores a new, empty layer."""
        if not name.strip():
            raise UnprocessableEntity("name must not be empty", code="invalid_layer")
        now = self.clock.now()
        layer = Layer(
            layer_id=f"layer-{uuid.uuid4().hex[:16]}",
            name=name.strip(),
            description=description,
            owner=owner,
            access_groups=tuple(sorted(set(access_groups))),
            created_at=now,
            updated_at=now,
        )
        self.repository.create_layer(layer)
        self.event_bus.publish("LayerCreated", {"layer_id": layer.layer_id, "name": layer.name})
        return layer

    def get_layer(self, layer_id: str) -> Layer:
        """The layer (404 if unknown)."""
        return self.repository.get_layer(layer_id)

    def list_layers(self) -> list[Layer]:
        """Every layer, newest first."""
        return self.repository.list_layers()

    def set_access_groups(self, layer_id: str, access_groups: Sequence[str]) -> Layer:
        """Replaces who may see the layer (its owner stays).

        Raises:
            Referenced: An experiment readable by a group the change drops takes a slice of it
                (409; see :mod:`chalicelib.core.references`).
        """
        groups = tuple(sorted(set(access_groups)))
        dropped = set(self.repository.get_layer(layer_id).access_groups) - set(groups)
        with references.narrowing(references.Ref("layer", layer_id), dropped, _REFERRERS):
            for _ in range(RESERVE_ATTEMPTS):
                layer = self.repository.get_layer(layer_id)
                updated = self.repository.update_layer(
                    layer, self.clock.now(), access_groups=groups
                )
                if updated is not None:
                    return updated
        raise Conflict(f"layer {layer_id} kept changing; try again", code="layer_busy")

    def delete_layer(self, layer_id: str) -> None:
        """Deletes an empty layer.

        Raises:
            Conflict: An experiment takes a slice of it (409).
        """
        layer = self.repository.get_layer(layer_id)
        held = layer.held(self.clock.now())
        if held:
            taken = len(held)
            raise Conflict(
                f"layer {layer_id} has {taken} experiment slice(s); it can only be deleted empty",
                code="layer_in_use",
            )
        if not self.repository.delete_layer(layer):
            raise Conflict(f"layer {layer_id} changed while it was deleted", code="layer_in_use")
        self.event_bus.publish("LayerDeleted", {"layer_id": layer_id})

    def reserve(
        self, experiment_id: str, wanted: LayerSlice, replacing: LayerSlice | None = None
    ) -> Layer:
        """Takes ``wanted`` for an experiment (one conditional write on the layer); with
        ``replacing``, in place of that slice, which the layer must still hold for it (a
        resize; 409 ``slice_changed`` when it was released or resized meanwhile).

        Raises:
            InvalidExperiment: The slice is outside ``[0, LAYER_BUCKETS)`` or empty (422).
            LayerNotFound: No such layer.
            SliceTaken: It overlaps another experiment's slice (409; the message names the free
                ranges).
        """
        check_slice(wanted)
        for _ in range(RESERVE_ATTEMPTS):
            layer = self.repository.get_layer(wanted.layer_id)
            if replacing is not None and layer.slices.get(experiment_id) != replacing:
                raise Conflict(
                    f"the slice of experiment {experiment_id} changed meanwhile; read it again",
                    code="slice_changed",
                )
            now = self.clock.now()
            held = layer.held(now)  # a released slice's buckets after its free_at are free
            clash = [key for key, s in held.items() if key != experiment_id and s.overlaps(wanted)]
            if clash:
                free = ", ".join(f"[{a}, {b})" for a, b in layer.free(now)) or "none"
                raise SliceTaken(
                    f"buckets [{wanted.start}, {wanted.end}) of layer {wanted.layer_id} overlap "
                    f"another experiment's slice; free: {free}"
                )
            slices = {**held, experiment_id: wanted}
            updated = self.repository.update_layer(layer, self.clock.now(), slices=slices)
            if updated is not None:
                return updated
        raise Conflict(f"layer {wanted.layer_id} kept changing; try again", code="layer_busy")

    def release(self, experiment_id: str, layer_id: str) -> None:
        """Frees an experiment's slice (used when its creation failed after the reservation)."""
        for _ in range(RESERVE_ATTEMPTS):
            layer = self.repository.get_layer(layer_id)
            if experiment_id not in layer.slices:
                return
            slices = {k: v for k, v in layer.slices.items() if k != experiment_id}
            if self.repository.update_layer(layer, self.clock.now(), slices=slices) is not None:
                return
        raise Conflict(f"layer {layer_id} kept changing; try again", code="layer_busy")

    def free_later(self, experiment_id: str, layer_id: str, free_at: datetime) -> Layer:
        """Marks an experiment's slice released: its buckets stay held until ``free_at``, then
        any experiment may take them (idempotent; nothing to do for a slice already gone).

        Raises:
            Conflict: The layer kept changing (409 ``layer_busy``).
        """
        for _ in range(RESERVE_ATTEMPTS):
            layer = self.repository.get_layer(layer_id)
            found = layer.slices.get(experiment_id)
            if found is None or found.free_at is not None:
                return layer
            slices = {**layer.slices, experiment_id: replace(found, free_at=free_at)}
            updated = self.repository.update_layer(layer, self.clock.now(), slices=slices)
            if updated is not None:
                return updated
        raise Conflict(f"layer {layer_id} kept changing; try again", code="layer_busy")

    # ----------------------------------------------------------------- holdouts

    def create_holdout(
        self, name: str, share: Decimal, layer_ids: Sequence[str] = (), owner: str = ""
    ) -> Holdout:
        """Stores a holdout of ``share`` of all users (``layer_ids``: only experiments in those
        layers; empty: every experiment). Experiments created from now on carry it.

        Raises:
            UnprocessableEntity: A share outside (0, 0.5], an unknown layer, or too many
                holdouts (422).
        """
        if not isinstance(share, Decimal) or not Decimal(0) < share <= MAX_HOLDOUT_SHARE:
            raise UnprocessableEntity(
                f"a holdout's share is a decimal in (0, {MAX_HOLDOUT_SHARE}]",
                code="invalid_holdout",
            )
        if len(self.repository.list_holdouts()) >= MAX_HOLDOUTS:
            raise UnprocessableEntity(
                f"at most {MAX_HOLDOUTS} holdouts exist at once", code="invalid_holdout"
            )
        for layer_id in layer_ids:
            self.repository.get_layer(layer_id)
        holdout = Holdout(
            holdout_id=f"hold-{uuid.uuid4().hex[:16]}",
            name=name.strip(),
            share=share,
            layer_ids=tuple(sorted(set(layer_ids))),
            owner=owner,
            created_at=self.clock.now(),
        )
        self.repository.create_holdout(holdout)
        self.event_bus.publish(
            "HoldoutCreated", {"holdout_id": holdout.holdout_id, "share": str(share)}
        )
        return holdout

    def get_holdout(self, holdout_id: str) -> Holdout:
        """The holdout (404 if unknown)."""
        return self.repository.get_holdout(holdout_id)

    def list_holdouts(self) -> list[Holdout]:
        """Every holdout, oldest first."""
        return self.repository.list_holdouts()

    def delete_holdout(self, holdout_id: str) -> None:
        """Deletes a holdout: experiments created later are not covered (existing ones keep it
        until they end, so their users do not move)."""
        self.repository.delete_holdout(holdout_id)
        self.event_bus.publish("HoldoutDeleted", {"holdout_id": holdout_id})

    def holdouts_for(self, layer_id: str | None) -> tuple[HoldoutRef, ...]:
        """The holdouts that cover a new experiment in that layer (``None``: in none)."""
        return tuple(h.ref() for h in self.repository.list_holdouts() if h.covers(layer_id))


def _experiment_groups(experiment_id: str) -> list[str] | None:
    from chalicelib.abtesting.facade import access_groups_as_system

    return access_groups_as_system(experiment_id)


_REFERRERS = {"experiment": _experiment_groups}


@lazy
def get_layer_service() -> LayerService:
    """The process-wide layer service."""
    return LayerService()
