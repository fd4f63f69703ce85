"""Request and response schemas of the global views and of explanations watched over time
(the routes are in :mod:`chalicelib.explainability.insights_api`); responses are built with
:func:`~chalicelib.core.shaping.shaped` from the domain results (a
:class:`~chalicelib.explainability.models.BiasReport`, the drift, permutation and partial
dependence results).

This module imports no shap, lime, scikit-learn or numpy.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from chalicelib.core.schema import Schema
from chalicelib.core.shaping import mirrored
from chalicelib.core.text import Name
from chalicelib.explainability.models import BiasReport

MAX_ROWS = 1_000
SIDE_ROWS = 50
Row = dict[str, Any]


class ModelRef(Schema):
    """A model version (``None``: the production version)."""

    model_id: str = Field(min_length=1, max_length=200)
    model_version: int | None = Field(default=None, ge=1)


class Side(ModelRef):
    """One attribution of a drift request: over ``inputs``, a ``dataset_version_id`` (its first
    rows) or, with neither, the version's baseline over its background rows."""

    inputs: list[Row] | None = Field(default=None, min_length=1, max_length=SIDE_ROWS)
    dataset_version_id: str | None = Field(default=None, max_length=200)
    max_rows: int = Field(default=SIDE_ROWS, ge=1, le=SIDE_ROWS)


class DriftBody(Schema):
    """Body of ``POST /explanations/drift``."""

    baseline: Side
    current: Side
    top_k: int = Field(default=10, ge=1, le=1000)
    threshold: float = Field(default=0.9, ge=0.0, le=1.0)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class FeatureChange(Schema):
    """One feature's attributions on both sides."""

    feature: str
    baseline: float | None
    current: float | None
    change: float | None
    baseline_rank: int | None
    current_rank: int | None


class DriftOut(Schema):
    """Clarify's NDCG between two global attributions, with per-feature changes."""

    ndcg: float
    top_k: int
    threshold: float
    drifted: bool
    baseline_top: list[str]
    current_top: list[str]
    features: list[FeatureChange]
    baseline_attribution: dict[str, float]
    current_attribution: dict[str, float]


class LabelledBody(ModelRef):
    """Inputs with their observed labels."""

    inputs: list[Row] = Field(min_length=1, max_length=MAX_ROWS)
    labels: list[Name | float | int] = Field(min_length=1, max_length=MAX_ROWS)


class BiasBody(ModelRef):
    """Body of ``POST /explanations/bias``: either ``inputs`` with their ``labels`` and
    ``facet`` values, or a ``dataset_version_id`` with its ``label_column`` and declared
    ``facet_column``. The rows whose facet value is in ``facet_values`` form Clarify's group d."""

    inputs: list[Row] | None = Field(default=None, min_length=1, max_length=MAX_ROWS)
    labels: list[Name | float | int] | None = Field(default=None, min_length=1, max_length=MAX_ROWS)
    facet: list[Name | float | int] | None = Field(default=None, min_length=1, max_length=MAX_ROWS)
    facet_name: Name = Field(default="facet", min_length=1, max_length=200)
    dataset_version_id: str | None = Field(default=None, max_length=200)
    label_column: Name | None = Field(default=None, min_length=1, max_length=200)
    facet_column: Name | None = Field(default=None, min_length=1, max_length=200)
    facet_values: list[Name | float | int] = Field(min_length=1, max_length=100)
    positive_label: Name | float | int


_BiasFields: Any = mirrored(BiasReport)


class BiasOut(_BiasFields):
    """Clarify's pre- and post-training bias metrics."""


class PermutationBody(LabelledBody):
    """Body of ``POST /explanations/permutation-importance``."""

    n_repeats: int = Field(default=5, ge=1, le=50)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class PermutationOut(Schema):
    """Mean and standard deviation of the score's drop per shuffled feature."""

    model_id: str
    model_version: int
    scoring: str
    baseline_score: float
    importances: dict[str, float]
    std: dict[str, float]
    n_repeats: int


class DependenceBody(ModelRef):
    """Body of ``POST /explanations/partial-dependence``."""

    feature: str = Field(min_length=1, max_length=200)
    inputs: list[Row] = Field(min_length=1, max_length=MAX_ROWS)
    grid_resolution: int = Field(default=20, ge=2, le=100)
    grid: list[float] | None = Field(default=None, min_length=1, max_length=100)
    class_name: str | None = Field(default=None, max_length=200)


class DependenceOut(Schema):
    """The partial dependence (``average``) and every input's ICE curve (``individual``)."""

    model_id: str
    model_version: int
    feature: str
    explained_class: str | None
    grid_values: list[float]
    average: list[float]
    individual: list[list[float]]
