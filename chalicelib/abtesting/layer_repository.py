"""DynamoDB storage of layers and holdouts (the only module that stores them).

A layer's slices live on the layer's own item, so reserving a slice is one conditional update on
the layer's ``revision``: of two experiments reaching for overlapping slices at once, exactly one
writes; the other re-reads, sees the overlap and is refused.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from pynamodb.attributes import (
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, UpdateError
from pynamodb.models import Model

from chalicelib.abtesting.errors import HoldoutNotFound, LayerNotFound
from chalicelib.abtesting.models import Holdout, Layer, LayerSlice
from chalicelib.core.errors import Conflict
from chalicelib.core.tables import meta


class LayerTable(Model):
    """One item per layer; ``slices`` is JSON ``{experiment_id: [start, end]}``."""

    Meta = meta("EXPERIMENT_LAYERS_TABLE", "experiment-layers")

    layer_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    description = UnicodeAttribute(default="")
    owner = UnicodeAttribute(default="")
    access_groups = ListAttribute(of=UnicodeAttribute, default=list)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    slices = UnicodeAttribute(default="{}")
    revision = NumberAttribute(default=0)

    def to_domain(self) -> Layer:
        """The stored layer as a domain object."""
        taken = json.loads(self.slices or "{}")
        return Layer(
            layer_id=self.layer_id,
            name=self.name,
            description=self.description or "",
            owner=self.owner or "",
            access_groups=tuple(self.access_groups or ()),
            created_at=self.created_at,
            updated_at=self.updated_at,
            slices={key: LayerSlice(self.layer_id, *bounds) for key, bounds in taken.items()},
            revision=int(self.revision or 0),
        )


class HoldoutTable(Model):
    """One item per holdout (immutable once created; deleted by an admin)."""

    Meta = meta("EXPERIMENT_HOLDOUTS_TABLE", "experiment-holdouts")

    holdout_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute()
    share = UnicodeAttribute()
    layer_ids = ListAttribute(of=UnicodeAttribute, default=list)
    owner = UnicodeAttribute(default="")
    created_at = UTCDateTimeAttribute()

    def to_domain(self) -> Holdout:
        """The stored holdout as a domain object."""
        return Holdout(
            holdout_id=self.holdout_id,
            name=self.name,
            share=Decimal(self.share),
            layer_ids=tuple(self.layer_ids or ()),
            owner=self.owner or "",
            created_at=self.created_at,
        )


def _conditional_failed(exc: Exception) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


def _slices_json(slices: dict[str, LayerSlice]) -> str:
    return json.dumps({key: [s.start, s.end] for key, s in sorted(slices.items())})


class LayerRepository:
    """Reads and writes layers and holdouts with conditional writes."""

    def create_layer(self, layer: Layer) -> None:
        """Stores a new layer (its id is new)."""
        item = LayerTable(
            layer.layer_id,
            name=layer.name,
            description=layer.description,
            owner=layer.owner,
            access_groups=list(layer.access_groups),
            created_at=layer.created_at,
            updated_at=layer.updated_at,
            slices="{}",
            revision=0,
        )
        try:
            item.save(condition=LayerTable.layer_id.does_not_exist())
        except PutError as exc:
            if _conditional_failed(exc):
                raise Conflict(f"layer {layer.layer_id} already exists") from None
            raise

    def get_layer(self, layer_id: str) -> Layer:
        """The layer (strongly consistent read).

        Raises:
            LayerNotFound: Unknown id.
        """
        try:
            return LayerTable.get(layer_id, consistent_read=True).to_domain()
        except DoesNotExist:
            raise LayerNotFound(f"layer {layer_id} does not exist") from None

    def list_layers(self) -> list[Layer]:
        """Every layer, newest first."""
        found = [item.to_domain() for item in LayerTable.scan()]
        return sorted(found, key=lambda layer: layer.created_at, reverse=True)

    def update_layer(self, layer: Layer, when: datetime, **changes: Any) -> Layer | None:
        """Writes ``changes`` (``slices``, ``access_groups``) if the layer's revision is still
        ``layer.revision``; ``None`` when another change came first."""
        actions = [
            LayerTable.updated_at.set(when),
            LayerTable.revision.set(layer.revision + 1),
        ]
        if "slices" in changes:
            actions.append(LayerTable.slices.set(_slices_json(changes["slices"])))
        if "access_groups" in changes:
            actions.append(LayerTable.access_groups.set(list(changes["access_groups"])))
        item = LayerTable(layer.layer_id)
        condition = LayerTable.layer_id.exists() & (LayerTable.revision == layer.revision)
        try:
            item.update(actions=actions, condition=condition)
        except UpdateError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return item.to_domain()

    def delete_layer(self, layer: Layer) -> bool:
        """Deletes the layer if it is unchanged since ``layer`` was read (so no slice was taken
        meanwhile); ``False`` when it changed."""
        condition = LayerTable.revision == layer.revision
        try:
            LayerTable(layer.layer_id).delete(condition=condition)
        except DeleteError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def create_holdout(self, holdout: Holdout) -> None:
        """Stores a new holdout."""
        HoldoutTable(
            holdout.holdout_id,
            name=holdout.name,
            share=str(holdout.share),
            layer_ids=list(holdout.layer_ids),
            owner=holdout.owner,
            created_at=holdout.created_at,
        ).save(condition=HoldoutTable.holdout_id.does_not_exist())

    def get_holdout(self, holdout_id: str) -> Holdout:
        """The holdout.

        Raises:
            HoldoutNotFound: Unknown id.
        """
        try:
            return HoldoutTable.get(holdout_id, consistent_read=True).to_domain()
        except DoesNotExist:
            raise HoldoutNotFound(f"holdout {holdout_id} does not exist") from None

    def list_holdouts(self) -> list[Holdout]:
        """Every holdout, oldest first (the order experiments carry them in)."""
        found = [item.to_domain() for item in HoldoutTable.scan(consistent_read=True)]
        return sorted(found, key=lambda holdout: (holdout.created_at, holdout.holdout_id))

    def delete_holdout(self, holdout_id: str) -> None:
        """Deletes a holdout (404 when unknown)."""
        try:
            HoldoutTable(holdout_id).delete(condition=HoldoutTable.holdout_id.exists())
        except DeleteError as exc:
            if _conditional_failed(exc):
                raise HoldoutNotFound(f"holdout {holdout_id} does not exist") from None
            raise


# The DynamoDB tables this module declares (listed by chalicelib.domains).
TABLES = (LayerTable, HoldoutTable)
