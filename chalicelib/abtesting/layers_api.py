"""HTTP routes of layers (``/layers``) and global holdouts (``/holdouts``).

Layers follow the access rule like experiments (owner, ``access_groups``; one the caller may not
read is a 404); an experiment's slice of a layer is a reference checked with its creator's
rights. Holdouts are platform-wide: admins create and delete them, every reader may list them
(each routing config they cover carries them anyway).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.abtesting import facade
from chalicelib.abtesting.models import Holdout, Layer
from chalicelib.core.http import ApiBlueprint, ApiResponse, RequestContext
from chalicelib.core.principal import Principal
from chalicelib.core.text import Name, Text

api = ApiBlueprint(__name__, tag="layers")

SHARE_TEXT = r"^[0](\.[0-9]{1,6})?$"  # a number: 0, or 0. and up to 6 digits


def _principal(ctx: RequestContext) -> Principal:
    assert ctx.principal is not None
    return ctx.principal


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Groups = list[Annotated[Name, Field(min_length=1, max_length=200)]]


class CreateLayerBody(_Strict):
    """Body of ``POST /layers``."""

    name: Name = Field(min_length=1, max_length=200)
    description: Text = Field(default="", max_length=2000)
    access_groups: Groups | None = Field(
        default=None, max_length=50, description="who may see it; default: the caller's groups"
    )


class LayerAccessBody(_Strict):
    """Body of ``PUT /layers/{id}/access``."""

    access_groups: Groups = Field(max_length=50)


class SliceOut(BaseModel):
    """A taken slice; ``experiment_id`` is ``null`` when the caller may not read it."""

    start: int
    end: int
    experiment_id: str | None


class LayerOut(BaseModel):
    """A layer: its taken slices and its free bucket ranges (of 10,000)."""

    layer_id: str
    name: str
    description: str
    owner: str
    access_groups: list[str]
    created_at: datetime
    updated_at: datetime
    buckets: int
    slices: list[SliceOut]
    free: list[list[int]]
    revision: int


class LayerList(BaseModel):
    """Layers, newest first."""

    layers: list[LayerOut]


class DeletedOut(BaseModel):
    """What a deletion removed."""

    id: str
    deleted: bool


class CreateHoldoutBody(_Strict):
    """Body of ``POST /holdouts``."""

    name: Name = Field(min_length=1, max_length=200)
    share: str = Field(pattern=SHARE_TEXT, description='share of all users, e.g. "0.05" (<= 0.5)')
    layer_ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=20, description="only these layers' experiments; [] all"
    )


class HoldoutOut(BaseModel):
    """A holdout: its share, salt and scope."""

    holdout_id: str
    name: str
    share: str
    salt: str
    layer_ids: list[str]
    owner: str
    created_at: datetime


class HoldoutList(BaseModel):
    """Holdouts, oldest first."""

    holdouts: list[HoldoutOut]


def layer_out(principal: Principal, layer: Layer) -> dict[str, Any]:
    """The JSON shape of a layer as the caller may see it."""
    from chalicelib.abtesting.models import LAYER_BUCKETS

    return {
        "layer_id": layer.layer_id,
        "name": layer.name,
        "description": layer.description,
        "owner": layer.owner,
        "access_groups": list(layer.access_groups),
        "created_at": layer.created_at,
        "updated_at": layer.updated_at,
        "buckets": LAYER_BUCKETS,
        "slices": [
            {"start": s.start, "end": s.end, "experiment_id": shown}
            for s, shown in facade.visible_slices(principal, layer)
        ],
        "free": [list(pair) for pair in layer.free()],
        "revision": layer.revision,
    }


def holdout_out(holdout: Holdout) -> dict[str, Any]:
    """The JSON shape of a holdout."""
    return {
        "holdout_id": holdout.holdout_id,
        "name": holdout.name,
        "share": str(holdout.share),
        "salt": holdout.ref().salt,
        "layer_ids": list(holdout.layer_ids),
        "owner": holdout.owner,
        "created_at": holdout.created_at,
    }


@api.route("/layers", "POST", role="writer", body=CreateLayerBody, response=LayerOut, status=201)
def create_layer(ctx: RequestContext) -> ApiResponse:
    """Creates an empty layer (10,000 buckets) whose experiments never share a user."""
    body: CreateLayerBody = ctx.body
    principal = _principal(ctx)
    layer = facade.create_layer(principal, body.name, body.description, body.access_groups)
    return ApiResponse(layer_out(principal, layer), status=201)


@api.route("/layers", "GET", response=LayerList)
def list_layers(ctx: RequestContext) -> dict[str, Any]:
    """Lists the layers the caller may read."""
    principal = _principal(ctx)
    return {"layers": [layer_out(principal, x) for x in facade.list_layers(principal)]}


@api.route("/layers/{layer_id}", "GET", response=LayerOut)
def get_layer(ctx: RequestContext, layer_id: str) -> dict[str, Any]:
    """One layer with its taken slices and free ranges."""
    principal = _principal(ctx)
    return layer_out(principal, facade.readable_layer(principal, layer_id))


@api.route("/layers/{layer_id}/access", "PUT", role="writer", body=LayerAccessBody,
           response=LayerOut)  # fmt: skip
def set_layer_access(ctx: RequestContext, layer_id: str) -> dict[str, Any]:
    """Replace the groups that may see the layer (and place experiments in it)."""
    principal = _principal(ctx)
    return layer_out(
        principal, facade.set_layer_access(principal, layer_id, ctx.body.access_groups)
    )


@api.route("/layers/{layer_id}", "DELETE", role="writer", response=DeletedOut,
           responses={409: "an experiment takes a slice of the layer"})  # fmt: skip
def delete_layer(ctx: RequestContext, layer_id: str) -> dict[str, Any]:
    """Deletes an empty layer (409 while any experiment takes a slice of it)."""
    facade.delete_layer(_principal(ctx), layer_id)
    return {"id": layer_id, "deleted": True}


@api.route("/holdouts", "POST", role="admin", body=CreateHoldoutBody, response=HoldoutOut,
           status=201)  # fmt: skip
def create_holdout(ctx: RequestContext) -> ApiResponse:
    """Creates a global holdout: that share of users sees only the controls of every experiment
    created from now on (or of those in its layers)."""
    body: CreateHoldoutBody = ctx.body
    holdout = facade.create_holdout(_principal(ctx), body.name, Decimal(body.share), body.layer_ids)
    return ApiResponse(holdout_out(holdout), status=201)


@api.route("/holdouts", "GET", response=HoldoutList)
def list_holdouts(ctx: RequestContext) -> dict[str, Any]:
    """Every holdout."""
    return {"holdouts": [holdout_out(h) for h in facade.list_holdouts(_principal(ctx))]}


@api.route("/holdouts/{holdout_id}", "GET", response=HoldoutOut)
def get_holdout(ctx: RequestContext, holdout_id: str) -> dict[str, Any]:
    """One holdout."""
    return holdout_out(facade.get_holdout(_principal(ctx), holdout_id))


@api.route("/holdouts/{holdout_id}", "DELETE", role="admin", response=DeletedOut)
def delete_holdout(ctx: RequestContext, holdout_id: str) -> dict[str, Any]:
    """Deletes a holdout: experiments created later are not covered; existing ones keep it."""
    facade.delete_holdout(_principal(ctx), holdout_id)
    return {"id": holdout_id, "deleted": True}
