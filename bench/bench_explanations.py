"""Warm explanation latencies: the service next to the same shap/lime call made directly.

Runs in-process against moto (no AWS account): models are trained here, registered through the
model registry (skops), and explained through ``ExplanationService``. Each row reports the median
of warm repetitions:

* ``direct``: the library call alone on a pre-built explainer (what a hand-written script does).
* ``service``: the service's compute path (input validation, cache key, model/explainer LRU,
  output-space bookkeeping, additivity check, result objects) with the cache bypassed.
* ``service + cache miss``: the full path including the DynamoDB cache lookup and write and the
  ExplanationCompleted event (moto in-process, so AWS round-trips are not representative).
* ``cache hit``: a repeated request answered from the in-memory cache level.
* ``service's own cost``: the compute path with the library call replaced by its recorded result
  (see :func:`stubbed_overhead`); ``overhead`` is that cost over ``direct``. For the single
  TreeSHAP rows both are timed warm in alternating blocks of calls, in thread CPU time
  (:func:`warm_overhead`), the direct single-row booster call predicting on one thread as the
  service's does (:func:`one_thread_explainer`), and the service gets its input dict built
  once, as the direct call gets its array. Every direct booster call skips shap's additivity
  check, as the service's call does (its own check is part of its own cost). The wall-clock
  difference ``service - direct`` is shown too, but on a shared 2-vCPU machine its noise is
  larger than the overhead being measured; for the booster batches the same pairs are also
  timed in process CPU time (``CPU-time difference``: both sides run on one thread, so time
  spent descheduled by other processes does not count).

Usage: ``.venv/bin/python bench/bench_explanations.py [--quick] [--only boosters ...] [--single]``
(sections: tree, boosters, kernel, lime; ``--single``: no batch rows and no cache hit, so
``--only tree boosters --single`` runs the three single TreeSHAP rows); prints a markdown table and
writes ``bench/results/explanations.json`` in the shared row format (figure, ours, peer, ratio,
unit, target, met): ours is the full service path with the cache miss, the peer the direct call;
each row keeps the measurements behind it (``case``, ``direct_ms``, ``overhead_pct``, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from results_io import machine_meta, report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "SYNAPSE_STAGE": "bench",
        "SYNAPSE_METRICS": "off",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "SYNAPSE_EXPLANATION_BACKEND": "inprocess",
    }
)
os.environ.pop("AWS_ENDPOINT_URL", None)

import numpy as np  # noqa: E402

TARGETS_MS = {
    "single TreeSHAP": 20.0,
    "XGBoost single TreeSHAP": 20.0,
    "LightGBM single TreeSHAP": 20.0,
    "XGBoost batch TreeSHAP (per row)": 100.0,
    "LightGBM batch TreeSHAP (per row)": 100.0,
    "single KernelSHAP": 500.0,
    "batch TreeSHAP (per row)": 100.0,
    "LIME tabular": 2000.0,
    "cache hit": 5.0,
}


# The service's own cost allowed over the direct library call (targets.md: overhead ≤ 10%).
OVERHEAD_LIMIT = 0.10


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 2) -> float:
    """Median wall time of ``fn`` in milliseconds after ``warmup`` calls."""
    return paired([fn], repeat, warmup)[0]


def paired(
    fns: list[Callable[[], Any]],
    repeat: int,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Median times (ms; wall clock unless ``clock`` says otherwise) of several functions called
    in alternation.

    Alternating the calls spreads load from other processes on the machine evenly over the
    figures being compared, so the overhead ratio stays meaningful on a busy machine.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            started = clock()
            fn()
            samples[i].append((clock() - started) * 1000)
    return [statistics.median(values) for values in samples]


def stubbed_overhead(call: Callable[[], Any], owner: Any, attr: str, repeat: int) -> float:
    """The service's own cost (ms): ``call`` timed with the library call ``owner.attr`` replaced
    by a function that returns the result it recorded on a real run.

    What remains is validation, caching keys, LRUs, bookkeeping and result assembly, measured
    without the library's work, so a busy machine inflates it far less than a difference of two
    noisy wall-clock figures.
    """
    with replaying(owner, attr, call):
        return timed(call, repeat)


def paired_overhead(
    call: Callable[[], Any], owner: Any, attr: str, peer: Callable[[], Any], repeat: int
) -> tuple[float, float]:
    """``(own, peer)`` medians (ms): the service's own cost (as :func:`stubbed_overhead`) and the
    direct library call ``peer`` (on its own explainer) timed in alternation, so the overhead
    ratio divides two figures measured under the same load."""
    with replaying(owner, attr, call):
        peer_ms, own_ms = paired([peer, call], repeat)
    return own_ms, peer_ms


def warm_overhead(
    call: Callable[[], Any],
    owner: Any,
    attr: str,
    peer: Callable[[], Any],
    repeat: int,
    blocks: tuple[int, int] = (200, 20),
) -> tuple[float, float]:
    """``(own, peer)`` per-call medians (ms of the calling thread's CPU time) of a single-row
    call: the service's own cost (as :func:`stubbed_overhead`, ``blocks[0]`` consecutive calls
    a block) and the direct library call (``blocks[1]`` a block), the blocks alternating.

    Both sides run warm, each after its own kind of call: a call timed right after the other
    side's runs with the caches the other left (the service's own work after a booster's
    library call took 2-4 times its warm time here, the direct call after the service's up to
    a third more), so alternating single calls would weigh each side by the other's footprint.
    The blocks last a few milliseconds each (about 7 and 10 for a booster), so the other
    processes' interruptions fall on both alike. Both run on this thread (one-thread boosters
    and forests), so CPU time leaves out the time the machine's load takes from either, which
    moved wall-clock medians of 8 blocks by half between runs at load 4.
    """

    def repeated(fn: Callable[[], Any], times: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(times):
                fn()

        return run

    own_block, peer_block = blocks
    timed_blocks = [repeated(call, own_block), repeated(peer, peer_block)]
    with replaying(owner, attr, call):
        own_ms, peer_ms = paired(timed_blocks, repeat, 1, time.thread_time)
    return own_ms / own_block, peer_ms / peer_block


@contextlib.contextmanager
def replaying(owner: Any, attr: str, call: Callable[[], Any]) -> Iterator[None]:
    """``owner.attr`` records its results on one real ``call``, then replays them in order."""
    real = getattr(owner, attr)
    had_own = attr in vars(owner)
    recorded: list[Any] = []

    def record(*args: Any, **kwargs: Any) -> Any:
        recorded.append(real(*args, **kwargs))
        return recorded[-1]

    setattr(owner, attr, record)
    try:
        call()
        if not recorded:
            # A stub the call never reaches would time the library's work as the service's own.
            raise LookupError(f"the call does not use {owner!r}.{attr}: stub what it calls")
        # A call may be split into parts (TreeSHAP in chunks of rows): replay them in order.
        replay = iter(())

        def replayed(*args: Any, **kwargs: Any) -> Any:
            nonlocal replay
            found = next(replay, None)
            if found is None:
                replay = iter(recorded)
                found = next(replay)
            return found

        setattr(owner, attr, replayed)
        yield
    finally:
        if had_own:
            setattr(owner, attr, real)
        else:
            delattr(owner, attr)


def cached_explainer(engine: Any, model_id: str, version: int = 1) -> Any:
    """The explainer an engine built for ``model_id`` (explainers live with the loaded model)."""
    for key, value in engine.model_loader.load(model_id, version).explainers.items():
        if key[0] == model_id:
            return value[0] if isinstance(value, tuple) else value
    raise LookupError(model_id)


class Setup:
    """Trained and registered models plus a service with and without a cache."""

    def __init__(self, single_only: bool = False) -> None:
        from chalicelib.core.events import get_event_bus
        from chalicelib.explainability.cache import ExplanationCache
        from chalicelib.explainability.loading import RegistryModelLoader
        from chalicelib.explainability.repository import ExplanationRepository
        from chalicelib.explainability.service import ExplanationService
        from chalicelib.registry.service import ModelRegistry
        from synapse_local.bootstrap import bootstrap

        bootstrap()
        self.single_only = single_only  # single-row rows only (no batches, no cache hit)
        self.registry = ModelRegistry()
        loader = RegistryModelLoader(self.registry)
        repository = ExplanationRepository()
        self.service = ExplanationService(
            loader, ExplanationCache(repository), repository, get_event_bus(), backend="inprocess"
        )
        # The same engines without a cache: the compute path alone.
        self.uncached = ExplanationService(
            loader, ExplanationCache(None), repository, None, backend="inprocess"
        )
        self.uncached.shap.cache = None
        self.uncached.lime.cache = None
        rng = np.random.default_rng(0)
        self.names = [f"x{i}" for i in range(20)]
        self.X = rng.normal(size=(4000, 20))
        logits = self.X[:, 0] * 2 - self.X[:, 1] + self.X[:, 2] * self.X[:, 3] + 0.5 * self.X[:, 4]
        self.y = (logits > 0).astype(int)
        self.background = self.X[:100]

    def register(self, estimator: Any) -> tuple[str, int]:
        import uuid

        import skops.io as sio

        from chalicelib.registry.service import VersionSpec

        model = self.registry.create_model(f"bench-{uuid.uuid4().hex[:6]}")
        spec = VersionSpec(
            format="skops",
            task="classification",
            feature_names=tuple(self.names),
            class_names=("no", "yes"),
            background_sample=tuple(tuple(float(v) for v in row) for row in self.background),
        )
        version = self.registry.register_version(
            model.model_id, spec, artifact=sio.dumps(estimator)
        )
        return model.model_id, version.version

    def row(self, i: int) -> dict[str, float]:
        return dict(zip(self.names, self.X[i].tolist(), strict=True))


def bench_tree(setup: Setup, repeat: int) -> list[dict[str, Any]]:
    import shap
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0, n_jobs=1)
    forest.fit(setup.X, setup.y)
    model_id, version = setup.register(forest)
    direct = shap.TreeExplainer(forest, feature_perturbation="tree_path_dependent")
    x = setup.X[1000:1001]
    counter = iter(range(1000, 4000))
    given = setup.row(1000)  # built once, as the direct call's array is

    def direct_single() -> None:
        direct.shap_values(x, check_additivity=False)

    def single() -> None:
        setup.uncached.shap.explain_prediction(model_id, version, given)

    def service_miss() -> None:
        setup.service.shap.explain_prediction(model_id, version, setup.row(next(counter)))

    rows = []
    direct_ms, service_ms, miss_ms = paired([direct_single, single, service_miss], repeat)
    explainer = cached_explainer(setup.uncached.shap, model_id, version)
    own_single, direct_warm = warm_overhead(single, explainer, "shap_values", direct_single, repeat)
    own_ms = own_single / direct_warm * direct_ms
    rows.append(
        row(
            "single TreeSHAP",
            "RandomForest 100 trees, depth 8, 20 features",
            direct_ms,
            service_ms,
            miss_ms,
            own_ms,
        )
    )
    if setup.single_only:
        return rows
    batch = setup.X[:1000]
    inputs = [setup.row(i) for i in range(1000)]
    rng = np.random.default_rng(7)

    def fresh_rows() -> list[dict[str, float]]:
        # Batches are cached per row: new rows each time keep the full path a cache miss.
        values = rng.normal(size=(1000, len(setup.names))).tolist()
        return [dict(zip(setup.names, v, strict=True)) for v in values]

    batch_repeat = max(3, repeat // 10)
    direct_batch, service_batch, full_batch = (
        ms / 1000
        for ms in paired(
            [
                lambda: direct.shap_values(batch, check_additivity=False),
                lambda: setup.uncached.shap.explain_batch(model_id, version, inputs),
                lambda: setup.service.shap.explain_batch(model_id, version, fresh_rows()),
            ],
            batch_repeat,
            1,
        )
    )
    own_batch = (
        stubbed_overhead(
            lambda: setup.uncached.shap.explain_batch(model_id, version, inputs),
            explainer,
            "shap_values",
            batch_repeat,
        )
        / 1000
    )
    rows.append(
        row(
            "batch TreeSHAP (per row)",
            "same forest, 1,000 rows in one call",
            direct_batch,
            service_batch,
            full_batch,
            own_batch,
        )
    )
    from chalicelib.explainability.models import ExplanationRequest

    request = ExplanationRequest(model_id, version, input_data=setup.row(1000))
    setup.service.explain(request)
    hit_ms = timed(lambda: setup.service.explain(request), repeat * 5)
    rows.append(
        row(
            "cache hit",
            "same forest, repeated request (memory level)",
            direct_ms,
            hit_ms,
            hit_ms,
            hit_ms,
            compare="direct TreeSHAP",
        )
    )
    return rows


def booster_files(setup: Setup) -> dict[str, tuple[Any, str, bytes]]:
    """XGBoost (UBJSON) and LightGBM (text) boosters trained on the bench data: 100 trees."""
    import tempfile

    import lightgbm
    import xgboost

    data = xgboost.DMatrix(setup.X, label=setup.y)
    params = {"objective": "binary:logistic", "max_depth": 6, "nthread": 1, "seed": 0}
    xgb = xgboost.train(params, data, num_boost_round=100)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.ubj")
        xgb.save_model(path)
        with open(path, "rb") as handle:
            xgb_bytes = handle.read()
    lgb = lightgbm.train(
        {"objective": "binary", "num_leaves": 31, "verbose": -1, "num_threads": 1, "seed": 0},
        lightgbm.Dataset(setup.X, label=setup.y),
        100,
    )
    return {
        "XGBoost": (xgb, "xgboost_ubj", xgb_bytes),
        "LightGBM": (lgb, "lightgbm_text", lgb.model_to_string().encode()),
    }


def bench_boosters(setup: Setup, repeat: int) -> list[dict[str, Any]]:
    """TreeSHAP of XGBoost and LightGBM boosters through the service vs shap on the booster."""
    from chalicelib.registry.service import VersionSpec

    rows = []
    for library, (booster, fmt, data) in booster_files(setup).items():
        model = setup.registry.create_model(f"bench-{library.lower()}")
        spec = VersionSpec(format=fmt, task="classification", feature_names=tuple(setup.names))
        version = setup.registry.register_version(model.model_id, spec, artifact=data).version
        rows += _booster_rows(setup, library, fmt, booster, model.model_id, version, repeat)
    return rows


def one_thread_explainer(booster: Any) -> Any:
    """shap's TreeExplainer of ``booster`` (a LightGBM booster: a copy of it) predicting on one
    thread, as the service's boosters do (``chalicelib.registry.boosters.load_booster``,
    ``_tree.path_dependent``): for one row an OpenMP team only waits, for a second core on a
    busy machine (medians of 7-38 ms against 0.5-1.3 ms at load 5), which the service's calls
    do not pay. The batch rows keep the libraries' default threads (a script's)."""
    import functools

    import shap

    if type(booster).__module__.startswith("lightgbm"):
        booster = type(booster)(model_str=booster.model_to_string())
        booster.predict = functools.partial(booster.predict, num_threads=1)
    explainer = shap.TreeExplainer(booster, feature_perturbation="tree_path_dependent")
    if explainer.model.model_type == "xgboost":
        explainer.model._xgb_dmatrix_props = {"nthread": 1}
    return explainer


def _booster_rows(
    setup: Setup, library: str, fmt: str, booster: Any, model_id: str, version: int, repeat: int
) -> list[dict[str, Any]]:
    import shap

    # The direct call skips shap's additivity check, as the service's call does (for XGBoost
    # it is a second margin prediction); the service's own check is part of its own cost.
    direct = shap.TreeExplainer(booster, feature_perturbation="tree_path_dependent")
    one_row = one_thread_explainer(booster)
    x = setup.X[1000:1001]
    counter = iter(range(1000, 4000))
    given = setup.row(1000)  # built once, as the direct call's array is

    def direct_single() -> None:
        one_row.shap_values(x, check_additivity=False)

    def single() -> None:
        setup.uncached.shap.explain_prediction(model_id, version, given)

    def miss() -> None:
        setup.service.shap.explain_prediction(model_id, version, setup.row(next(counter)))

    direct_ms, service_ms, miss_ms = paired([direct_single, single, miss], repeat)
    explainer = cached_explainer(setup.uncached.shap, model_id, version)
    # The own cost and the direct call are timed warm in alternating blocks (the ratio divides
    # two figures measured under the same load); the own-cost column shows it at the scale of
    # the direct call measured above.
    own_single, direct_warm = warm_overhead(single, explainer, "shap_values", direct_single, repeat)
    own_ms = own_single / direct_warm * direct_ms
    trees = f"{library} 100 trees, 20 features ({fmt})"
    rows = [row(f"{library} single TreeSHAP", trees, direct_ms, service_ms, miss_ms, own_ms)]
    if setup.single_only:
        return rows
    batch, inputs = setup.X[:1000], [setup.row(i) for i in range(1000)]
    # Batches are the figure the overhead target is about: more pairs than the other batch row.
    batch_repeat = max(5, repeat // 4)

    def service_batch() -> None:
        setup.uncached.shap.explain_batch(model_id, version, inputs)

    def direct_batch() -> None:
        direct.shap_values(batch, check_additivity=False)

    timings = paired([direct_batch, service_batch], batch_repeat, 1)
    # The own cost is timed in alternation with the direct call, and the overhead is their
    # ratio; the own-cost column shows it at the scale of the direct call measured above.
    own_batch, direct_paired = paired_overhead(
        service_batch, explainer, "shap_values", direct_batch, batch_repeat
    )
    direct_per_row, service_per_row = (ms / 1000 for ms in timings)
    own = own_batch / direct_paired * direct_per_row
    # The same pairs in process CPU time: both calls run on one thread (nthread=1 boosters), so
    # time the process spends descheduled by other processes' load does not count.
    direct_cpu, service_cpu = paired(
        [direct_batch, service_batch], batch_repeat, 1, time.process_time
    )
    found = row(
        f"{library} batch TreeSHAP (per row)",
        "same booster, 1,000 rows in one call (compute path; no cache)",
        direct_per_row,
        service_per_row,
        service_per_row,
        own,
    )
    found["cpu_difference_pct"] = round((service_cpu - direct_cpu) / direct_cpu * 100, 1)
    found["note"] += f"; CPU-time difference {found['cpu_difference_pct']:+.1f}%"
    rows.append(found)
    return rows


def bench_kernel(setup: Setup, repeat: int) -> list[dict[str, Any]]:
    import shap
    from sklearn.neural_network import MLPClassifier

    from chalicelib.explainability.explainers._shapley_kernel import KernelShap

    mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0)
    mlp.fit(setup.X[:2000], setup.y[:2000])
    model_id, version = setup.register(mlp)
    x = setup.X[1500:1501]
    label = int(mlp.predict(x)[0])

    def predict(data: np.ndarray) -> np.ndarray:
        return mlp.predict_proba(data)[:, label]

    direct = shap.KernelExplainer(predict, setup.background)

    def direct_call() -> None:
        np.random.seed(0)
        direct.shap_values(x, nsamples="auto", silent=True, l1_reg=False)

    counter = iter(range(2000, 4000))
    direct_ms, service_ms, full_ms = paired(
        [
            direct_call,
            lambda: setup.uncached.shap.explain_prediction(model_id, version, setup.row(1500)),
            lambda: setup.service.shap.explain_prediction(
                model_id, version, setup.row(next(counter))
            ),
        ],
        max(3, repeat // 4),
    )
    # The service keeps one KernelShap per explained class (the key holds the output column);
    # which one a lookup by model finds first depends on the LRU's order (the cache-miss calls
    # above explain rows of either class), so the stub replaces the method on the class: the
    # Shapley computation of whichever explainer the request uses. KernelShap is built once
    # per (model, class, background options), not per request: the stubbed call shows it.
    own_ms = stubbed_overhead(
        lambda: setup.uncached.shap.explain_prediction(model_id, version, setup.row(1500)),
        KernelShap,
        "shap_values",
        repeat,
    )
    return [
        row(
            "single KernelSHAP",
            "MLP (32), 20 features, 100 background rows, nsamples auto",
            direct_ms,
            service_ms,
            full_ms,
            own_ms,
        )
    ]


def bench_lime(setup: Setup, repeat: int) -> list[dict[str, Any]]:
    from lime.lime_tabular import LimeTabularExplainer
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0, n_jobs=1)
    forest.fit(setup.X, setup.y)
    model_id, version = setup.register(forest)
    direct = LimeTabularExplainer(
        setup.background,
        feature_names=setup.names,
        class_names=["no", "yes"],
        discretize_continuous=True,
        random_state=0,
    )
    x = setup.X[2000]

    def direct_call() -> None:
        direct.random_state = direct.base.random_state = np.random.RandomState(0)
        direct.discretizer.random_state = direct.random_state
        direct.explain_instance(
            x, forest.predict_proba, top_labels=1, num_features=20, num_samples=5000
        )

    counter = iter(range(2001, 4000))
    direct_ms, service_ms, full_ms = paired(
        [
            direct_call,
            lambda: setup.uncached.lime.explain_prediction(
                model_id, version, setup.row(2000), num_samples=5000
            ),
            lambda: setup.service.lime.explain_prediction(
                model_id, version, setup.row(next(counter)), num_samples=5000
            ),
        ],
        max(3, repeat // 4),
    )
    own_ms = stubbed_overhead(
        lambda: setup.uncached.lime.explain_prediction(
            model_id, version, setup.row(2000), num_samples=5000
        ),
        cached_explainer(setup.uncached.lime, model_id),
        "explain_instance",
        repeat,
    )
    return [
        row(
            "LIME tabular",
            "RandomForest 100 trees, 20 features, 5,000 samples",
            direct_ms,
            service_ms,
            full_ms,
            own_ms,
        )
    ]


def row(
    name: str,
    model: str,
    direct: float,
    service: float,
    full: float,
    own: float,
    compare: str = "direct",
) -> dict[str, Any]:
    """One shared-format row: the full service path (with the cache miss) vs the direct call.

    ``met`` is the compute path's latency target (``meets_target``) and, except for the cache
    hit (which has no library call of its own), the overhead target: the service's own cost at
    most 10% of the direct call (``meets_overhead``). The measurements behind the row follow the
    shared fields, ``case`` being the short name the console table shows.
    """
    measured = {
        "case": name,
        "model": model,
        "direct_ms": round(direct, 3),
        "service_ms": round(service, 3),
        "service_with_cache_miss_ms": round(full, 3),
        "wall_clock_difference_pct": round((service - direct) / direct * 100, 1),
        "service_own_ms": round(own, 3),
        "overhead_pct": round(own / direct * 100, 1),
        "target_ms": TARGETS_MS[name],
        "meets_target": service <= TARGETS_MS[name],
        "meets_target_with_cache_miss": full <= TARGETS_MS[name],
        "compared_with": compare,
        "meets_overhead": None if name == "cache hit" else own <= direct * OVERHEAD_LIMIT,
    }
    ours, peer = measured["service_with_cache_miss_ms"], measured["direct_ms"]
    return {
        "figure": f"explanation latency: {name}",
        "ours": ours,
        "peer": peer,
        "peer_name": f"{compare} shap/lime call",
        "ratio": ours / peer if peer else None,
        "unit": "ms",
        "target": f"< {measured['target_ms']} ms; overhead ≤ 10%",
        "met": measured["meets_target"] and measured["meets_overhead"] is not False,
        "note": f"{model}; ours = the full service path (with the cache miss); the compute path "
        f"alone {measured['service_ms']} ms, overhead {measured['overhead_pct']}% vs the "
        f"{compare} call",
        **measured,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| figure | model | direct shap/lime (ms) | service (ms) | service's own cost (ms) | "
        "overhead | wall-clock difference | CPU-time difference | service + cache miss (ms) | "
        "target (ms) | met | met incl. miss |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        hit = r["case"] == "cache hit"
        overhead = "n/a" if hit else f"{r['overhead_pct']:.1f}%"
        difference = "n/a" if hit else f"{r['wall_clock_difference_pct']:+.1f}%"
        cpu = r.get("cpu_difference_pct")
        cpu_text = "–" if cpu is None else f"{cpu:+.1f}%"
        lines.append(
            f"| {r['case']} | {r['model']} | {r['direct_ms']:.3f} | {r['service_ms']:.3f} | "
            f"{r['service_own_ms']:.3f} | {overhead} | {difference} | {cpu_text} | "
            f"{r['service_with_cache_miss_ms']:.3f} | {r['target_ms']:.0f} | "
            f"{'yes' if r['meets_target'] else 'no'} | "
            f"{'yes' if r['meets_target_with_cache_miss'] else 'no'} |"
        )
    return "\n".join(lines)


SECTIONS: dict[str, Callable[[Setup, int], list[dict[str, Any]]]] = {
    "tree": bench_tree,
    "boosters": bench_boosters,
    "kernel": bench_kernel,
    "lime": bench_lime,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(SECTIONS), help="run these sections only"
    )
    parser.add_argument(
        "--single",
        action="store_true",
        help="single-row rows only (no batch rows, no cache hit): with --only tree boosters, "
        "the single TreeSHAP rows alone",
    )
    args = parser.parse_args()
    repeat = 8 if args.quick else 40
    from moto import mock_aws

    sections = args.only or list(SECTIONS)
    with mock_aws():
        setup = Setup(single_only=args.single)
        rows = [found for name in sections for found in SECTIONS[name](setup, repeat)]
    print(table(rows))
    meta = {**machine_meta(), "repeat": repeat, "statistic": "median", "sections": sections}
    meta["single_rows_only"] = args.single
    report("explanations", rows, meta)


if __name__ == "__main__":
    main()
