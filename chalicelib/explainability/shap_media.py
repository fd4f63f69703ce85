"""SHAP explanations of text and image classifiers (shap's Partition explainer).

* Text: ``shap.maskers.Text`` with the regex tokenizer ``\\W+`` (no transformers): each token is
  a word and the separators after it; a masked token is removed (shap's ``...`` mask token,
  consecutive masks collapsed). The model gets the masked strings (e.g. a TF-IDF + classifier
  pipeline). Occurrences of the same word are summed into one contribution, like LIME's bag of
  words, so the contributions still add up.
* Image: the features are the superpixels LIME uses (the same segmentation function on the same
  RGB view of the image, so ``segment_<id>`` means the same thing for both methods). A masked
  superpixel is filled with ``hide_color`` (default: the image's mean value, per channel for
  RGB). Segments are grouped for the partition by a Ward clustering of their centroids, so
  neighbouring superpixels are split last.

The Partition explainer computes Owen values over that hierarchy with at most ``max_evals``
model evaluations; they are exactly additive whatever the budget: ``base_prediction`` (every
feature masked) + sum of contributions = ``actual_prediction`` (the model's probability for the
explained class), so ``additivity_error`` is floating-point noise. The algorithm has no random
step, so every call gives the same values; ``seed`` is accepted and recorded in ``parameters``
(and in the cache key) for symmetry with the other methods. shap, scipy and
scikit-image are imported on first use only. shap's partition code is compiled by numba on its
first call in a process (about 3 s).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.core.errors import ValidationError
from chalicelib.explainability.base import ExplainerBase, class_index, class_labels, require
from chalicelib.explainability.budget import checkpoint, guarded
from chalicelib.explainability.inputs import image_input, text_input
from chalicelib.explainability.jit_cache import import_shap
from chalicelib.explainability.loading import LoadedModel, ModelDescriptor
from chalicelib.explainability.models import (
    FeatureContribution,
    OutputSpace,
    PredictionExplanation,
)
from chalicelib.explainability.superpixels import hidden_value, image_options, image_segments

DEFAULT_MAX_EVALS = 500
MIN_MAX_EVALS = 10
MAX_MAX_EVALS = 10_000
TOKEN_PATTERN = r"\W+"
# Pixel values built per model call when masked images are evaluated (bounds memory).
_CHUNK_VALUES = 4_000_000
_EDGES = re.compile(r"^\W+|\W+$")
# Set once shap's Partition explainer has run in this process (numba has compiled it).
_COMPILED = threading.Event()


def partition_compiled() -> bool:
    """Whether this process has already paid the Partition explainer's numba compilation."""
    return _COMPILED.is_set()


@dataclass(frozen=True)
class MediaShapOptions:
    """Parameters that change a text/image SHAP result (the relevant ones are the cache key).

    Attributes:
        max_evals: Model evaluations the Partition explainer may spend.
        class_name: Class to explain (default: the predicted class).
        seed: Recorded only (the partition algorithm is deterministic; the segmentation uses it
            for ``quickshift``, as LIME does).
        segmentation: Superpixel algorithm (images; as LIME).
        n_segments: Superpixels wanted from ``slic`` (images; as LIME).
        hide_color: Value of masked pixels (images); ``None``: the image's mean.
    """

    max_evals: int = DEFAULT_MAX_EVALS
    class_name: str | None = None
    seed: int = 0
    segmentation: str = "slic"
    n_segments: int = 25
    hide_color: float | None = None

    def as_parameters(self, kind: str) -> dict[str, Any]:
        """The options that matter for ``kind`` (``text`` or ``image``) as a JSON dict."""
        data = dict(self.__dict__)
        if kind == "text":
            for name in ("segmentation", "n_segments", "hide_color"):
                data.pop(name)
        return data


def media_shap_options(
    max_evals: int = DEFAULT_MAX_EVALS,
    class_name: str | None = None,
    seed: int = 0,
    segmentation: str = "slic",
    n_segments: int = 25,
    hide_color: float | None = None,
) -> MediaShapOptions:
    """Validated text/image SHAP options.

    Raises:
        ValidationError: A value out of range or an unknown name.
    """
    if isinstance(max_evals, bool) or not MIN_MAX_EVALS <= int(max_evals) <= MAX_MAX_EVALS:
        raise ValidationError(f"max_evals must be between {MIN_MAX_EVALS} and {MAX_MAX_EVALS}")
    return MediaShapOptions(
        int(max_evals), class_name, int(seed), *image_options(segmentation, n_segments, hide_color)
    )


def media_shap_parameters(kind: str, **options: Any) -> dict[str, Any]:
    """The cache-key parameters of a text/image SHAP request (validated)."""
    return media_shap_options(**options).as_parameters(kind)


@dataclass
class _Attribution:
    """Partition SHAP output for one input and one class."""

    values: np.ndarray
    base: float
    actual: float


