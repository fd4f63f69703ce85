"""Explainability domain: explanation types, requests and results.

Every result is a plain dataclass with ``to_dict``/``from_dict`` so it can be cached (JSON) and
returned over HTTP unchanged.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar, Self

from chalicelib.core.clock import parse_iso, utc_now


class ExplanationType(str, Enum):
    """How a prediction is explained. Only ``shap`` and ``lime`` are implemented."""

    SHAP = "shap"
    LIME = "lime"
    INTEGRATED_GRADIENTS = "integrated_gradients"
    ATTENTION = "attention"


IMPLEMENTED_TYPES = (ExplanationType.SHAP, ExplanationType.LIME)

# Inputs answered synchronously by batch/global/dependence; more become a job (202).
SYNC_ROW_LIMIT = 50
# Inputs accepted in one request (also the rows read from a dataset version).
MAX_JOB_ROWS = 10_000


class AggregationMethod(str, Enum):
    """How per-prediction contributions become one global importance per feature.

    Every method works on absolute contributions: ``mean`` (mean |phi|, the usual SHAP global
    importance), ``median``, ``max`` and ``percentile_95`` (linear interpolation).
    """

    MEAN = "mean"
    MEDIAN = "median"
    MAX = "max"
    PERCENTILE_95 = "percentile_95"


class InputKind(str, Enum):
    """What kind of input is explained."""

    TABULAR = "tabular"
    TEXT = "text"
    IMAGE = "image"


class OutputSpace(str, Enum):
    """The space contributions are reported in; additivity holds in this space."""

    PROBABILITY = "probability"
    LOG_ODDS = "log_odds"
    MARGIN = "margin"
    RAW = "raw"


@dataclass(slots=True)
class FeatureContribution:
    """One feature's share of a prediction.

    Attributes:
        feature_name: Feature (tabular), word (text) or ``segment_<n>`` (image).
        feature_value: The input value of that feature (a word, a segment id).
        contribution: Signed contribution in the explanation's output space.
        condition: LIME's discretized condition (``"age <= 30.00"``), when there is one.
    """

    feature_name: str
    feature_value: Any
    contribution: float
    condition: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``dataclasses.asdict``'s result, built directly)."""
        return {
            "feature_name": self.feature_name,
            "feature_value": json_copy(self.feature_value),
            "contribution": self.contribution,
            "condition": self.condition,
        }


