"""Cost estimates of explanation requests, before they run (see :mod:`.budget` for the formula).

:meth:`CostPlanner.static` counts a request without its model (the API function, which has no
scikit-learn): exact counts of inputs, samples, evaluations, tokens and pixels, the cheapest model
speed and, for SHAP on tabular models, the cheapest algorithm, so it is a lower bound and a
request it finds too expensive is too expensive whatever the model.

:meth:`CostPlanner.measured` loads the model (which the explanation needs anyway) and counts what
the engines will really do: the SHAP algorithm chosen for the model, the background rows used, the
superpixels of each image (the segmentation is kept for the explanation), and the model's own
speed, timed without unbounded work (:func:`.budget.measure_speed`: one row first, more only
while the probe stays under its budget, the deadline checked before every call).

Tabular models are timed twice: once per model and output on rows tiled from its background
(cached), and on every request on rows like the ones its explainer will send, built from the
request's inputs (:func:`.probe.sample_rows`), against as many background rows
(:func:`.budget.measure_rows`); what they take beyond the background is added per row, so a
model that is fast on the background its author chose but slow near the request's input is
estimated at its real speed. The values one row takes inside the model (its intermediate arrays,
:mod:`.probe`) are counted as the row's width: an estimate over the largest array an
explanation may build is refused before the model is even called on a batch.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from chalicelib.core.errors import SynapseError
from chalicelib.explainability.budget import (
    CHUNK_VALUES,
    MAX_VALUES,
    RATES,
    Estimate,
    ModelSpeed,
    Work,
    balanced_hierarchy_masks,
    combine,
    estimate,
    hierarchy_masks,
    image_counts,
    measure_rows,
    measure_speed,
    text_counts,
)
from chalicelib.explainability.categorical import encode, encoded_width, text_columns
from chalicelib.explainability.loading import LoadedModel, ModelDescriptor, ModelLoader
from chalicelib.explainability.models import MAX_JOB_ROWS, ExplanationQuery
from chalicelib.explainability.probe import (
    SAMPLE_ROWS,
    declared_row_values,
    declared_text_values,
    measured_row_values,
    sample_rows,
)

# Rows in the timed predict of a tabular model, copies of an image, copies of a text.
PROBE_ROWS = 2048
PROBE_MEDIA = 4
PROBE_TEXTS = 16
# Text and image inputs of a batch measured on the model; the others are scaled.
MEASURED_INPUTS = 8
TREE_PROBE_ROWS = 8
SHAP_METHODS = ("tree", "linear", "exact", "kernel")


def input_kind(descriptor: ModelDescriptor) -> str:
    """``tabular``, ``text`` or ``image`` from the model's task."""
    return {"text_classification": "text", "image_classification": "image"}.get(
        descriptor.task, "tabular"
    )


