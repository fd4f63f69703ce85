"""HTTP routes of layers (``/layers``) and global holdouts (``/holdouts``).

Layers follow the access rule like experiments (owner, ``access_groups``; one the caller may not
read is a 404); an experiment's slice of a layer is a reference checked with its creator's
rights. Holdouts are platform-wide: admins create and delete them, every reader may list them
(each routing config they cover carries them anyway).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from chalicelib.abtesting import facade
from chalicelib.abtesting.models import Layer
from chalicelib.abtesting.schemas import (
    CreateHoldoutBody,
    CreateLayerBody,
    DeletedOut,
    HoldoutAnalysisOut,
    HoldoutAnalysisQuery,
    HoldoutList,
    HoldoutOut,
    LayerAccessBody,
    LayerList,
    LayerOut,
    SliceOut,
)
from chalicelib.core.http import ApiBlueprint, ApiResponse, RequestContext
from chalicelib.core.principal import Principal

api = ApiBlueprint(__name__, tag="layers")


def _principal(ctx: RequestContext) -> Principal:
    assert ctx.principal is not None
    return ctx.principal


def _layer_out(principal: Principal, layer: Layer) -> LayerOut:
    """A layer as the caller may see it (slices of experiments it may not read are anonymous)."""
    slices = [
        SliceOut.from_domain(s, experiment_id=shown)
        for s, shown in facade.visible_slices(principal, layer)
    ]
    return LayerOut.from_domain(layer, slices=slices)


@api.route("/layers", "POST", role="writer", body=CreateLayerBody, response=LayerOut, status=201)
def create_layer(ctx: RequestContext) -> ApiResponse:
    """Creates an empty layer (10,000 buckets) whose experiments never share a user."""
    body: CreateLayerBody = ctx.body
    principal = _principal(ctx)
    layer = facade.create_layer(principal, body.name, body.description, body.access_groups)
    return ApiResponse(_layer_out(principal, layer).body(), status=201)


@api.route("/layers", "GET", response=LayerList)
def list_layers(ctx: RequestContext) -> dict[str, Any]:
    """Lists the layers the caller may read."""
    principal = _principal(ctx)
    layers = [_layer_out(principal, x) for x in facade.list_layers(principal)]
    return LayerList.from_domain(None, layers=layers).body()


@api.route("/layers/{layer_id}", "GET", response=LayerOut)
def get_layer(ctx: RequestContext, layer_id: str) -> dict[str, Any]:
    """One layer with its taken slices and free ranges."""
    principal = _principal(ctx)
    return _layer_out(principal, facade.readable_layer(principal, layer_id)).body()


@api.route("/layers/{layer_id}/access", "PUT", role="writer", body=LayerAccessBody,
           response=LayerOut)  # fmt: skip
def set_layer_access(ctx: RequestContext, layer_id: str) -> dict[str, Any]:
    """Replace the groups that may see the layer (and place experiments in it)."""
    principal = _principal(ctx)
    layer = facade.set_layer_access(principal, layer_id, ctx.body.access_groups)
    return _layer_out(principal, layer).body()


@api.route("/layers/{layer_id}", "DELETE", role="writer", response=DeletedOut,
           responses={409: "an experiment takes a slice of the layer"})  # fmt: skip
def delete_layer(ctx: RequestContext, layer_id: str) -> dict[str, Any]:
    """Deletes an empty layer (409 while any experiment takes a slice of it)."""
    facade.delete_layer(_principal(ctx), layer_id)
    return DeletedOut.from_domain(None, id=layer_id, deleted=True).body()


@api.route("/holdouts", "POST", role="admin", body=CreateHoldoutBody, response=HoldoutOut,
           status=201)  # fmt: skip
def create_holdout(ctx: RequestContext) -> ApiResponse:
    """Creates a global holdout: that share of users sees only the controls of every experiment
    created from now on (or of those in its layers)."""
    body: CreateHoldoutBody = ctx.body
    holdout = facade.create_holdout(_principal(ctx), body.name, Decimal(body.share), body.layer_ids)
    return ApiResponse(HoldoutOut.from_domain(holdout).body(), status=201)


@api.route("/holdouts", "GET", response=HoldoutList)
def list_holdouts(ctx: RequestContext) -> dict[str, Any]:
    """Every holdout."""
    found = facade.list_holdouts(_principal(ctx))
    return HoldoutList.from_domain(None, holdouts=[HoldoutOut.from_domain(h) for h in found]).body()


@api.route("/holdouts/{holdout_id}", "GET", response=HoldoutOut)
def get_holdout(ctx: RequestContext, holdout_id: str) -> dict[str, Any]:
    """One holdout."""
    return HoldoutOut.from_domain(facade.get_holdout(_principal(ctx), holdout_id)).body()


@api.route("/holdouts/{holdout_id}", "DELETE", role="admin", response=DeletedOut)
def delete_holdout(ctx: RequestContext, holdout_id: str) -> dict[str, Any]:
    """Deletes a holdout: experiments created later are not covered; existing ones keep it."""
    facade.delete_holdout(_principal(ctx), holdout_id)
    return DeletedOut.from_domain(None, id=holdout_id, deleted=True).body()


@api.route("/holdouts/{holdout_id}/analysis", "GET", query=HoldoutAnalysisQuery,
           response=HoldoutAnalysisOut)  # fmt: skip
def holdout_analysis(ctx: RequestContext, holdout_id: str) -> dict[str, Any]:
    """The cumulative effect of shipped models: the holdout's users against the users of the
    shipped variants of the experiments it covers (those the caller may read), pooled."""
    query: HoldoutAnalysisQuery = ctx.query
    found = facade.holdout_analysis(
        _principal(ctx), holdout_id, query.metric, query.method, query.confidence_level
    )
    return HoldoutAnalysisOut.from_domain(found).body()