@dataclass
class PredictionExplanation:
    """The explanation of one prediction.

    Attributes:
        explanation_id: Unique id.
        prediction_id: The caller's id for the prediction, if any.
        model_id: Explained model.
        model_version: Explained version.
        explanation_type: ``shap`` or ``lime``.
        input_kind: ``tabular``, ``text`` or ``image``.
        algorithm: The algorithm used (``tree``, ``linear``, ``exact``, ``kernel``,
            ``partition`` (SHAP on text and image), ``lime_tabular``, ``lime_text``,
            ``lime_image``).
        output_space: Where contributions live (``probability``, ``log_odds``, ``margin``, ``raw``).
        explained_class: The class explained (classifiers), else ``None``.
        base_prediction: Expected value (SHAP) or surrogate intercept (LIME).
        actual_prediction: The model's output for the input in ``output_space``.
        feature_contributions: Every contribution, largest absolute first.
        top_positive_features: Names of the largest positive contributions (up to 5).
        top_negative_features: Names of the most negative contributions (up to 5).
        additivity_error: |base + sum(contributions) - actual| (SHAP only).
        local_fidelity: The LIME surrogate's R² on its perturbed samples (LIME only).
        local_prediction: The LIME surrogate's prediction for the input (LIME only).
        interactions: Pairwise SHAP interaction values, when asked (tree models).
        segments: The image segment map (rows of segment ids), for image explanations.
        parameters: The result-changing parameters used (seed, samples, background size...).
        created_at: When it was computed (UTC).
        computation_time_ms: Time to compute it (not to fetch it from the cache).
        cached: Whether this answer came from the cache.
    """

    explanation_id: str
    prediction_id: str | None
    model_id: str
    model_version: int
    explanation_type: str
    input_kind: str
    algorithm: str
    output_space: str
    explained_class: str | None
    base_prediction: float
    actual_prediction: float
    feature_contributions: list[FeatureContribution]
    top_positive_features: list[str]
    top_negative_features: list[str]
    additivity_error: float | None = None
    local_fidelity: float | None = None
    local_prediction: float | None = None
    interactions: dict[str, Any] | None = None
    segments: list[list[int]] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utc_now)
    computation_time_ms: float = 0.0
    cached: bool = False

    def contribution_map(self) -> dict[str, float]:
        """Feature name → contribution."""
        return {c.feature_name: c.contribution for c in self.feature_contributions}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO text): what ``dataclasses.asdict`` gives (fresh
        containers all the way down), built field by field; asdict's generic deep copy cost
        more than computing the explanation (about 0.6 s for a 1,000-row TreeSHAP batch)."""
        data = {
            name: None if name in _BUILT_APART else json_copy(getattr(self, name))
            for name in _EXPLANATION_FIELDS  # asdict's key order
        }
        data["feature_contributions"] = [c.to_dict() for c in self.feature_contributions]
        data["created_at"] = self.created_at.isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PredictionExplanation:
        """Rebuilds an explanation from :meth:`to_dict` output."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["feature_contributions"] = [
            FeatureContribution(**item) for item in data.get("feature_contributions", [])
        ]
        values["created_at"] = parse_iso(data["created_at"])
        return cls(**values)


_EXPLANATION_FIELDS = tuple(f.name for f in fields(PredictionExplanation))
_BUILT_APART = frozenset({"feature_contributions", "created_at"})
_ATOMS = (str, int, float, bool, type(None))


