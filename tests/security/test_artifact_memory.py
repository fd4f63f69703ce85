"""Loaded models are held within a byte budget: loads reserve what the artifact declares, the cache
is bounded in bytes (estimated from the loaded arrays), evicted models and their explainers are
freed, and a model that cannot fit is refused before skops builds anything."""

from __future__ import annotations

import gc
import threading
import tracemalloc
import weakref
from typing import Any

import numpy as np
import pytest

from chalicelib.core.errors import Conflict
from chalicelib.explainability.errors import ModelTooLarge
from chalicelib.explainability.loading import RegistryModelLoader, loaded_bytes
from chalicelib.explainability.memory import ModelMemory, estimate_bytes
from chalicelib.explainability.shap_engine import SHAPExplainer
from chalicelib.registry.service import ModelRegistry, VersionSpec
from tests.conftest import Http
from tests.security.helpers import unique

MB = 1 << 20
FEATURES = tuple(f"f{i}" for i in range(10))


def _neighbours(rows: int, seed: int) -> Any:
    """A KNN classifier whose memory is its training matrix (rows × 10 float64)."""
    from sklearn.neighbors import KNeighborsClassifier

    X = np.random.default_rng(seed).normal(size=(rows, 10))
    return KNeighborsClassifier(algorithm="brute").fit(X, (X[:, 0] > 0).astype(int))


def _register(registry: ModelRegistry, estimator: Any, compression: int = 0) -> tuple[str, int]:
    import skops.io as sio

    created = registry.create_model(unique("mem"))
    data = sio.dumps(estimator, compression=compression)
    spec = VersionSpec(feature_names=FEATURES, background_sample=((0.0,) * 10,))
    version = registry.register_version(created.model_id, spec, artifact=data)
    return created.model_id, version.version


def _loads(data: bytes) -> Any:
    import skops.io as sio

    from chalicelib.registry.safety import check_artifact

    return sio.loads(data, trusted=check_artifact(data))


@pytest.mark.parametrize("family", ["neighbours", "mlp"])
def test_the_estimate_matches_the_memory_the_loaded_model_holds(family: str) -> None:
    import skops.io as sio
    from sklearn.neural_network import MLPClassifier

    if family == "neighbours":
        estimator = _neighbours(40_000, 0)
    else:
        X = np.random.default_rng(0).normal(size=(500, 50))
        estimator = MLPClassifier(hidden_layer_sizes=(400, 400), max_iter=2).fit(X, X[:, 0] > 0)
    data = sio.dumps(estimator)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    loaded = _loads(data)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert held > MB
    assert estimate_bytes(loaded) == pytest.approx(held, rel=0.05)


def test_the_estimate_counts_every_tree_of_a_forest() -> None:
    from sklearn.ensemble import RandomForestClassifier

    X = np.random.default_rng(0).normal(size=(4000, 10))
    forest = RandomForestClassifier(n_estimators=30, random_state=0).fit(X, X[:, 0] > 0)
    loaded = _loads(__import__("skops.io").io.dumps(forest))
    # scikit-learn's documented tree layout: a 64-byte node record and one value per output/class.
    arrays = sum(
        t.tree_.node_count * (64 + 8 * t.tree_.n_outputs * t.tree_.max_n_classes)
        for t in loaded.estimators_
    )
    assert arrays <= estimate_bytes(loaded) <= 1.5 * arrays


@pytest.fixture
def registry(module_aws: Any) -> ModelRegistry:
    return ModelRegistry()


def test_the_loaded_model_cache_is_bounded_in_bytes_and_frees_what_it_evicts(
    registry: ModelRegistry,
) -> None:
    versions = [_register(registry, _neighbours(25_000, seed)) for seed in range(5)]  # 2 MB each
    loader = RegistryModelLoader(registry, memory_bytes=12 * MB)  # a load needs about 6.5 MB
    alive = []
    for model_id, version in versions:
        loaded = loader.load(model_id, version)
        alive.append(weakref.ref(loaded.estimator))
        assert 2 * MB < loaded_bytes(loaded) < 3 * MB
        assert loader.memory.cached_bytes <= 12 * MB
        del loaded
    cached = [key[:2] for key in loader.memory.keys()]  # noqa: SIM118
    assert 1 <= len(cached) < len(versions)
    assert cached == versions[-len(cached) :]  # the most recently used stay
    gc.collect()
    freed = [ref() is None for ref in alive]
    assert freed == [True] * (len(versions) - len(cached)) + [False] * len(cached)


def test_explainers_are_charged_to_their_model_and_leave_memory_with_it(
    registry: ModelRegistry,
) -> None:
    from sklearn.ensemble import RandomForestClassifier

    X = np.random.default_rng(0).normal(size=(3000, 10))
    forest = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, X[:, 0] > 0)
    model_id, version = _register(registry, forest)
    loader = RegistryModelLoader(registry, memory_bytes=8 * MB)
    shap = SHAPExplainer(loader)
    row = dict(zip(FEATURES, X[0].tolist(), strict=True))
    shap.explain_prediction(model_id, version, row)
    loaded = loader.load(model_id, version)
    alone = estimate_bytes(loaded.estimator, loaded.background)
    (explainer,) = loaded.explainers.values()
    assert loader.memory.cached_bytes > alone  # the TreeExplainer's copy of the trees counts
    ref = weakref.ref(explainer)
    del loaded, explainer
    for seed in range(4):  # other models push the forest out
        loader.load(*_register(registry, _neighbours(25_000, seed)))
    assert (model_id, version) not in [key[:2] for key in loader.memory.keys()]  # noqa: SIM118
    gc.collect()
    assert ref() is None