class CostPlanner:
    """Estimates what an explanation request will cost.

    Args:
        model_loader: Describes and loads model versions.
        tree_explainer: The SHAP engine's (cached) TreeExplainer of a loaded model
            (``tree_explainer(loaded, True)``: the one computing interaction values).
        dataset_rows: ``dataset_version_id → row count`` (``None``: unknown), for global
            importance and dependence over a dataset version before it is read.
    """

    def __init__(
        self,
        model_loader: ModelLoader,
        tree_explainer: Callable[..., Any],
        dataset_rows: Callable[[str], int | None] | None = None,
    ) -> None:
        self.model_loader = model_loader
        self.tree_explainer = tree_explainer
        self.dataset_rows = dataset_rows
        self._speeds: OrderedDict[tuple[Any, ...], ModelSpeed] = OrderedDict()
        self._widths: OrderedDict[tuple[Any, ...], int] = OrderedDict()
        self._lock = threading.Lock()

    # --- entry points -----------------------------------------------------------------------
    def static(self, request: ExplanationQuery, descriptor: ModelDescriptor) -> Estimate:
        """A lower bound of the request's cost without loading the model."""
        return self._estimate(request, descriptor, None, request.explained_inputs())

    def measured(
        self,
        request: ExplanationQuery,
        descriptor: ModelDescriptor,
        inputs: list[Any] | None = None,
    ) -> Estimate:
        """The request's cost with its model loaded and timed.

        Args:
            request: The request (single, batch, global or dependence).
            descriptor: The resolved model version.
            inputs: The inputs when already resolved (a dataset version's rows).
        """
        loaded = self.model_loader.load(descriptor.model_id, descriptor.version)
        found = request.explained_inputs() if inputs is None else inputs
        return self._estimate(request, descriptor, loaded, found)

    # --- counting ---------------------------------------------------------------------------
    def _estimate(
        self,
        request: ExplanationQuery,
        descriptor: ModelDescriptor,
        loaded: LoadedModel | None,
        inputs: list[Any],
    ) -> Estimate:
        kind = input_kind(descriptor)
        if kind == "text":
            return self._media(lambda item, model: self._text(request, item, model), inputs, loaded)
        if kind == "image":
            return self._media(
                lambda item, model: self._image(request, item, model), inputs, loaded
            )
        rows = len(inputs) or self._dataset_rows(request)
        if request.method == "shap":  # dependence plots are always SHAP
            return self._tabular_shap(request, descriptor, loaded, rows, inputs)
        return self._tabular_lime(request, descriptor, loaded, rows, inputs)

    @staticmethod
    def _media(
        one: Callable[[Any, LoadedModel | None], Estimate],
        inputs: list[Any],
        loaded: LoadedModel | None,
    ) -> Estimate:
        """Text or image inputs, each estimated on its own: the first ``MEASURED_INPUTS``
        measured on the model, the others counted and scaled by the same measured/counted
        ratio (measuring thousands of inputs would cost more than it tells)."""
        items = inputs or [{}]
        if loaded is None or len(items) <= MEASURED_INPUTS:
            return combine([one(item, loaded) for item in items])
        measured = [one(item, loaded) for item in items[:MEASURED_INPUTS]]
        counted = sum(one(item, None).seconds for item in items[:MEASURED_INPUTS])
        ratio = sum(e.seconds for e in measured) / counted if counted > 0 else 1.0
        rest = [_scaled(one(item, None), ratio) for item in items[MEASURED_INPUTS:]]
        return combine(measured + rest)

    def _dataset_rows(self, request: ExplanationQuery) -> int:
        """Rows of the request's dataset version (at most what is read), or 1 when unknown."""
        version_id = request.dataset_version()
        found = None
        if version_id and self.dataset_rows is not None:
            found = self.dataset_rows(str(version_id))
        return max(1, min(MAX_JOB_ROWS, found or 1))

    def _tabular_shap(
        self,
        request: ExplanationQuery,
        descriptor: ModelDescriptor,
        loaded: LoadedModel | None,
        rows: int,
        inputs: list[Any] | None = None,
    ) -> Estimate:
        features = max(1, len(descriptor.feature_names))
        requested = request.algorithm
        wanted = request.background_sample_size
        interactions = request.include_interactions
        if loaded is None:
            method = requested if requested in SHAP_METHODS else "model_specific"
            work = Work(method, rows, features, 0, 1, features, interactions=interactions)
            return estimate(work)
        from chalicelib.explainability.shap_engine import choose_algorithm

        method = choose_algorithm(loaded.estimator, features, requested)
        background = 0 if loaded.background is None else len(loaded.background)
        used = min(background, wanted) if method in ("exact", "kernel") else 0
        work = Work(method, rows, features, 0, max(1, used), features, interactions=interactions)
        if method == "tree":
            outputs = len(getattr(loaded.estimator, "classes_", ())) or 2
            work = dataclasses.replace(work, outputs=outputs if descriptor.is_classifier else 1)
            rows_in = _tree_rows(loaded)
            # A categorical pipeline's TreeSHAP explains (and splits calls by) its encoded columns.
            work = dataclasses.replace(work, features=rows_in.shape[1])
            return estimate(work, self._tree_speed(loaded, interactions, rows_in))
        width, speed = self._tabular_facts(loaded, method, inputs)
        return estimate(dataclasses.replace(work, row_values=width), speed)

    def _tabular_lime(
        self,
        request: ExplanationQuery,
        descriptor: ModelDescriptor,
        loaded: LoadedModel | None,
        rows: int,
        inputs: list[Any] | None = None,
    ) -> Estimate:
        features = max(1, len(descriptor.feature_names))
        samples = request.num_samples
        work = Work("lime_tabular", rows, features, samples, 0, features)
        if loaded is None:
            return estimate(work)
        width, speed = self._tabular_facts(loaded, "lime", inputs)
        return estimate(dataclasses.replace(work, row_values=width), speed)

    def _text(self, request: ExplanationQuery, data: Any, loaded: LoadedModel | None) -> Estimate:
        text = data.get("text") if isinstance(data, dict) else None
        tokens, characters = text_counts(text)
        lime = request.method == "lime"
        samples = request.num_samples if lime else request.max_evals
        method = "lime_text" if lime else "partition_text"
        if loaded is not None and isinstance(text, str):
            characters = max(characters, declared_text_values(loaded.estimator, text))
        work = Work(method, 1, tokens, samples, 0, characters)
        if not lime and loaded is not None and isinstance(text, str):
            hierarchy = _text_hierarchy(text, tokens, samples)
            work = dataclasses.replace(work, hierarchy_masks=hierarchy)
        first = not lime and loaded is not None
        speed = None
        if (
            loaded is not None
            and isinstance(text, str)
            and hasattr(loaded.estimator, "predict_proba")
            and characters <= MAX_VALUES  # else refused on the count, never run
        ):
            probe = [text] * PROBE_TEXTS
            speed = measure_speed(lambda rows: loaded.estimator.predict_proba(list(rows)), probe)
        return _with_compilation(estimate(work, speed), first)

    def _image(self, request: ExplanationQuery, data: Any, loaded: LoadedModel | None) -> Estimate:
        image = data.get("image") if isinstance(data, dict) else None
        pixels, values = image_counts(image)
        lime = request.method == "lime"
        samples = request.num_samples if lime else request.max_evals
        segmentation = request.segmentation
        wanted = request.n_segments
        superpixels = min(pixels, wanted) if segmentation == "slic" else 1
        speed = None
        if loaded is not None and image is not None:
            superpixels, speed = self._image_facts(request, image, loaded, superpixels)
        method = "lime_image" if lime else "partition_image"
        work = Work(method, 1, superpixels, samples, 0, values, pixels, segmentation)
        return _with_compilation(estimate(work, speed), not lime and loaded is not None)

    def _image_facts(
        self, request: ExplanationQuery, image: Any, loaded: LoadedModel, fallback: int
    ) -> tuple[int, ModelSpeed | None]:
        """Superpixels of the image (segmenting it, kept for the explanation) and the model's
        seconds per image; the fallback when the image is invalid (the engine reports why)."""
        from chalicelib.core.errors import SynapseError
        from chalicelib.explainability.inputs import image_input
        from chalicelib.explainability.superpixels import image_segments

        try:
            array = image_input({"image": image})
        except SynapseError:
            return fallback, None
        segments = image_segments(array, request.segmentation, request.n_segments, request.seed)
        count = int(np.unique(segments).shape[0])
        estimator = loaded.estimator
        if (
            not hasattr(estimator, "predict_proba")
            or getattr(estimator, "n_features_in_", array.size) != array.size
        ):
            return count, None
        probe = np.repeat(array.reshape(1, -1), PROBE_MEDIA, axis=0)
        return count, measure_speed(estimator.predict_proba, probe)

    # --- model speed ------------------------------------------------------------------------
    def _tabular_facts(
        self, loaded: LoadedModel, method: str, inputs: list[Any] | None
    ) -> tuple[int, ModelSpeed | None]:
        """Values one row takes inside the model and the model's speed for ``method``: its speed
        on its background (cached) plus what rows like the ones the explainer will send for
        these inputs take beyond as many background rows. No speed (the floor) when one row
        alone is over :data:`MAX_VALUES` values: the estimate is then refused without calling
        the model."""
        features = max(1, len(loaded.descriptor.feature_names))
        predict = _predict_for(loaded, method)
        declared = declared_row_values(loaded.estimator)
        if declared > MAX_VALUES:
            return declared, None
        width = max(features, self._row_values(loaded, method, predict, declared))
        if width > MAX_VALUES:
            return width, None
        base = self._tabular_speed(loaded, method, predict, width)
        matrix = _input_matrix(loaded, inputs)
        if matrix is None:
            return width, base
        count = _fitting(width, SAMPLE_ROWS)
        rows = sample_rows(method, matrix, loaded.background, count)
        extra = measure_rows(predict, rows, _probe_rows(loaded)[:count])
        return width, ModelSpeed(base.call_seconds, base.row_seconds + extra)

    def _row_values(
        self, loaded: LoadedModel, method: str, predict: Callable[[Any], Any], declared: int
    ) -> int:
        """Values one row takes inside the model (measured once per model and method)."""
        key = (*_key(loaded), method)
        with self._lock:
            found = self._widths.get(key)
        if found is not None:
            return found
        width = measured_row_values(predict, _probe_rows(loaded), declared)
        with self._lock:
            self._widths[key] = width
            while len(self._widths) > 256:
                self._widths.popitem(last=False)
        return width

    def _tabular_speed(
        self, loaded: LoadedModel, method: str, predict: Callable[[Any], Any], width: int
    ) -> ModelSpeed:
        """The speed of the call the method makes on background rows (cached per model and
        method), on as many rows as fit :data:`CHUNK_VALUES` values of ``width`` each."""
        key = (*_key(loaded), method)
        with self._lock:
            found = self._speeds.get(key)
        if found is not None:
            return found
        rows = _probe_rows(loaded)
        speed = measure_speed(predict, rows[: _fitting(width, len(rows))])
        self._remember(key, speed)
        return speed

    def _tree_speed(self, loaded: LoadedModel, interactions: bool, probe: np.ndarray) -> ModelSpeed:
        """TreeSHAP's speed on this model, per call and per input (a pilot on a few rows of
        ``probe``, rows as its explainer sees them; cached)."""
        descriptor = loaded.descriptor
        key = (descriptor.model_id, descriptor.version, descriptor.artifact_sha256, interactions)
        with self._lock:
            found = self._speeds.get(key)
        if found is not None:
            return found
        rows = probe[:TREE_PROBE_ROWS]
        if interactions:
            explainer = self.tree_explainer(loaded, True)
            speed = measure_speed(explainer.shap_interaction_values, rows, repeat=1)
        else:
            explainer = self.tree_explainer(loaded)
            speed = measure_speed(
                lambda part: explainer.shap_values(part, check_additivity=False), rows, repeat=1
            )
        self._remember(key, speed)
        return speed

    def _remember(self, key: tuple[Any, ...], speed: ModelSpeed) -> None:
        with self._lock:
            self._speeds[key] = speed
            while len(self._speeds) > 256:
                self._speeds.popitem(last=False)


