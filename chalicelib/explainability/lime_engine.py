"""LIME explanations: tabular, text (word level) and image (superpixels).

Every call is deterministic: LIME's random state is reset from ``seed`` on each call (explainers
kept in the LRU are reseeded), so a recomputation always equals the cached answer. The
surrogate's R² on the perturbed samples is reported as ``local_fidelity``. Classifier
contributions are in probability space; regressors in the prediction's space.

Image models take flattened pixels: an image of shape H×W (grayscale) or H×W×3 is passed to the
model as one row of ``H*W`` or ``H*W*3`` values (row-major), so any scikit-learn classifier
trained on flattened images can be explained without a custom transformer. Superpixels are
switched off by setting them to 0 (black).
"""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from chalicelib.core.errors import UnprocessableEntity, ValidationError
from chalicelib.explainability.base import (
    ExplainerBase,
    class_index,
    class_labels,
    require,
)
from chalicelib.explainability.budget import checkpoint, guarded, image_batch_size
from chalicelib.explainability.inputs import image_input, tabular_matrix, tabular_row, text_input
from chalicelib.explainability.loading import LoadedModel, ModelDescriptor
from chalicelib.explainability.models import (
    ExplanationType,
    FeatureContribution,
    OutputSpace,
    PredictionExplanation,
)
from chalicelib.explainability.superpixels import (
    hidden_value,
    image_options,
    image_segments,
)

MAX_SAMPLES = 20_000
DEFAULT_TEXT_FEATURES = 10


@dataclass(frozen=True)
class LimeOptions:
    """Parameters that change a LIME result (all part of the cache key)."""

    num_samples: int = 5000
    num_features: int | None = None
    class_name: str | None = None
    seed: int = 0
    segmentation: str = "slic"
    n_segments: int = 25
    hide_color: float | None = None

    def as_parameters(self) -> dict[str, Any]:
        """The options as a JSON dict (``hide_color`` only when set: images only)."""
        found = dict(self.__dict__)
        if found["hide_color"] is None:
            del found["hide_color"]
        return found


def lime_options(
    num_samples: int = 5000,
    num_features: int | None = None,
    class_name: str | None = None,
    seed: int = 0,
    segmentation: str = "slic",
    n_segments: int = 25,
    hide_color: float | None = None,
) -> LimeOptions:
    """Validated LIME options (``hide_color``: images; ``None`` is the image's mean).

    Raises:
        ValidationError: A value out of range.
    """
    if not 10 <= int(num_samples) <= MAX_SAMPLES:
        raise ValidationError(f"num_samples must be between 10 and {MAX_SAMPLES}")
    if num_features is not None and int(num_features) < 1:
        raise ValidationError("num_features must be at least 1")
    return LimeOptions(
        int(num_samples),
        None if num_features is None else int(num_features),
        class_name,
        int(seed),
        *image_options(segmentation, n_segments, hide_color),
    )