def test_a_model_larger_than_the_budget_is_refused_before_it_is_read(
    registry: ModelRegistry,
) -> None:
    model_id, version = _register(registry, _neighbours(25_000, 0))  # a 2 MB file
    loader = RegistryModelLoader(registry, memory_bytes=1 * MB)
    tracemalloc.start()
    with pytest.raises(ModelTooLarge, match="SYNAPSE_MODEL_MEMORY_BYTES"):
        loader.load(model_id, version)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < MB  # the artifact was not even downloaded


def test_a_small_file_that_expands_past_the_budget_is_refused_before_skops_runs(
    registry: ModelRegistry,
) -> None:
    import zipfile

    from sklearn.neighbors import KNeighborsClassifier

    zeros = KNeighborsClassifier(algorithm="brute").fit(np.zeros((200_000, 10)), [0, 1] * 100_000)
    model_id, version = _register(registry, zeros, compression=zipfile.ZIP_DEFLATED)
    assert registry.get_version(model_id, version).artifact_size < MB  # 16 MB of zeros, deflated
    loader = RegistryModelLoader(registry, memory_bytes=10 * MB)
    tracemalloc.start()
    with pytest.raises(ModelTooLarge, match="needs"):
        loader.load(model_id, version)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * MB  # read and checked, never expanded (expanding takes 32 MB)
    assert loader.memory.in_flight == 0 and loader.memory.cached_bytes == 0


def test_an_explanation_over_the_memory_budget_is_a_clear_422(
    module_http: Http, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    import skops.io as sio

    from chalicelib.explainability.service import get_explanation_service

    created = module_http.call("POST", "/models", {"name": unique("mem")})
    model_id = created.data["model_id"]
    body = {
        "artifact_base64": base64.b64encode(sio.dumps(_neighbours(25_000, 0))).decode(),
        "format": "skops",
        "task": "classification",
        "feature_names": list(FEATURES),
        "background_sample": [[0.0] * 10],
    }
    assert module_http.call("POST", f"/models/{model_id}/versions", body).status_code == 201
    monkeypatch.setenv("SYNAPSE_MODEL_MEMORY_BYTES", str(MB))
    get_explanation_service.reset()
    try:
        row = dict.fromkeys(FEATURES, 0.0)
        request = {"model_id": model_id, "model_version": 1, "input_data": row}
        response = module_http.call("POST", "/explanations", request)
    finally:
        monkeypatch.undo()
        get_explanation_service.reset()
    assert response.status_code == 422, response.data
    assert response.data["error"] == "model_too_large"
    assert "1048576 bytes (SYNAPSE_MODEL_MEMORY_BYTES)" in response.data["message"]


def _hold(memory: ModelMemory, nbytes: int, release: threading.Event) -> threading.Thread:
    """Another thread's load holding ``nbytes`` until ``release`` is set."""
    held = threading.Event()

    def load() -> None:
        with memory.reserve(nbytes):
            held.set()
            release.wait(10)

    worker = threading.Thread(target=load)
    worker.start()
    held.wait(10)
    return worker


def test_a_load_evicts_cached_models_waits_for_other_loads_and_gives_up_with_a_409() -> None:
    memory = ModelMemory(10 * MB, wait_seconds=0.2)
    memory.put("cached", object(), 4 * MB)
    release = threading.Event()
    other = _hold(memory, 6 * MB, release)  # fits beside the cached model
    assert memory.keys() == ["cached"]
    with pytest.raises(Conflict), memory.reserve(6 * MB):  # evicts it, then waits in vain
        pass
    assert memory.keys() == []
    memory.wait_seconds = 10
    threading.Timer(0.2, release.set).start()
    with memory.reserve(6 * MB):  # proceeds once the other load finished
        assert memory.in_flight == 6 * MB
    other.join()
    assert memory.in_flight == 0


def test_nested_reservations_that_can_never_fit_fail_at_once() -> None:
    memory = ModelMemory(10 * MB, wait_seconds=60)
    with (
        memory.reserve(6 * MB),  # the artifact as stored, then what loading it takes
        pytest.raises(ModelTooLarge, match="needs 12582912 bytes"),
        memory.reserve(6 * MB),
    ):
        pass
    assert memory.in_flight == 0


def test_a_value_larger_than_the_budget_is_not_kept_and_a_grown_one_evicts_others() -> None:
    memory = ModelMemory(10 * MB, max_entries=3)
    memory.put("huge", object(), 11 * MB)
    assert memory.keys() == []
    for name in ("a", "b", "c", "d"):
        memory.put(name, object(), MB)
    assert memory.keys() == ["b", "c", "d"]  # max_entries
    memory.recharge("c", 9 * MB + MB // 2)
    assert memory.keys() == ["c"] and memory.cached_bytes == 9 * MB + MB // 2
    memory.recharge("c", 12 * MB)
    assert memory.keys() == []