def _key(loaded: LoadedModel) -> tuple[Any, ...]:
    descriptor = loaded.descriptor
    return (descriptor.model_id, descriptor.version, descriptor.artifact_sha256)


def _fitting(width: int, rows: int) -> int:
    """Rows of ``width`` values that fit one model call's :data:`CHUNK_VALUES` (at least 1)."""
    return max(1, min(rows, CHUNK_VALUES // max(1, width)))


def _predict_for(loaded: LoadedModel, method: str) -> Callable[[Any], Any]:
    """The model call ``method`` makes."""
    estimator, descriptor = loaded.estimator, loaded.descriptor
    if method in ("exact", "kernel"):
        from chalicelib.explainability.shap_engine import model_outputs, output_space

        space = output_space(estimator, method, descriptor.is_classifier)
        return lambda data: model_outputs(estimator, data, space, descriptor.is_classifier)
    if descriptor.is_classifier and hasattr(estimator, "predict_proba"):
        return estimator.predict_proba
    return estimator.predict


def _input_matrix(loaded: LoadedModel, inputs: list[Any] | None) -> np.ndarray | None:
    """The first inputs as a matrix (``None``: none given, or invalid: the engine says why)."""
    from chalicelib.explainability.inputs import tabular_matrix

    if not inputs:
        return None
    try:
        matrix = tabular_matrix(inputs[:MEASURED_INPUTS], loaded.descriptor.feature_names)
    except (SynapseError, TypeError, ValueError):
        return None
    return matrix if matrix.ndim == 2 and len(matrix) else None


def _text_hierarchy(text: str, counted: int, max_evals: int) -> int:
    """Masks that exhaust the hierarchy shap's Text masker builds for ``text`` (as the engine
    masks it), or 0 when even a balanced hierarchy of its tokens would not be exhausted within
    ``max_evals`` (then ``max_evals`` counts, and clustering a long text is not done twice).
    ``counted`` (the tokens :func:`.budget.text_counts` found, which shap's tokenizer may see
    one fewer of) spares a long text even shap's tokenizing."""
    if balanced_hierarchy_masks(counted - 1) >= max_evals - 2:
        return 0
    from chalicelib.explainability.jit_cache import import_shap
    from chalicelib.explainability.shap_media import TOKEN_PATTERN

    masker = import_shap().maskers.Text(TOKEN_PATTERN)
    tokens = len(masker.token_segments(text)[0])
    if tokens < 2 or balanced_hierarchy_masks(tokens) >= max_evals - 2:
        return 0
    return hierarchy_masks(np.asarray(masker.clustering(text)))


def _with_compilation(cost: Estimate, partition: bool) -> Estimate:
    """Adds the Partition explainer's one-off numba compilation when this process has not paid
    it yet (measured estimates only: the API cannot know the explanation function's state), or
    only loading it when numba's disk cache holds it (:func:`_partition_cached`)."""
    from chalicelib.explainability.shap_media import partition_compiled

    if not partition or partition_compiled():
        return cost
    first = RATES.partition_cached_call if _partition_cached() else RATES.partition_first_call
    return dataclasses.replace(cost, seconds=cost.seconds + first)


def _partition_cached() -> bool:
    """Whether numba's disk cache (the explainer image's, seeded when shap is imported) holds
    the Partition explainer's compiled code: its stack walk of the clustering tree is compiled
    only by a Partition explanation, and :func:`.jit_cache.warm` runs text and image ones."""
    from chalicelib.explainability import jit_cache

    jit_cache.import_shap()  # copies the image's cache to the writable directory
    directory = jit_cache.cache_directory()
    if not directory or not os.path.isdir(directory):
        return False
    return any(
        name.startswith("jit_kernels.lower_credit_rows") and name.endswith(".nbi")
        for _, _, names in os.walk(directory)
        for name in names
    )


def _scaled(cost: Estimate, ratio: float) -> Estimate:
    """A counted estimate scaled to what the measured inputs cost."""
    return dataclasses.replace(
        cost,
        seconds=cost.seconds * ratio,
        model_row_seconds=cost.model_row_seconds * ratio,
        model_call_seconds=cost.model_call_seconds * ratio,
        measured=True,
    )


def _tree_rows(loaded: LoadedModel) -> np.ndarray:
    """Rows as TreeSHAP's explainer sees them: the probe rows, or for a pipeline with
    categorical columns those rows encoded by its steps before the last (the explainer's
    columns; zeros of that width when the background cannot be encoded)."""
    rows = _probe_rows(loaded)[:TREE_PROBE_ROWS]
    estimator = loaded.estimator
    if not text_columns(estimator):
        return rows
    try:
        return encode(estimator, rows, loaded.descriptor.feature_names)
    except (TypeError, ValueError):
        return np.zeros((len(rows), encoded_width(estimator)))


def _probe_rows(loaded: LoadedModel) -> np.ndarray:
    """Rows shaped like the model's inputs: its background, or zeros, tiled to ``PROBE_ROWS``."""
    width = max(1, len(loaded.descriptor.feature_names))
    background = loaded.background
    if background is None or len(background) == 0 or background.shape[1] != width:
        return np.zeros((PROBE_ROWS, width))
    reps = -(-PROBE_ROWS // len(background))
    return np.tile(background, (reps, 1))[:PROBE_ROWS]