class MediaShap:
    """Text and image SHAP for an engine (it supplies the cache, events and result building).

    Args:
        engine: The SHAP engine (``explanation_type`` ``shap``).
    """

    def __init__(self, engine: ExplainerBase) -> None:
        self.engine = engine

    def explain_text(
        self,
        model_id: str,
        model_version: int | None,
        text: str,
        prediction_id: str | None = None,
        *,
        options: MediaShapOptions | None = None,
        **values: Any,
    ) -> PredictionExplanation:
        """Explains a text classifier's prediction word by word (cached).

        Raises:
            ValidationError: Invalid text or options.
            UnprocessableEntity: Not a text classifier, or no ``predict_proba``.
        """
        opts = options if options is not None else media_shap_options(**values)
        descriptor = self.engine._describe_classifier(
            model_id, model_version, "text_classification"
        )
        clean = text_input({"text": text})
        return self.engine._cached(
            descriptor,
            {"text": clean},
            opts.as_parameters("text"),
            lambda: self._text(descriptor, clean, prediction_id, opts),
            prediction_id,
        )

    def explain_image(
        self,
        model_id: str,
        model_version: int | None,
        image: Any,
        prediction_id: str | None = None,
        *,
        options: MediaShapOptions | None = None,
        **values: Any,
    ) -> PredictionExplanation:
        """Explains an image classifier's prediction by superpixels (cached).

        Raises:
            ValidationError: Invalid image (or not the model's size) or options.
            UnprocessableEntity: Not an image classifier, or no ``predict_proba``.
        """
        opts = options if options is not None else media_shap_options(**values)
        descriptor = self.engine._describe_classifier(
            model_id, model_version, "image_classification"
        )
        array = image_input({"image": image})
        return self.engine._cached(
            descriptor,
            {"image": array.tolist()},
            opts.as_parameters("image"),
            lambda: self._image(descriptor, array, prediction_id, opts),
            prediction_id,
        )

    # --- text ---------------------------------------------------------------------------------
    def _text(
        self,
        descriptor: ModelDescriptor,
        text: str,
        prediction_id: str | None,
        opts: MediaShapOptions,
    ) -> PredictionExplanation:
        shap = import_shap()

        loaded = self._load(descriptor)
        estimator = loaded.estimator
        label = self._label(loaded, np.asarray(estimator.predict_proba([text]))[0], opts)

        @guarded
        def predict(texts: Any) -> np.ndarray:
            return np.asarray(estimator.predict_proba([str(t) for t in texts]))[:, label]

        masker = shap.maskers.Text(TOKEN_PATTERN)
        if len(masker.token_segments(text)[0]) < 2:
            tokens, attribution = [text], _one_token(predict, masker, text)
        else:
            explainer = shap.PartitionExplainer(predict, masker)
            result = explainer([text], max_evals=opts.max_evals, silent=True)
            _COMPILED.set()
            tokens = [str(token) for token in np.asarray(result.data[0], dtype=object)]
            attribution = _attribution(result, predict([text])[0])
        contributions = _word_contributions(tokens, attribution.values)
        return self._explanation(
            descriptor, loaded, "text", prediction_id, label, attribution, contributions, opts
        )

    # --- image --------------------------------------------------------------------------------
    def _image(
        self,
        descriptor: ModelDescriptor,
        image: np.ndarray,
        prediction_id: str | None,
        opts: MediaShapOptions,
    ) -> PredictionExplanation:
        loaded = self._load(descriptor)
        estimator = loaded.estimator
        expected = getattr(estimator, "n_features_in_", image.size)
        if expected != image.size:
            raise ValidationError(
                f"input_data.image has {image.size} values; the model expects {expected} "
                "(flattened pixels)"
            )
        segments = image_segments(image, opts.segmentation, opts.n_segments, opts.seed)
        ids, index = np.unique(segments, return_inverse=True)
        index = index.reshape(segments.shape)
        fill = hidden_value(image, opts.hide_color)
        proba = np.asarray(estimator.predict_proba(image.reshape(1, -1)))[0]
        label = self._label(loaded, proba, opts)
        predict = _masked_image_model(estimator, image, index, fill, label)
        attribution = _partition_over_segments(predict, index, len(ids), opts)
        contributions = [
            FeatureContribution(f"segment_{int(s)}", int(s), float(v))
            for s, v in zip(ids, attribution.values, strict=True)
        ]
        explanation = self._explanation(
            descriptor, loaded, "image", prediction_id, label, attribution, contributions, opts
        )
        explanation.segments = np.asarray(segments, dtype=int).tolist()
        return explanation

    # --- shared -------------------------------------------------------------------------------
    def _load(self, descriptor: ModelDescriptor) -> LoadedModel:
        loaded = self.engine.model_loader.load(descriptor.model_id, descriptor.version)
        require(
            hasattr(loaded.estimator, "predict_proba"),
            f"SHAP explains text and image classifiers through predict_proba; model "
            f"'{descriptor.model_id}' has none",
        )
        return loaded

    @staticmethod
    def _label(loaded: LoadedModel, proba: np.ndarray, opts: MediaShapOptions) -> int:
        """The requested class, or the most probable one."""
        requested = class_index(loaded.estimator, loaded.descriptor, opts.class_name)
        return int(np.argmax(proba)) if requested is None else requested

    def _explanation(
        self,
        descriptor: ModelDescriptor,
        loaded: LoadedModel,
        kind: str,
        prediction_id: str | None,
        label: int,
        attribution: _Attribution,
        contributions: list[FeatureContribution],
        opts: MediaShapOptions,
    ) -> PredictionExplanation:
        labels = class_labels(loaded.estimator, descriptor)
        total = attribution.base + float(sum(c.contribution for c in contributions))
        counted = "n_tokens" if kind == "text" else "n_superpixels"
        parameters = {**opts.as_parameters(kind), counted: int(len(attribution.values))}
        return self.engine._build_explanation(
            prediction_id=prediction_id,
            model_id=descriptor.model_id,
            model_version=descriptor.version,
            input_kind=kind,
            algorithm="partition",
            output_space=OutputSpace.PROBABILITY.value,
            explained_class=labels[label] if labels else None,
            base_prediction=attribution.base,
            actual_prediction=attribution.actual,
            feature_contributions=contributions,
            additivity_error=abs(total - attribution.actual),
            parameters=parameters,
        )