class LIMEExplainer(ExplainerBase):
    """Explains tabular, text and image predictions with LIME."""

    explanation_type = ExplanationType.LIME.value

    def explain_prediction(
        self,
        model_id: str,
        model_version: int | None,
        input_data: dict[str, Any],
        prediction_id: str | None = None,
        *,
        options: LimeOptions | None = None,
        **values: Any,
    ) -> PredictionExplanation:
        """Explains one tabular prediction (cached; ``options``, or ``values`` as
        :func:`lime_options`).

        Raises:
            ValidationError: Invalid input (the message names the feature).
            UnprocessableEntity: Not a tabular model, or no background data.
        """
        opts = options if options is not None else lime_options(**values)
        descriptor = self.model_loader.describe(model_id, model_version)
        require(descriptor.is_tabular, f"model '{model_id}' is not tabular ({descriptor.task})")
        row = tabular_row(input_data, descriptor.feature_names, allow_text=True)
        _require_numbers([row], descriptor.feature_names)
        return self._cached(
            descriptor,
            row,
            opts.as_parameters(),
            lambda: self._tabular(descriptor, np.asarray(row), prediction_id, opts),
            prediction_id,
        )

    def explain_batch(
        self,
        model_id: str,
        model_version: int | None,
        inputs: list[dict[str, Any]],
        prediction_ids: list[str | None] | None = None,
        *,
        options: LimeOptions | None = None,
        **values: Any,
    ) -> list[PredictionExplanation]:
        """Explains several tabular predictions (each one cached)."""
        ids = list(prediction_ids or [None] * len(inputs))
        if len(ids) != len(inputs):
            raise ValidationError("prediction_ids must have one id per input")
        opts = options if options is not None else lime_options(**values)
        descriptor = self.model_loader.describe(model_id, model_version)
        require(descriptor.is_tabular, f"model '{model_id}' is not tabular ({descriptor.task})")
        X = tabular_matrix(inputs, descriptor.feature_names, allow_text=True)
        _require_numbers(X.tolist(), descriptor.feature_names)
        return self._cached_rows(
            descriptor,
            X.tolist(),
            opts.as_parameters(),
            lambda rows: [self._tabular(descriptor, X[i], ids[i], opts) for i in rows],
            ids,
        )

    def explain_text_prediction(
        self,
        model_id: str,
        model_version: int | None,
        text: str,
        prediction_id: str | None = None,
        *,
        options: LimeOptions | None = None,
        **values: Any,
    ) -> PredictionExplanation:
        """Explains a text classifier's prediction word by word (cached).

        The model must accept a list of strings (e.g. a TF-IDF + classifier pipeline).
        """
        opts = options if options is not None else lime_options(**values)
        descriptor = self._describe_classifier(model_id, model_version, "text_classification")
        clean = text_input({"text": text})
        return self._cached(
            descriptor,
            {"text": clean},
            opts.as_parameters(),
            lambda: self._text(descriptor, clean, prediction_id, opts),
            prediction_id,
        )

    def explain_image_prediction(
        self,
        model_id: str,
        model_version: int | None,
        image: Any,
        prediction_id: str | None = None,
        *,
        options: LimeOptions | None = None,
        **values: Any,
    ) -> PredictionExplanation:
        """Explains an image classifier's prediction by superpixels (cached).

        Returns:
            Per-superpixel weights (``segment_<id>``) and the segment map in ``segments``.
        """
        opts = options if options is not None else lime_options(**values)
        descriptor = self._describe_classifier(model_id, model_version, "image_classification")
        array = image_input({"image": image})
        return self._cached(
            descriptor,
            {"image": array.tolist()},
            opts.as_parameters(),
            lambda: self._image(descriptor, array, prediction_id, opts),
            prediction_id,
        )

    # --- tabular ------------------------------------------------------------------------------
    def _tabular(
        self,
        descriptor: ModelDescriptor,
        row: np.ndarray,
        prediction_id: str | None,
        opts: LimeOptions,
    ) -> PredictionExplanation:
        loaded = self.model_loader.load(descriptor.model_id, descriptor.version)
        explainer = self._tabular_explainer(loaded)
        _reseed(explainer, opts.seed)
        estimator = loaded.estimator
        names = list(descriptor.feature_names)
        if descriptor.is_classifier:
            targets, predict = self._targets(loaded, opts), estimator.predict_proba
        else:
            targets, predict = {"labels": (1,)}, estimator.predict
        result = explainer.explain_instance(
            row,
            guarded(_finite(predict)),
            num_features=opts.num_features or len(names),
            num_samples=opts.num_samples,
            **targets,
        )
        label = _chosen(result, targets)
        conditions = dict(
            zip(_ids(result.local_exp[label]), _texts(result.as_list(label)), strict=True)
        )
        contributions = [
            FeatureContribution(names[i], float(row[i]), float(w), conditions.get(i))
            for i, w in result.local_exp[label]
        ]
        if descriptor.is_classifier:
            actual = float(result.predict_proba[label])  # the model's output for the row itself
        else:
            actual = float(result.predicted_value)
        return self._lime_explanation(
            descriptor,
            loaded,
            "lime_tabular",
            prediction_id,
            label,
            result,
            contributions,
            actual,
            opts,
        )

    def _tabular_explainer(self, loaded: LoadedModel) -> Any:
        descriptor = loaded.descriptor
        background = loaded.background
        require(
            background is not None,
            f"model '{descriptor.model_id}' version {descriptor.version} has no background data "
            "for LIME; register it with a background_sample or background_dataset_version_id",
        )

        def build() -> Any:
            from lime.lime_tabular import LimeTabularExplainer

            return LimeTabularExplainer(
                background,
                feature_names=list(descriptor.feature_names),
                class_names=class_labels(loaded.estimator, descriptor) or None,
                mode="classification" if descriptor.is_classifier else "regression",
                discretize_continuous=True,
                random_state=0,
            )

        key = (descriptor.model_id, descriptor.version, descriptor.artifact_sha256, "lime_tabular")
        return self._explainer(loaded, key, build)

    # --- text ---------------------------------------------------------------------------------
    def _text(
        self, descriptor: ModelDescriptor, text: str, prediction_id: str | None, opts: LimeOptions
    ) -> PredictionExplanation:
        from lime.lime_text import IndexedString, LimeTextExplainer

        if not IndexedString(text, bow=True).num_words():
            raise UnprocessableEntity(
                "input_data.text has no word for LIME to leave out (only separators)"
            )
        loaded = self.model_loader.load(descriptor.model_id, descriptor.version)
        estimator = loaded.estimator
        targets = self._targets(loaded, opts)
        explainer = LimeTextExplainer(
            class_names=class_labels(estimator, descriptor),
            bow=True,
            random_state=np.random.RandomState(opts.seed),
        )
        result = explainer.explain_instance(
            text,
            guarded(lambda texts: estimator.predict_proba(list(texts))),
            num_features=opts.num_features or DEFAULT_TEXT_FEATURES,
            num_samples=opts.num_samples,
            **targets,
        )
        label = _chosen(result, targets)
        words = result.domain_mapper.indexed_string
        contributions = [
            FeatureContribution(str(words.word(i)), str(words.word(i)), float(w))
            for i, w in result.local_exp[label]
        ]
        actual = float(result.predict_proba[label])
        return self._lime_explanation(
            descriptor,
            loaded,
            "lime_text",
            prediction_id,
            label,
            result,
            contributions,
            actual,
            opts,
        )

    # --- image --------------------------------------------------------------------------------
    def _image(
        self,
        descriptor: ModelDescriptor,
        image: np.ndarray,
        prediction_id: str | None,
        opts: LimeOptions,
    ) -> PredictionExplanation:
        from lime.lime_image import LimeImageExplainer

        loaded = self.model_loader.load(descriptor.model_id, descriptor.version)
        estimator = loaded.estimator
        expected = getattr(estimator, "n_features_in_", image.size)
        if expected != image.size:
            raise ValidationError(
                f"input_data.image has {image.size} values; the model expects {expected} "
                "(flattened pixels)"
            )
        grayscale = image.ndim == 2

        @guarded
        def classify(images: np.ndarray) -> np.ndarray:
            batch = np.asarray(images, dtype=float)
            if grayscale:
                batch = batch[..., 0]
            return estimator.predict_proba(batch.reshape(len(batch), -1))

        proba = np.asarray(estimator.predict_proba(image.reshape(1, -1)))[0]
        requested = class_index(estimator, descriptor, opts.class_name)
        label = int(np.argmax(proba)) if requested is None else requested
        explainer = masking_image_explainer(LimeImageExplainer)(random_state=opts.seed)
        segments = image_segments(image, opts.segmentation, opts.n_segments, opts.seed)
        with contextlib.redirect_stderr(io.StringIO()):  # lime's image sampler draws a tqdm bar
            result = explainer.explain_instance(
                image,
                classify,
                labels=(label,),
                top_labels=None,
                hide_color=hidden_value(image, opts.hide_color),
                num_samples=opts.num_samples,
                # The same superpixels SHAP uses (image_segments): both name the same features.
                segmentation_fn=lambda _: segments,
                random_seed=opts.seed,
                batch_size=image_batch_size(opts.num_samples, image.shape[0] * image.shape[1] * 3),
            )
        weights = sorted(result.local_exp[label], key=lambda p: -abs(p[1]))
        if opts.num_features:
            weights = weights[: opts.num_features]
        contributions = [FeatureContribution(f"segment_{i}", int(i), float(w)) for i, w in weights]
        actual = float(proba[label])
        explanation = self._lime_explanation(
            descriptor,
            loaded,
            "lime_image",
            prediction_id,
            label,
            result,
            contributions,
            actual,
            opts,
        )
        explanation.segments = np.asarray(result.segments, dtype=int).tolist()
        return explanation

    # --- shared -------------------------------------------------------------------------------
    def _targets(self, loaded: LoadedModel, opts: LimeOptions) -> dict[str, Any]:
        """LIME's label arguments: the requested class, or the most probable one."""
        requested = class_index(loaded.estimator, loaded.descriptor, opts.class_name)
        if requested is not None:
            return {"labels": (requested,)}
        return {"labels": (), "top_labels": 1}

    def _lime_explanation(
        self,
        descriptor: ModelDescriptor,
        loaded: LoadedModel,
        algorithm: str,
        prediction_id: str | None,
        label: int,
        result: Any,
        contributions: list[FeatureContribution],
        actual: float,
        opts: LimeOptions,
    ) -> PredictionExplanation:
        labels = class_labels(loaded.estimator, descriptor) if descriptor.is_classifier else []
        space = OutputSpace.PROBABILITY.value if descriptor.is_classifier else OutputSpace.RAW.value
        return self._build_explanation(
            prediction_id=prediction_id,
            model_id=descriptor.model_id,
            model_version=descriptor.version,
            input_kind=algorithm.removeprefix("lime_"),
            algorithm=algorithm,
            output_space=space,
            explained_class=labels[label] if labels else None,
            base_prediction=float(result.intercept[label]),
            actual_prediction=actual,
            feature_contributions=contributions,
            local_fidelity=float(result.score),
            local_prediction=float(np.asarray(result.local_pred).reshape(-1)[0]),
            parameters=opts.as_parameters(),
        )


