"""The explainer's cold path (issue 17): a fresh interpreter's first TreeSHAP answer of a forest
loads the model through the registry's checked loader and imports neither shap (its C kernel
is loaded on its own), numba, pandas, matplotlib (shap's plots) nor every scikit-learn
estimator module (skops' default trust list); all stay available on demand (a later
``import shap`` shares the kernel already loaded), and skops still refuses what the registry did
not approve.

Counts modules in a child process, never seconds (``bench/bench_explainer_cold_start.py`` times
the same path against ``import shap``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Imported by sklearn.utils.all_estimators, never by loading or explaining a random forest.
ESTIMATOR_MODULES = (
    "sklearn.gaussian_process",
    "sklearn.semi_supervised",
    "sklearn.cross_decomposition",
    "sklearn.kernel_ridge",
    "sklearn.naive_bayes",
    "sklearn.neural_network",
)

CHILD = """
import hashlib, json, sys
path = sys.argv[1]
from chalicelib.explainability.loading import LoadedModel, ModelDescriptor
from chalicelib.explainability.shap_engine import SHAPExplainer
from chalicelib.registry.service import load_checked, skops_io
data = open(path, "rb").read()
estimator = load_checked(data, hashlib.sha256(data).hexdigest())
names = ("f0", "f1", "f2")
descriptor = ModelDescriptor("m", 1, "classification", names, ("0", "1"), "m")
class Loader:
    def describe(self, model_id, version):
        return descriptor
    def load(self, model_id, version):
        return LoadedModel(estimator, descriptor, None)
answer = SHAPExplainer(Loader()).explain_prediction(
    "m", 1, {"f0": 0.5, "f1": -1.0, "f2": 2.0}, algorithm="tree")
first = sorted(sys.modules)
import skops.io
refused = ""
try:
    skops_io().loads(data, trusted=[])
except skops.io.exceptions.UntrustedTypesFoundException as exc:
    refused = type(exc).__name__
import shap
same_kernel = shap.explainers._tree._cext is sys.modules["shap._cext"]
plots = callable(shap.plots.bar)
print("ANSWER " + json.dumps({"contributions": len(answer.feature_contributions),
    "modules": first, "refused": refused, "plots": plots, "same_kernel": same_kernel,
    "matplotlib_after_plots": "matplotlib" in sys.modules}))
"""


def _answer(child: str, path: Path) -> dict:
    """What ``child`` prints on its ``ANSWER`` line, run in a fresh interpreter without numba's
    cache directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_", "PYTEST_"))}
    env.update(AWS_DEFAULT_REGION="us-east-1", SYNAPSE_METRICS="off")
    env.pop("NUMBA_CACHE_DIR", None)
    result = subprocess.run(
        [sys.executable, "-c", child, str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("ANSWER "))
    found: dict = json.loads(line[len("ANSWER ") :])
    return found


def test_the_first_tree_answer_skips_shap_pandas_and_unused_estimators_which_stay_available(
    tmp_path: Path,
) -> None:
    import numpy as np
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    rows = np.random.default_rng(4).normal(size=(80, 3))
    forest = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0)
    path = tmp_path / "forest.skops"
    path.write_bytes(sio.dumps(forest.fit(rows, (rows[:, 0] > 0).astype(int))))

    found = _answer(CHILD, path)
    assert found["contributions"] == 3
    modules = set(found["modules"])
    assert "matplotlib" not in modules and "shap.plots" not in modules
    assert {"shap", "numba", "pandas"}.isdisjoint(modules), {"shap", "numba", "pandas"} & modules
    assert found["same_kernel"] is True
    assert modules.isdisjoint(ESTIMATOR_MODULES), sorted(modules & set(ESTIMATOR_MODULES))
    assert "sklearn.ensemble" in modules and "skops.io" in modules
    # skops' trust is what the registry passes: nothing trusted, the forest is refused.
    assert found["refused"] == "UntrustedTypesFoundException"
    # shap's plots are imported when asked for, with matplotlib.
    assert found["plots"] is True and found["matplotlib_after_plots"] is True


KERNEL_CHILD = """
import hashlib, json, sys
import numpy as np
path = sys.argv[1]
from chalicelib.explainability.loading import LoadedModel, ModelDescriptor
from chalicelib.explainability.shap_engine import SHAPExplainer
from chalicelib.registry.service import load_checked
data = open(path, "rb").read()
estimator = load_checked(data, hashlib.sha256(data).hexdigest())
names = tuple(f"f{i}" for i in range(12))
descriptor = ModelDescriptor("m", 1, "classification", names, ("0", "1"), "m")
background = np.random.default_rng(1).normal(size=(150, 12))
class Loader:
    def describe(self, model_id, version):
        return descriptor
    def load(self, model_id, version):
        return LoadedModel(estimator, descriptor, background)
row = {name: 0.25 * i for i, name in enumerate(names)}
answer = SHAPExplainer(Loader()).explain_prediction("m", 1, row, algorithm="kernel")
print("ANSWER " + json.dumps({"algorithm": answer.algorithm,
    "error": answer.additivity_error, "rows": answer.parameters["background_rows_used"],
    "modules": sorted(sys.modules)}))
"""


def test_the_first_kernel_answer_imports_no_shap_numba_or_pandas(tmp_path: Path) -> None:
    """KernelSHAP (a k-means summary of 150 background rows to 100) is numpy's, not shap's."""
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    rows = np.random.default_rng(4).normal(size=(120, 12))
    model = LogisticRegression().fit(rows, (rows[:, 0] - rows[:, 5] > 0).astype(int))
    path = tmp_path / "logistic.skops"
    path.write_bytes(sio.dumps(model))

    found = _answer(KERNEL_CHILD, path)
    assert found["algorithm"] == "kernel" and found["rows"] == 100
    assert found["error"] < 1e-9
    modules = set(found["modules"])
    assert {"shap", "numba", "pandas"}.isdisjoint(modules), {"shap", "numba", "pandas"} & modules