def _attribution(result: Any, actual: float) -> _Attribution:
    """One row's values and base value from a shap ``Explanation`` of a scalar output."""
    values = np.asarray(result.values[0], dtype=float).reshape(-1)
    base = float(np.asarray(result.base_values, dtype=float).reshape(-1)[0])
    return _Attribution(values, base, float(actual))


def _one_token(predict: Callable[[Any], np.ndarray], masker: Any, text: str) -> _Attribution:
    """The attribution of a text of one token (shap's masker cannot cluster fewer than two):
    with one feature its Shapley value is ``f(text) - f(masked text)``, the masked text being
    the one the Partition explainer takes its base value from."""
    masked = masker(np.zeros(1, dtype=bool), text)[0]
    base, actual = (float(v) for v in predict([str(masked[0]), text]))
    return _Attribution(np.array([actual - base]), base, actual)


def _word_contributions(tokens: list[str], values: np.ndarray) -> list[FeatureContribution]:
    """One contribution per distinct word (occurrences summed, in order of first appearance).

    A token is a word and the separators after it; separator-only tokens (leading whitespace)
    are kept under their raw text only if they moved the prediction.
    """
    totals: dict[str, float] = {}
    for token, value in zip(tokens, values.tolist(), strict=True):
        word = _EDGES.sub("", token.strip()) or token
        if word == token and not token.strip() and value == 0.0:
            continue
        totals[word] = totals.get(word, 0.0) + float(value)
    return [FeatureContribution(word, word, value) for word, value in totals.items()]


def _masked_image_model(
    estimator: Any, image: np.ndarray, index: np.ndarray, fill: Any, label: int
) -> Callable[[np.ndarray], np.ndarray]:
    """``masks (n, segments) -> probability of label`` with switched-off segments filled."""
    chunk = max(1, _CHUNK_VALUES // image.size)

    def predict(masks: np.ndarray) -> np.ndarray:
        keep = np.asarray(masks) > 0.5
        out = np.empty(len(keep), dtype=float)
        for start in range(0, len(keep), chunk):
            checkpoint()
            shown = keep[start : start + chunk][:, index]  # (n, H, W)
            if image.ndim == 3:
                shown = shown[..., None]
            batch = np.where(shown, image[None], fill)
            proba = np.asarray(estimator.predict_proba(batch.reshape(len(batch), -1)))
            out[start : start + len(batch)] = proba[:, label]
        return out

    return predict


def _partition_over_segments(
    predict: Callable[[np.ndarray], np.ndarray],
    index: np.ndarray,
    count: int,
    opts: MediaShapOptions,
) -> _Attribution:
    """Owen values of the segments (a Ward hierarchy over their centroids)."""
    shown, hidden = np.ones((1, count)), np.zeros((1, count))
    actual = float(predict(shown)[0])
    if count == 1:  # one feature gets the whole difference
        base = float(predict(hidden)[0])
        return _Attribution(np.asarray([actual - base]), base, actual)
    shap = import_shap()
    from scipy.cluster.hierarchy import linkage

    rows, cols = np.indices(index.shape)
    sizes = np.bincount(index.ravel(), minlength=count)
    centroids = np.stack(
        [
            np.bincount(index.ravel(), rows.ravel(), minlength=count) / sizes,
            np.bincount(index.ravel(), cols.ravel(), minlength=count) / sizes,
        ],
        axis=1,
    )
    masker = shap.maskers.Partition(hidden, clustering=linkage(centroids, method="ward"))
    explainer = shap.PartitionExplainer(predict, masker)
    found = explainer(shown, max_evals=opts.max_evals, silent=True)
    _COMPILED.set()
    return _attribution(found, actual)