def json_copy(value: Any) -> Any:
    """A copy of a JSON-like value as ``dataclasses.asdict`` copies a field: dicts, lists and
    tuples rebuilt, immutable scalars kept, anything else deep-copied."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is list:
        return [json_copy(item) for item in value]
    if kind is dict:
        return {json_copy(key): json_copy(item) for key, item in value.items()}
    if kind is tuple:
        return tuple(json_copy(item) for item in value)
    return deepcopy(value)


@dataclass
class GlobalExplanation:
    """Global feature importance aggregated over many explanations.

    Attributes:
        model_id: Explained model.
        model_version: Explained version.
        explanation_type: ``shap`` or ``lime``.
        aggregation_method: How contributions were aggregated.
        feature_importances: Feature → importance, most important first.
        n_explanations: How many explanations were aggregated.
        stability: Output of ``FeatureImportanceAggregator.compute_stability``.
        interactions: Output of ``detect_feature_interactions``.
        output_space: Output space of the underlying contributions.
        created_at: When it was computed (UTC).
        computation_time_ms: Time to compute it.
    """

    model_id: str
    model_version: int
    explanation_type: str
    aggregation_method: str
    feature_importances: dict[str, float]
    n_explanations: int
    stability: dict[str, Any]
    interactions: list[dict[str, Any]]
    output_space: str
    created_at: datetime = field(default_factory=utc_now)
    computation_time_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


@dataclass(kw_only=True)
class ExplainOptions:
    """The parameters every explanation request may set (each engine reads its own).

    Attributes:
        background_sample_size: Background rows used (summarized when the background is larger).
        include_interactions: Pairwise interaction values (tree SHAP only).
        class_name: Class to explain (default: the predicted class).
        num_samples: LIME perturbation samples.
        num_features: LIME features/words/segments reported (default: all tabular features,
            10 words or segments).
        seed: Random seed (LIME sampling, background subsampling).
        algorithm: Force a SHAP algorithm (``auto``, ``tree``, ``linear``, ``exact``, ``kernel``).
        background_method: ``kmeans`` or ``random`` summary of a large background.
        segmentation: Image segmentation (``slic``, ``quickshift``, ``felzenszwalb``).
        n_segments: Superpixels wanted from ``slic``.
        max_evals: Model evaluations of SHAP's Partition explainer (text and image models).
        hide_color: Value of switched-off superpixels in image LIME and SHAP (``None``: the
            image mean).
        asynchronous: Run it as a job (202) even if it would fit the synchronous limit.
    """

    background_sample_size: int = 100
    include_interactions: bool = False
    class_name: str | None = None
    num_samples: int = 5000
    num_features: int | None = None
    seed: int = 0
    algorithm: str = "auto"
    background_method: str = "kmeans"
    segmentation: str = "slic"
    n_segments: int = 25
    max_evals: int = 500
    hide_color: float | None = None
    asynchronous: bool = False


@dataclass
class ExplanationQuery(ExplainOptions):
    """What every explanation request names: the model, its version and the method.

    A request travels as this typed object from the route to the engines; it becomes a dict
    only at the Lambda and job boundary (:meth:`to_dict`, parsed back by :func:`parse_request`).

    Attributes:
        model_id: Model to explain.
        model_version: Version; ``None`` means the production version.
        explanation_type: ``shap`` or ``lime``.
    """

    operation: ClassVar[str] = ""

    model_id: str
    model_version: int | None = None
    explanation_type: ExplanationType = ExplanationType.SHAP

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for job payloads and the Lambda backend): what
        ``dataclasses.asdict`` gives, built field by field with :func:`json_copy`; asdict's
        generic deep copy of a 512×512 image's nested lists cost about 0.2 s a call."""
        data = {f.name: json_copy(getattr(self, f.name)) for f in fields(self)}
        data["explanation_type"] = self.explanation_type.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Rebuilds a request from :meth:`to_dict` output (unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["explanation_type"] = ExplanationType(values.get("explanation_type") or "shap")
        return cls(**values)

    def pinned(self, version: int) -> Self:
        """The same request for a resolved model version."""
        return replace(self, model_version=version)

    def explained_inputs(self) -> list[Any]:
        """The inputs the request explains (``[]`` when they come from a dataset version)."""
        return []

    def dataset_version(self) -> str | None:
        """The dataset version the request reads its inputs from, if any."""
        return None

    @property
    def method(self) -> str:
        """``shap`` or ``lime``: the method whose work the request costs."""
        return self.explanation_type.value


@dataclass
class ExplanationRequest(ExplanationQuery):
    """Everything that decides one explanation (``POST /explanations``).

    Attributes:
        input_data: Feature → value (tabular), or ``{"text": ...}`` / ``{"image": ...}``.
        prediction_id: The caller's id for the prediction.
    """

    operation: ClassVar[str] = "explain"

    input_data: dict[str, Any] = field(default_factory=dict)
    prediction_id: str | None = None

    def explained_inputs(self) -> list[Any]:
        """The one input explained."""
        return [self.input_data or {}]


@dataclass
class BatchRequest(ExplanationQuery):
    """Many predictions explained with one explainer (``POST /explanations/batch``).

    Attributes:
        inputs: The inputs, each as ``input_data`` of a single request.
        prediction_ids: The caller's id per input (``None``: none).
    """

    operation: ClassVar[str] = "batch"

    inputs: list[Any] = field(default_factory=list)
    prediction_ids: list[str | None] | None = None

    def explained_inputs(self) -> list[Any]:
        """The inputs."""
        return list(self.inputs)


@dataclass
class GlobalRequest(ExplanationQuery):
    """Global importance over sample inputs or a dataset version (``POST /explanations/global``).

    Attributes:
        inputs: Sample inputs (or ``dataset_version_id``).
        dataset_version_id: A dataset version whose rows are explained (always a job).
        aggregation_method: ``mean``, ``median``, ``max`` or ``percentile_95`` of |contribution|.
        top_k: Features in the stability measure.
        interaction_threshold: Correlation above which two features are reported together.
        prediction_bins: Edges of prediction ranges to segment importances by.
    """

    operation: ClassVar[str] = "global"

    inputs: list[Any] | None = None
    dataset_version_id: str | None = None
    aggregation_method: str = "mean"
    top_k: int = 5
    interaction_threshold: float = 0.5
    prediction_bins: list[float] | None = None

    def explained_inputs(self) -> list[Any]:
        """The sample inputs (``[]`` for a dataset version)."""
        return list(self.inputs or [])

    def dataset_version(self) -> str | None:
        """``dataset_version_id``."""
        return self.dataset_version_id


@dataclass
class DependenceRequest(ExplanationQuery):
    """SHAP dependence-plot data for one feature (``POST /explanations/dependence``).

    Attributes:
        feature: The feature plotted.
        interaction_feature: The feature colouring the plot (``auto``: the strongest
            interaction; ``None``: none).
        inputs: Sample inputs (or ``dataset_version_id``).
        dataset_version_id: A dataset version whose rows are explained (always a job).
    """

    operation: ClassVar[str] = "dependence"

    feature: str = ""
    interaction_feature: str | None = "auto"
    inputs: list[Any] | None = None
    dataset_version_id: str | None = None

    def explained_inputs(self) -> list[Any]:
        """The sample inputs (``[]`` for a dataset version)."""
        return list(self.inputs or [])

    def dataset_version(self) -> str | None:
        """``dataset_version_id``."""
        return self.dataset_version_id

    @property
    def method(self) -> str:
        """Always ``shap``."""
        return ExplanationType.SHAP.value


AnyRequest = ExplanationRequest | BatchRequest | GlobalRequest | DependenceRequest
REQUEST_TYPES: dict[str, type[ExplanationQuery]] = {
    kind.operation: kind
    for kind in (ExplanationRequest, BatchRequest, GlobalRequest, DependenceRequest)
}


def parse_request(operation: str, data: dict[str, Any]) -> ExplanationQuery:
    """The typed request an operation's serialised payload (a job's, the Lambda event's) holds.

    Raises:
        ValidationError: An unknown operation, or a payload that is not a request of it.
    """
    from chalicelib.core.errors import ValidationError

    kind = REQUEST_TYPES.get(operation)
    if kind is None:
        raise ValidationError(f"unknown operation '{operation}'")
    try:
        return kind.from_dict(data)
    except (TypeError, ValueError) as error:
        raise ValidationError(f"malformed {operation} request: {error}") from None


@dataclass
class PlanRequest:
    """A request to estimate (the ``plan`` operation sent to the explanation function).

    Attributes:
        request: The request whose cost is measured.
    """

    request: ExplanationQuery

    def to_dict(self) -> dict[str, Any]:
        """``{"operation", "request"}``, JSON-ready."""
        return {"operation": self.request.operation, "request": self.request.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanRequest:
        """Rebuilds it from :meth:`to_dict` output."""
        return cls(parse_request(str(data.get("operation")), dict(data.get("request") or {})))


@dataclass
class Submitted:
    """A request that became an asynchronous job.

    Attributes:
        job: The stored job record.
        estimated_seconds: The request's estimated cost, when it was estimated.
    """

    job: Any
    estimated_seconds: float | None = None


@dataclass
class BiasReport:
    """Clarify's pre- and post-training bias metrics for one facet.

    Attributes:
        facet: The facet column; ``facet_values``: the values forming group ``d``.
        counts: Rows in ``a`` and ``d``.
        pre_training: ``CI`` and ``DPL``.
        post_training: ``DPPL``, ``DI`` and ``EOD`` (absent without predictions).
        undefined: Metrics that are ``None`` and why.
    """

    facet: str
    facet_values: list[Any]
    counts: dict[str, int]
    pre_training: dict[str, float | None]
    post_training: dict[str, float | None] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return dict(self.__dict__)
