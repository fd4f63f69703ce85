"""Where explained models and their background data come from.

The engines see a :class:`ModelLoader` (describe a version cheaply, load its estimator) and a
:class:`BackgroundDataProvider`. The registry-backed loader keeps loaded models within a memory
budget so a warm Lambda instance does not re-read an artifact it has room for.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np

from chalicelib.core.config import get_settings
from chalicelib.core.errors import UnprocessableEntity
from chalicelib.explainability.memory import ModelMemory, estimate_bytes

TABULAR_TASKS = ("classification", "regression")
CLASSIFIER_TASKS = ("classification", "text_classification", "image_classification")


@dataclass(frozen=True)
class ModelDescriptor:
    """What the explainers need to know about a model version (no estimator).

    Attributes:
        model_id: The model.
        version: The concrete version.
        task: ``classification``, ``regression``, ``text_classification``, ``image_classification``.
        feature_names: Input feature names in order.
        class_names: Class labels (classifiers), in the estimator's ``classes_`` order.
        artifact_sha256: Content hash of the artifact; part of every cache key.
        background_dataset_version_id: Dataset version used as background, if any.
    """

    model_id: str
    version: int
    task: str
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    artifact_sha256: str
    background_dataset_version_id: str | None = None

    # Read several times per request; the task never changes, so each is worked out once.
    @cached_property
    def is_tabular(self) -> bool:
        """Whether inputs are feature vectors."""
        return self.task in TABULAR_TASKS

    @cached_property
    def is_classifier(self) -> bool:
        """Whether the model predicts classes."""
        return self.task in CLASSIFIER_TASKS


@dataclass
class LoadedModel:
    """A loaded estimator with its descriptor and background rows (``None`` if it has none).

    ``explainers`` holds the explainers built for it, so they leave memory with it; ``memo``
    what requests work out from the model alone (its class labels, the algorithm chosen for a
    requested one), kept with it as well: a model registered again is loaded anew.
    """

    estimator: Any
    descriptor: ModelDescriptor
    background: np.ndarray | None
    explainers: OrderedDict[tuple[Any, ...], Any] = field(default_factory=OrderedDict)
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def remembered(self, key: tuple[Any, ...], work_out: Callable[[], Any]) -> Any:
        """``work_out()``, once per model and ``key`` (a failure is not remembered)."""
        found = self.memo.get(key)
        if found is None:
            found = self.memo[key] = work_out()
        return found


class ModelLoader(Protocol):
    """Resolves and loads model versions."""

    def describe(self, model_id: str, version: int | None) -> ModelDescriptor:
        """The descriptor of a version (``None``: the production version); no heavy imports."""
        ...

    def load(self, model_id: str, version: int | None) -> LoadedModel:
        """The estimator, descriptor and background of a version."""
        ...


class DatasetReader(Protocol):
    """Reads the rows of a dataset version as a numeric matrix in the given column order."""

    def read_rows(self, dataset_version_id: str, columns: list[str]) -> np.ndarray:
        """The rows of ``dataset_version_id`` restricted to ``columns``."""
        ...


class BackgroundDataProvider:
    """Finds a model version's background rows: its dataset version or the stored sample.

    Args:
        registry: The model registry (stored samples).
        dataset_reader: Reads dataset versions; without one, dataset-backed backgrounds get 422.
    """

    def __init__(self, registry: Any, dataset_reader: DatasetReader | None = None) -> None:
        self.registry = registry
        self.dataset_reader = dataset_reader

    def get_background(self, descriptor: ModelDescriptor) -> np.ndarray | None:
        """The background matrix (rows × features), or ``None`` when the version has none.

        Raises:
            UnprocessableEntity: The background cannot be read or is not numeric.
        """
        if descriptor.background_dataset_version_id:
            return self.read_dataset(descriptor.background_dataset_version_id, descriptor)
        rows = self.registry.get_background_sample(descriptor.model_id, descriptor.version)
        if rows is None:
            return None
        return as_numeric_matrix(rows, "background_sample")

    def read_dataset(self, dataset_version_id: str, descriptor: ModelDescriptor) -> np.ndarray:
        """The rows of a dataset version in the model's feature order.

        Raises:
            UnprocessableEntity: No dataset reader is configured.
        """
        if self.dataset_reader is None:
            raise UnprocessableEntity(
                f"dataset version '{dataset_version_id}' cannot be read: dataset-backed "
                "backgrounds need the dataset versioning service"
            )
        return self.dataset_reader.read_rows(dataset_version_id, list(descriptor.feature_names))


MAX_DATASET_ROWS = 10_000


class DataversionReader:
    """Reads dataset versions of the versioning service (CSV or JSON lines) as numeric rows.

    At most ``max_rows`` records are used: a seeded uniform sample of the whole version (the same
    version, the same rows), in file order, read in one pass by the dataversion domain and
    checked against the version's sha256 (bytes changed under their address answer 409). It
    reads as the system: callers are checked against the version before
    (``ExplanationService.authorize`` and the registry, when a model's background is registered).

    Args:
        sample_version: ``(version_id, max_rows) -> sample`` with ``records`` (default: the
            dataversion facade's ``sample_records_as_system``).
        max_rows: Rows read at most.
    """

    def __init__(
        self,
        sample_version: Callable[[str, int], Any] | None = None,
        max_rows: int = MAX_DATASET_ROWS,
    ) -> None:
        self._sample_version = sample_version
        self.max_rows = max_rows

    def read_rows(self, dataset_version_id: str, columns: list[str]) -> np.ndarray:
        """The rows of a version restricted to ``columns``, in that order.

        Raises:
            DatasetVersionNotFound: Unknown version (404).
            UnprocessableEntity: Opaque format, a missing column or non-numeric values.
        """
        rows = [
            _pick_columns(record, columns, dataset_version_id, index)
            for index, record in enumerate(self._records(dataset_version_id))
        ]
        return as_numeric_matrix(rows, f"dataset version '{dataset_version_id}'")

    def read_records(self, dataset_version_id: str, columns: list[str]) -> list[dict[str, Any]]:
        """At most ``max_rows`` records of a version (a uniform sample) restricted to
        ``columns``, values as read (CSV: strings; JSON lines: JSON values).

        Raises:
            DatasetVersionNotFound: Unknown version (404).
            UnprocessableEntity: Opaque format, a missing column or no rows.
        """
        found = []
        for record in self._records(dataset_version_id):
            missing = [column for column in columns if column not in record]
            if missing:
                raise UnprocessableEntity(
                    f"dataset version '{dataset_version_id}' has no column '{missing[0]}'"
                )
            found.append({column: record[column] for column in columns})
        return found

    def _records(self, dataset_version_id: str) -> list[dict[str, Any]]:
        sampler = self._sample_version
        if sampler is None:
            from chalicelib.dataversion.facade import sample_records_as_system

            sampler = sample_records_as_system
        records = list(sampler(dataset_version_id, self.max_rows).records)
        if not records:
            raise UnprocessableEntity(f"dataset version '{dataset_version_id}' has no rows")
        return records


def _pick_columns(
    record: dict[str, Any], columns: list[str], version_id: str, index: int
) -> list[float]:
    values = []
    for column in columns:
        if column not in record:
            raise UnprocessableEntity(
                f"dataset version '{version_id}' has no column '{column}' (a model feature)"
            )
        try:
            values.append(float(record[column]))
        except (TypeError, ValueError, OverflowError):
            raise UnprocessableEntity(
                f"dataset version '{version_id}' row {index}: column '{column}' is not numeric"
            ) from None
    return values


def as_numeric_matrix(rows: Any, what: str) -> np.ndarray:
    """Rows as a float matrix.

    Raises:
        UnprocessableEntity: Not rectangular or not numeric.
    """
    try:
        matrix = np.asarray(rows, dtype=float)
    except (TypeError, ValueError):
        raise UnprocessableEntity(f"{what} must be numeric rows") from None
    if matrix.ndim != 2 or not np.isfinite(matrix).all():
        raise UnprocessableEntity(f"{what} must be rectangular rows of finite numbers")
    return matrix


def descriptor_from_version(version: Any) -> ModelDescriptor:
    """A descriptor from a registry ``ModelVersion`` (or anything shaped like one)."""
    task = getattr(version.task, "value", version.task)
    return ModelDescriptor(
        model_id=version.model_id,
        version=int(version.version),
        task=str(task),
        feature_names=tuple(version.feature_names),
        class_names=tuple(version.class_names),
        artifact_sha256=version.artifact_sha256,
        background_dataset_version_id=version.background_dataset_version_id,
    )


class RegistryModelLoader:
    """Loads models from the registry, with an LRU of descriptors and a byte-bounded model cache.

    Version records and artifacts are immutable (an artifact is keyed by its sha256), so cached
    entries never go stale; the production version is resolved on every call. Loaded models
    (with their background rows and explainers) are kept within a memory budget: a load reserves
    what the artifact declares before it starts, and each kept model is charged what its arrays
    take (see :mod:`chalicelib.explainability.memory`).

    Args:
        registry: A ``ModelRegistry`` (default: the process-wide one).
        backgrounds: Background provider (default: stored samples and dataset versions).
        cache_size: Loaded models kept in memory at most (whatever their size).
        memory_bytes: The budget (default: ``SYNAPSE_MODEL_MEMORY_BYTES``).
    """

    def __init__(
        self,
        registry: Any = None,
        backgrounds: BackgroundDataProvider | None = None,
        cache_size: int = 8,
        memory_bytes: int | None = None,
    ) -> None:
        if registry is None:
            from chalicelib.registry.facade import as_system

            registry = as_system()
        self.registry = registry
        self.backgrounds = backgrounds or BackgroundDataProvider(registry, DataversionReader())
        self.cache_size = cache_size
        budget = get_settings().model_memory_bytes if memory_bytes is None else memory_bytes
        self.memory = ModelMemory(budget, max_entries=cache_size)
        self._descriptors: OrderedDict[tuple[str, int], ModelDescriptor] = OrderedDict()
        self._lock = threading.Lock()

    def resolve_version(self, model_id: str, version: int | None) -> int:
        """The concrete version: ``version`` itself or the current production version.

        Raises:
            UnprocessableEntity: No version given and the model has no production version.
        """
        if version is not None:
            return int(version)
        model = self.registry.get_model(model_id)
        if model.production_version is None:
            raise UnprocessableEntity(
                f"model '{model_id}' has no production version; pass model_version"
            )
        return int(model.production_version)

    def describe(self, model_id: str, version: int | None) -> ModelDescriptor:
        """The descriptor of a version (404 if unknown)."""
        concrete = self.resolve_version(model_id, version)
        key = (model_id, concrete)
        with self._lock:
            found = self._descriptors.get(key)
            if found is not None:
                self._descriptors.move_to_end(key)
                return found
        descriptor = descriptor_from_version(self.registry.get_version(model_id, concrete))
        with self._lock:
            self._descriptors[key] = descriptor
            _trim(self._descriptors, self.cache_size * 16)
        return descriptor

    def load(self, model_id: str, version: int | None) -> LoadedModel:
        """The estimator, descriptor and background of a version (cached within the budget).

        Raises:
            ModelTooLarge: Loading it would exceed the whole memory budget.
            UnsafeArtifactError: The stored artifact is refused.
        """
        descriptor = self.describe(model_id, version)
        key = _model_key(descriptor)
        found = self.memory.get(key)
        if found is not None:
            return found
        estimator = self.registry.load_model(
            model_id, descriptor.version, reserve=self.memory.reserve
        )
        loaded = LoadedModel(estimator, descriptor, self.backgrounds.get_background(descriptor))
        self.memory.put(key, loaded, loaded_bytes(loaded))
        return loaded

    def recharge(self, loaded: LoadedModel) -> None:
        """Charges a cached model anew after explainers were built for it."""
        self.memory.recharge(_model_key(loaded.descriptor), loaded_bytes(loaded))


def loaded_bytes(loaded: LoadedModel) -> int:
    """What a loaded model takes: its estimator, background rows and built explainers."""
    return estimate_bytes(loaded.estimator, loaded.background, loaded.explainers)


def _model_key(descriptor: ModelDescriptor) -> tuple[str, int, str]:
    return (descriptor.model_id, descriptor.version, descriptor.artifact_sha256)


def _trim(cache: OrderedDict[Any, Any], size: int) -> None:
    while len(cache) > size:
        cache.popitem(last=False)