@functools.cache
def masking_image_explainer(base: type) -> type:
    """``LimeImageExplainer`` with its neighbourhood built by array indexing.

    lime's ``data_labels`` copies the image and compares every pixel with every switched-off
    superpixel, one sample at a time in Python (43 s for 1,000 samples of a 512×512 image).
    This one draws the same random samples from the same random state and builds the same
    images (switched-off superpixels take the fudged image's pixels) a batch at a time, then
    calls the classifier on batches of ``batch_size`` in the same order, so ``data`` and
    ``labels`` equal lime's (a test compares them). Segment maps with negative labels, which
    lime's loop treats differently, fall back to lime's own code.
    """

    class MaskingImageExplainer(base):
        def data_labels(
            self,
            image: np.ndarray,
            fudged_image: np.ndarray,
            segments: np.ndarray,
            classifier_fn: Any,
            num_samples: int,
            batch_size: int = 10,
            **kwargs: Any,
        ) -> tuple[np.ndarray, np.ndarray]:
            if segments.size == 0 or segments.min() < 0:
                return super().data_labels(
                    image, fudged_image, segments, classifier_fn, num_samples, batch_size, **kwargs
                )
            n_features = np.unique(segments).shape[0]
            data = self.random_state.randint(0, 2, num_samples * n_features).reshape(
                (num_samples, n_features)
            )
            data[0, :] = 1
            width = max(n_features, int(segments.max()) + 1)
            labels = []
            for start in range(0, num_samples, max(1, batch_size)):
                checkpoint()
                off = np.zeros((min(batch_size, num_samples - start), width), dtype=bool)
                off[:, :n_features] = data[start : start + len(off)] == 0
                # (batch, H, W): the pixels of switched-off superpixels; repeated over the
                # channels because numpy's where is several times slower when it broadcasts.
                hidden = np.take(off, segments, axis=1)
                if image.ndim == 3:
                    hidden = np.repeat(hidden[..., None], image.shape[2], axis=3)
                labels.append(np.asarray(classifier_fn(np.where(hidden, fudged_image, image))))
            return data, np.concatenate(labels, axis=0)

    return MaskingImageExplainer


