"""shap's numba functions compiled when the explainer's image is built, not on each cold start.

shap compiles its Partition explainer (text and image SHAP), its maskers and its links with
numba on their first call in a process: about 3 s on a cold Lambda. shap does not ask numba to
cache them, so :func:`import_shap` does, when ``NUMBA_CACHE_DIR`` is set (never otherwise: numba
would write next to shap's sources). The explainer image runs :func:`warm` at build time with
the cache in the image (``layers/explainer/Dockerfile``); numba needs a writable cache directory,
so at run time ``NUMBA_CACHE_DIR`` is in ``/tmp`` and the built cache is copied there from
``SYNAPSE_NUMBA_CACHE_SEED`` before the first compilation. ``NUMBA_CPU_NAME=generic`` makes the
cached code run on whatever CPU the function lands on. Two shap functions numba cannot cache
as shap calls them are routed to cacheable copies (:mod:`chalicelib.explainability.jit_kernels`),
so a second fresh process compiles nothing.

``python -m chalicelib.explainability.jit_cache`` warms the cache (a text, an image and a
KernelSHAP explanation of small models) and prints the numba compilations it made.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from types import ModuleType
from typing import Any

from chalicelib.core.imports import import_clean_without

SEED_ENV = "SYNAPSE_NUMBA_CACHE_SEED"
UNCACHEABLE = frozenset({"shap.explainers._partition.lower_credit"})
_lock = threading.Lock()
_prepared: list[str] = []


def import_shap() -> ModuleType:
    """``shap``, imported on a clean thread, with its numba functions cached on disk when
    ``NUMBA_CACHE_DIR`` is set (the first call copies ``SYNAPSE_NUMBA_CACHE_SEED`` there)."""
    shap = import_clean_without("shap", ("matplotlib",))
    _plots_on_demand(shap)
    if not _prepared:
        with _lock:
            if not _prepared:
                _prepared.append(cache_directory() or "")
                if cache_directory():
                    _seed(cache_directory(), os.environ.get(SEED_ENV, ""))
                    cache_dispatchers("shap")
                    _cacheable_single_output()
                    _cacheable_lower_credit()
    return shap


def _plots_on_demand(shap: ModuleType) -> None:
    """``shap.plots`` imported when first used. shap imports matplotlib (and its plots) at
    import time when it can; no explanation draws, so :func:`import_shap` imports shap without
    it (a cold start's share of about 20%) and shap then keeps a stub that refuses every plot.
    The stub goes and ``shap.plots`` imports the real module (and matplotlib) on first access."""
    if "shap.plots" in sys.modules or not isinstance(
        vars(shap).get("plots"), getattr(shap, "UnsupportedModule", ())
    ):
        return
    del shap.plots

    def __getattr__(name: str) -> Any:  # noqa: N807 - a module's attribute hook
        if name == "plots":
            import importlib

            return importlib.import_module("shap.plots")
        raise AttributeError(f"module 'shap' has no attribute {name!r}")

    shap.__getattr__ = __getattr__  # type: ignore[method-assign]


def cache_directory() -> str:
    """numba's cache directory (``NUMBA_CACHE_DIR`` as numba read it), or ``""``."""
    if "numba" not in sys.modules:
        return os.environ.get("NUMBA_CACHE_DIR", "")
    from numba.core import config

    found: Any = getattr(config, "CACHE_DIR", "")  # set from NUMBA_CACHE_DIR when numba loads
    return str(found or "")


def _seed(target: str, seed: str) -> None:
    """Copies the cache built into the image to the writable ``target`` (once: an existing
    file is kept, so a warm instance keeps what it compiled itself)."""
    if not seed or not os.path.isdir(seed) or os.path.abspath(seed) == os.path.abspath(target):
        return
    shutil.copytree(seed, target, dirs_exist_ok=True, copy_function=_copy_new)


def _copy_new(source: str, destination: str) -> None:
    if not os.path.exists(destination):
        shutil.copy2(source, destination)


def cache_dispatchers(prefix: str) -> int:
    """Turns on numba's disk cache for every jitted function of the loaded ``prefix`` modules
    that has not compiled yet; returns how many."""
    from numba.core.dispatcher import Dispatcher

    enabled = 0
    for name, module in list(sys.modules.items()):
        if module is None or not (name == prefix or name.startswith(prefix + ".")):
            continue
        for value in list(vars(module).values()):
            if (
                isinstance(value, Dispatcher)
                and not value.overloads
                and _uncached(value)
                and not _loads_badly(value.py_func)
            ):
                value._cache = _cache_class()(value.py_func)  # type: ignore[attr-defined]
                enabled += 1
    return enabled


def _cacheable_single_output() -> None:
    """Routes shap's identity-link output builder to a copy numba can cache (see
    :mod:`chalicelib.explainability.jit_kernels`)."""
    from shap import links
    from shap.utils import _masked_model

    from chalicelib.explainability.jit_kernels import single_output

    current = _masked_model._build_fixed_single_output
    if not hasattr(current, "original"):
        _masked_model._build_fixed_single_output = single_output(current, links.identity)


def _cacheable_lower_credit() -> None:
    """Routes the Partition explainer's ``lower_credit`` (recursive: numba cannot load its
    cache) to the cached copy that walks the tree with a stack (see
    :mod:`chalicelib.explainability.jit_kernels`)."""
    from shap.explainers import _partition

    from chalicelib.explainability.jit_kernels import cached_lower_credit

    if not hasattr(_partition.lower_credit, "original"):
        _partition.lower_credit = cached_lower_credit(_partition.lower_credit)


def _cache_class() -> type:
    """numba's disk cache, except for compilations that take a jitted function as an argument
    (typed by its identity: never found again in a new process)."""
    from numba.core import types
    from numba.core.caching import FunctionCache

    def takes_a_function(sig: Any) -> bool:
        return any(isinstance(arg, types.Dispatcher) for arg in getattr(sig, "args", sig))

    class FunctionCacheWithoutFunctionArguments(FunctionCache):
        def load_overload(self, sig: Any, target_context: Any) -> Any:
            return None if takes_a_function(sig) else super().load_overload(sig, target_context)

        def save_overload(self, sig: Any, data: Any) -> None:
            if not takes_a_function(sig):
                super().save_overload(sig, data)

    return FunctionCacheWithoutFunctionArguments


def _loads_badly(function: Any) -> bool:
    """Functions numba writes a cache for that a new process crashes loading (a segmentation
    fault, with numba 0.61): shap's recursive ``lower_credit`` (its other recursive function,
    ``_rec_fill_masks``, loads well), which :func:`_cacheable_lower_credit` replaces.
    Checked by ``tests/unit/test_ex_jit_cache.py``."""
    return f"{function.__module__}.{function.__qualname__}" in UNCACHEABLE


def _uncached(dispatcher: Any) -> bool:
    from numba.core.caching import NullCache

    return isinstance(dispatcher._cache, NullCache)


class CompileCounter:
    """numba compilations (count and seconds) while installed, through numba's event API."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.functions: list[str] = []  # each outermost compilation's function
        self._depth = 0
        self._started = 0.0

    def __enter__(self) -> CompileCounter:
        from numba.core import event

        self._listener = _counting_listener(self)
        event.register("numba:compile", self._listener)
        return self

    def __exit__(self, *exc_info: object) -> None:
        from numba.core import event

        event.unregister("numba:compile", self._listener)

    def on_start(self, function: str) -> None:
        if self._depth == 0:
            self._started = time.perf_counter()
            self.functions.append(function)
        self._depth += 1

    def on_end(self) -> None:
        self._depth -= 1
        self.count += 1
        if self._depth == 0:  # nested compilations are inside the outer one's time
            self.seconds += time.perf_counter() - self._started


def _counting_listener(counter: CompileCounter) -> Any:
    from numba.core.event import Listener

    class Counting(Listener):
        def on_start(self, event: Any) -> None:
            counter.on_start(event.data["dispatcher"].py_func.__qualname__)

        def on_end(self, event: Any) -> None:
            counter.on_end()

    return Counting()


# ---- warming the cache (image build) --------------------------------------------------------


class _Models:
    """An in-memory model loader for :func:`warm` (the registry is not involved)."""

    def __init__(self) -> None:
        self.models: dict[str, Any] = {}

    def add(self, name: str, estimator: Any, task: str, features: int, background: Any) -> None:
        from chalicelib.explainability.loading import LoadedModel, ModelDescriptor

        names = tuple(f"f{i}" for i in range(features))
        classes = tuple(str(c) for c in estimator.classes_)
        descriptor = ModelDescriptor(name, 1, task, names, classes, f"warm-{name}")
        self.models[name] = LoadedModel(estimator, descriptor, background)

    def describe(self, model_id: str, version: int | None) -> Any:
        return self.models[model_id].descriptor

    def load(self, model_id: str, version: int | None) -> Any:
        return self.models[model_id]


def warm() -> dict[str, Any]:
    """Runs a text, an image and a KernelSHAP explanation of small models, so that every numba
    function they reach is compiled into ``NUMBA_CACHE_DIR``; returns the compilations."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from chalicelib.explainability.shap_engine import SHAPExplainer

    rng = np.random.default_rng(0)
    models = _Models()
    words = [f"w{i}" for i in range(50)]
    corpus = [" ".join(rng.choice(words, 12)) for _ in range(60)]
    text_model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(
        corpus, [int("w1 " in text) for text in corpus]
    )
    models.add("text", text_model, "text_classification", 0, None)
    images = rng.random((6, 24, 24))
    image_model = LogisticRegression(max_iter=50).fit(images.reshape(6, -1), [0, 1] * 3)
    models.add("image", image_model, "image_classification", 0, None)
    rows = rng.normal(size=(60, 4))
    table = LogisticRegression().fit(rows, (rows[:, 0] > 0).astype(int))
    models.add("table", table, "classification", 4, rows[:20])
    explainer = SHAPExplainer(models)
    import_shap()
    with CompileCounter() as compiled:
        explainer.explain_text_prediction("text", 1, " ".join(words[:15]), max_evals=100)
        explainer.explain_image_prediction("image", 1, images[0].tolist(), max_evals=100)
        row = {f"f{i}": float(value) for i, value in enumerate(rows[0])}
        explainer.explain_prediction("table", 1, row, algorithm="kernel")
    return {
        "cache_dir": cache_directory(),
        "compilations": compiled.count,
        "compile_seconds": round(compiled.seconds, 3),
        "compiled": compiled.functions,
    }


if __name__ == "__main__":
    print(json.dumps(warm()))