def _require_numbers(rows: list[list[Any]], names: tuple[str, ...]) -> None:
    """LIME perturbs numbers: a categorical (string) input is refused with what to use instead."""
    for i, row in enumerate(rows):
        for name, value in zip(names, row, strict=True):
            if isinstance(value, str):
                where = f"inputs[{i}]: " if len(rows) > 1 else ""
                raise ValidationError(
                    f"{where}feature '{name}' must be a number; got str (LIME explains numeric "
                    "columns; explain a pipeline's categorical inputs with SHAP)"
                )


def _finite(predict: Any) -> Any:
    """``predict`` refusing outputs that are not finite (a 422, before lime fits its surrogate:
    scikit-learn's Ridge would raise a ValueError on them)."""

    def call(data: Any) -> Any:
        outputs = np.asarray(predict(data), dtype=float)
        if not np.isfinite(outputs).all():
            raise UnprocessableEntity(
                "the explanation is not finite (the model's output for the row or its "
                "neighbourhood is not a finite number): input or background values this large "
                "overflow the model's floating-point arithmetic",
                code="not_finite",
            )
        return outputs

    return call


def _reseed(explainer: Any, seed: int) -> None:
    """Resets every random state a cached LimeTabularExplainer shares (as its constructor does)."""
    state = np.random.RandomState(seed)
    explainer.random_state = state
    explainer.base.random_state = state
    if getattr(explainer, "discretizer", None) is not None:
        explainer.discretizer.random_state = state


def _chosen(result: Any, targets: dict[str, Any]) -> int:
    """The label LIME explained (the requested one or its top label)."""
    if targets.get("top_labels"):
        return int(result.top_labels[0])
    return int(targets["labels"][0])


def _ids(pairs: list[tuple[int, float]]) -> list[int]:
    return [int(i) for i, _ in pairs]


def _texts(pairs: list[tuple[str, float]]) -> list[str]:
    return [str(text) for text, _ in pairs]
