"""Generates ``chalicelib/registry/trusted_types.json``, the enumerated skops allow-list.

The API function checks uploaded models without importing scikit-learn (cold start), so the types
it trusts are static data in the repository, generated here from the pinned scikit-learn, numpy,
scipy and skops (``layers/explainer/requirements.txt``) and reviewed like code:

* ``estimators``: every class ``sklearn.utils.all_estimators()`` lists, by its *defining* module
  (``cls.__module__``), minus the ones that run a user's function (``FunctionTransformer``).
* ``helpers``: scikit-learn's own non-estimator types that fitted models hold (trees, tree
  predictors, binners, losses and links, kernels, optimizers, calibrators), found by dumping a
  corpus of real fitted models of every common family with skops and collecting the types, plus
  the documented families those belong to; not the neighbour trees (``KDTree``, ``BallTree``) and
  their distance metrics, whose compiled state is not checked (``REFUSED_HELPERS``).
* ``dicts``: the mapping types real models hold (``dict`` and scikit-learn's ``Bunch``).
* ``losses``, ``numpy_scalars``, ``sparse``, ``bit_generators``: what skops' ``LossNode``,
  ``NdArrayNode``/``TypeNode``, ``SparseMatrixNode`` and ``RandomGeneratorNode`` may name.
* ``restricted_parameters``: parameters of trusted classes that would read files or write to
  disk (``input`` of the text vectorizers, ``memory`` of pipelines and clustering) or run
  unbounded work (``token_pattern`` of the text vectorizers: a regular expression), with the
  only values a served model may hold.
* ``corpus_loaders``: every skops loader the corpus uses (the checker must accept all of them).

Nothing is trusted because of a name pattern, a prefix or an import path that re-exports it.
``tests/security/test_artifact_allowlist.py`` regenerates this and fails if the committed file
drifts from the installed libraries.

Run ``make trusted-types`` (or ``python -m infra.trusted_types``) after changing those pins.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parents[1] / "chalicelib" / "registry" / "trusted_types.json"

# Estimators that call a function the file names (a ``FunctionNode``) are refused anyway; this
# one exists only to do so, so it is not trusted at all.
REFUSED_ESTIMATORS = {"sklearn.preprocessing._function_transformer.FunctionTransformer"}

# Helper families: (module, base class). Every class of ``module`` that subclasses the base is a
# helper. Distance metrics that wrap a Python function (``PyFuncDistance*``) are left out.
HELPER_FAMILIES = [
    ("sklearn.gaussian_process.kernels", "Kernel"),
    ("sklearn._loss.loss", "BaseLoss"),
    ("sklearn._loss.link", "BaseLink"),
    ("sklearn.neural_network._stochastic_optimizers", "BaseOptimizer"),
]
REFUSED_HELPER = re.compile(r"PyFunc")
# Single helper classes fitted models hold (the corpus finds them too; listed so that the set does
# not depend on which estimators the corpus happens to fit).
HELPER_CLASSES = [
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.link.Interval",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.gaussian_process._gpc._BinaryGaussianProcessClassifierLaplace",
]
# Compiled structures whose content is not checked (``chalicelib/registry/structures.py`` checks
# trees, boosting predictors, libsvm models and sparse matrices): the neighbour trees index their
# data, node and bound arrays in compiled code without bounds checks (a KDTree whose idx_array
# holds 10**9 crashes a query), and their distance metrics size parameter vectors and matrices by
# the data. Models holding them (KNeighbors*/RadiusNeighbors*/NearestNeighbors/KernelDensity/
# LocalOutlierFactor/Isomap... with algorithm "kd_tree", "ball_tree" or an "auto" that picks one)
# are refused; with algorithm="brute" they hold neither.
REFUSED_HELPERS = {"sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree"}
REFUSED_HELPER_MODULES = ("sklearn.metrics._dist_metrics.",)
TREE = "sklearn.tree._tree.Tree"
# skops loaders that construct an instance of the class they name.
CLASS_LOADERS = ("ObjectNode", "TreeNode", "LossNode")
TESTING_MODULE = re.compile(r"(^|\.)(tests?|_?testing|conftest|_test_common)(\.|$)")

# Parameters of trusted classes that touch the host: ``input='filename'``/``'file'`` makes a text
# vectorizer open every input string as a path; ``memory`` makes a pipeline or clustering step
# cache to a directory (joblib.Memory). Served models must hold the harmless value.
# ``token_pattern`` is a regular expression the text vectorizers run on every input: a pattern
# with nested quantifiers such as ``(?:a+)+b`` backtracks exponentially (23 characters took
# about a second, 30 about two minutes) and Python's ``re`` cannot be interrupted, so only
# scikit-learn's default and a few simple patterns that match in linear time are served.
TOKEN_PATTERNS = [
    None,
    r"(?u)\b\w\w+\b",
    r"(?u)\b\w+\b",
    r"\b\w\w+\b",
    r"\b\w+\b",
    r"(?u)\w+",
    r"\w+",
    r"\w\w+",
    r"\S+",
    r"[^\s]+",
    r"[a-zA-Z]+",
    r"[A-Za-z]+",
    r"(?u)\b[a-zA-Z]{2,}\b",
    r"\b[a-zA-Z]{2,}\b",
]
RESTRICTED_PARAMETERS = {"input": ["content"], "memory": [None], "token_pattern": TOKEN_PATTERNS}


def type_name(cls: type) -> str:
    """``module.Class`` by the class's defining module (``cls.__module__``)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def resolves_to_itself(name: str) -> bool:
    """Whether ``name`` imports as a class defined in that very module (not a re-export)."""
    module_name, _, attr = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return False
    return isinstance(found, type) and type_name(found) == name


def estimator_types() -> list[str]:
    """Every estimator class of scikit-learn, by defining module."""
    from sklearn.utils import all_estimators

    names = {type_name(cls) for _, cls in all_estimators()}
    return sorted(n for n in names - REFUSED_ESTIMATORS if not TESTING_MODULE.search(n))


def family_types() -> set[str]:
    """The helper families' classes."""
    found = set(HELPER_CLASSES)
    for module_name, base_name in HELPER_FAMILIES:
        module = importlib.import_module(module_name)
        base = getattr(module, base_name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            name = type_name(cls)
            if (
                issubclass(cls, base)
                and cls is not base
                and not inspect.isabstract(cls)
                and cls.__module__ == module_name
                and not REFUSED_HELPER.search(name)
            ):
                found.add(name)
    return found


@lru_cache(maxsize=1)
def corpus() -> tuple[Any, ...]:
    """The corpus, fitted once per process, on one thread.

    The models are tiny (90 rows): OpenMP and BLAS threads only wait on each other, and on a
    loaded 2-core machine they spun the fit from 1.6 s to 16 s (the types fitted are the same).
    """
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        return tuple(_fit_corpus())


def _fit_corpus() -> Iterator[Any]:
    """Real fitted models of every common family (small data, fixed seeds)."""
    import numpy as np
    from sklearn import (
        calibration,
        cluster,
        compose,
        decomposition,
        discriminant_analysis,
        dummy,
        ensemble,
        feature_selection,
        gaussian_process,
        impute,
        isotonic,
        kernel_approximation,
        linear_model,
        model_selection,
        multiclass,
        naive_bayes,
        neighbors,
        neural_network,
        preprocessing,
        svm,
        tree,
    )

    rng = np.random.RandomState(0)
    X = rng.normal(size=(90, 5))
    y2 = (X[:, 0] + X[:, 1] > 0).astype(int)
    y3 = y2 + (X[:, 2] > 0.5).astype(int)
    yr = X @ np.arange(1.0, 6.0) + rng.normal(size=90)
    gpk = gaussian_process.kernels
    for cls in [
        linear_model.LogisticRegression,
        linear_model.SGDClassifier,
        linear_model.Perceptron,
        linear_model.RidgeClassifier,
        linear_model.PassiveAggressiveClassifier,
        tree.DecisionTreeClassifier,
        tree.ExtraTreeClassifier,
        ensemble.RandomForestClassifier,
        ensemble.ExtraTreesClassifier,
        ensemble.GradientBoostingClassifier,
        ensemble.HistGradientBoostingClassifier,
        ensemble.AdaBoostClassifier,
        ensemble.BaggingClassifier,
        neural_network.MLPClassifier,
        svm.SVC,
        svm.LinearSVC,
        neighbors.KNeighborsClassifier,
        neighbors.RadiusNeighborsClassifier,
        neighbors.NearestCentroid,
        naive_bayes.GaussianNB,
        discriminant_analysis.LinearDiscriminantAnalysis,
        discriminant_analysis.QuadraticDiscriminantAnalysis,
        dummy.DummyClassifier,
        gaussian_process.GaussianProcessClassifier,
    ]:
        for y in (y2, y3):
            yield _fit(cls, X, y)
    yield calibration.CalibratedClassifierCV(svm.LinearSVC(), cv=3).fit(X, y2)
    yield calibration.CalibratedClassifierCV(
        tree.DecisionTreeClassifier(random_state=0), method="isotonic", cv=3
    ).fit(X, y2)
    yield svm.SVC(probability=True, random_state=0).fit(X, y3)
    yield svm.NuSVC(nu=0.2).fit(X, y3)
    yield neighbors.KNeighborsClassifier(algorithm="ball_tree").fit(X, y2)
    yield neighbors.KNeighborsClassifier(algorithm="kd_tree", metric="manhattan").fit(X, y2)
    yield multiclass.OneVsRestClassifier(linear_model.LogisticRegression()).fit(X, y3)
    yield multiclass.OneVsOneClassifier(svm.LinearSVC()).fit(X, y3)
    yield ensemble.VotingClassifier(
        [("lr", linear_model.LogisticRegression()), ("nb", naive_bayes.GaussianNB())],
        voting="soft",
    ).fit(X, y2)
    yield ensemble.StackingClassifier(
        [("lr", linear_model.LogisticRegression()), ("dt", tree.DecisionTreeClassifier())]
    ).fit(X, y2)
    for cls in [
        linear_model.LinearRegression,
        linear_model.Ridge,
        linear_model.Lasso,
        linear_model.ElasticNet,
        linear_model.SGDRegressor,
        linear_model.HuberRegressor,
        linear_model.BayesianRidge,
        linear_model.PoissonRegressor,
        linear_model.TweedieRegressor,
        linear_model.QuantileRegressor,
        tree.DecisionTreeRegressor,
        ensemble.RandomForestRegressor,
        ensemble.ExtraTreesRegressor,
        ensemble.GradientBoostingRegressor,
        ensemble.HistGradientBoostingRegressor,
        ensemble.AdaBoostRegressor,
        neural_network.MLPRegressor,
        svm.SVR,
        svm.LinearSVR,
        neighbors.KNeighborsRegressor,
        dummy.DummyRegressor,
        isotonic.IsotonicRegression,
    ]:
        yield _fit(cls, X[:, :1] if cls is isotonic.IsotonicRegression else X, np.abs(yr))
    for loss in ("absolute_error", "huber", "quantile"):
        yield ensemble.GradientBoostingRegressor(loss=loss, n_estimators=5).fit(X, yr)
    for loss in ("absolute_error", "poisson", "gamma"):
        yield ensemble.HistGradientBoostingRegressor(loss=loss, max_iter=5).fit(X, np.abs(yr) + 1)
    yield ensemble.HistGradientBoostingRegressor(loss="quantile", quantile=0.5).fit(X, yr)
    yield ensemble.HistGradientBoostingClassifier(
        max_iter=5, categorical_features=[0], random_state=0
    ).fit(np.c_[rng.randint(0, 4, 90), X[:, 1:]], y2)
    yield gaussian_process.GaussianProcessRegressor(
        kernel=gpk.ConstantKernel() * gpk.RBF() + gpk.WhiteKernel(), random_state=0
    ).fit(X, yr)
    yield gaussian_process.GaussianProcessRegressor(
        kernel=gpk.Matern() + gpk.RationalQuadratic() + gpk.DotProduct() ** 2, random_state=0
    ).fit(X, yr)
    for cls in [
        preprocessing.StandardScaler,
        preprocessing.MinMaxScaler,
        preprocessing.RobustScaler,
        preprocessing.MaxAbsScaler,
        preprocessing.Normalizer,
        preprocessing.PolynomialFeatures,
        preprocessing.SplineTransformer,
        preprocessing.PowerTransformer,
        preprocessing.QuantileTransformer,
        preprocessing.KBinsDiscretizer,
        impute.SimpleImputer,
        impute.KNNImputer,
        decomposition.PCA,
        decomposition.TruncatedSVD,
        kernel_approximation.RBFSampler,
        kernel_approximation.Nystroem,
        feature_selection.VarianceThreshold,
        cluster.KMeans,
        cluster.MiniBatchKMeans,
    ]:
        yield _fit(cls, np.abs(X), None)
    yield decomposition.NMF(max_iter=50, random_state=0).fit(np.abs(X))
    yield feature_selection.SelectFromModel(linear_model.LogisticRegression()).fit(X, y2)
    yield preprocessing.TargetEncoder(random_state=0).fit(rng.randint(0, 3, (90, 2)), y2)
    yield preprocessing.LabelEncoder().fit(["a", "b", "c"])
    yield model_selection.GridSearchCV(
        linear_model.LogisticRegression(), {"C": [0.1, 1.0]}, cv=3
    ).fit(X, y2)
    yield compose.TransformedTargetRegressor(
        regressor=linear_model.Ridge(), transformer=preprocessing.StandardScaler()
    ).fit(X, yr)
    yield from _pipelines(X, y2)


def _fit(cls: type, X: Any, y: Any) -> Any:
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "random_state" in params:
        kwargs["random_state"] = 0
    for name, value in (("n_estimators", 5), ("max_iter", 30)):
        if name in params:
            kwargs[name] = value
    estimator = cls(**kwargs)
    return estimator.fit(X) if y is None else estimator.fit(X, y)


def _pipelines(X: Any, y: Any) -> Iterator[Any]:
    """Pipelines of the kinds the product explains: columns, encoders, text."""
    import numpy as np
    from sklearn import compose, feature_extraction, impute, linear_model, pipeline, preprocessing

    columns = {"num": list(X[:, 0]), "cat": [["a", "b", "c"][i % 3] for i in range(len(X))]}
    rows = np.array(list(zip(columns["num"], columns["cat"], strict=True)), dtype=object)
    encoders = compose.ColumnTransformer(
        [
            (
                "num",
                pipeline.make_pipeline(impute.SimpleImputer(), preprocessing.StandardScaler()),
                [0],
            ),
            ("cat", preprocessing.OneHotEncoder(handle_unknown="ignore"), [1]),
            ("ord", preprocessing.OrdinalEncoder(), [1]),
        ]
    )
    yield pipeline.Pipeline([("ct", encoders), ("lr", linear_model.LogisticRegression())]).fit(
        rows, y
    )
    yield pipeline.make_union(preprocessing.StandardScaler(), preprocessing.MinMaxScaler()).fit(X)
    texts = ["good plot", "bad acting", "great film", "awful movie", "fine cast"] * 6
    labels = [1, 0, 1, 0, 1] * 6
    text = feature_extraction.text
    for vectorizer in (
        text.TfidfVectorizer(),
        text.CountVectorizer(ngram_range=(1, 2)),
        text.HashingVectorizer(n_features=64),
    ):
        yield pipeline.make_pipeline(vectorizer, linear_model.LogisticRegression()).fit(
            texts, labels
        )
    yield pipeline.make_pipeline(
        text.CountVectorizer(), text.TfidfTransformer(), linear_model.SGDClassifier()
    ).fit(texts, labels)
    yield feature_extraction.DictVectorizer().fit([{"a": 1, "b": "x"}, {"a": 2}])


def walk_schema(node: Any) -> Iterator[dict[str, Any]]:
    """Every skops node (a dict with ``__loader__``) in a schema."""
    if isinstance(node, dict):
        if "__loader__" in node:
            yield node
        for value in node.values():
            yield from walk_schema(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk_schema(value)


def corpus_types() -> dict[str, dict[str, set[str]]]:
    """``{loader: {type: estimators whose dump holds it}}`` over skops dumps of the corpus."""
    import skops.io as sio

    found: dict[str, dict[str, set[str]]] = {}
    for model in corpus():
        with zipfile.ZipFile(io.BytesIO(sio.dumps(model))) as archive:
            schema = json.loads(archive.read("schema.json"))
        for node in walk_schema(schema):
            name = f"{node['__module__']}.{node['__class__']}"
            carriers = found.setdefault(node["__loader__"], {}).setdefault(name, set())
            carriers.add(type_name(type(model)))
    return found


def numpy_scalar_types() -> list[str]:
    """numpy's scalar types (``numpy.float64``...), as skops names them."""
    import numpy as np

    return sorted(
        {f"{t.__module__}.{t.__name__}" for t in np.sctypeDict.values()} - {"numpy.object_"}
    )


def sparse_types() -> list[str]:
    """scipy's sparse matrix and array classes, by defining module."""
    import scipy.sparse as sp

    names = []
    for fmt in ("csr", "csc", "coo", "bsr", "dia", "dok", "lil"):
        for kind in ("matrix", "array"):
            names.append(type_name(getattr(sp, f"{fmt}_{kind}")))
    return sorted(names)


def bit_generators() -> list[str]:
    """numpy's concrete bit generators (what ``RandomGeneratorNode`` may call)."""
    import numpy as np

    return sorted(
        name
        for name in dir(np.random)
        if isinstance(obj := getattr(np.random, name), type)
        and issubclass(obj, np.random.BitGenerator)
        and obj is not np.random.BitGenerator
    )


def loss_types() -> list[str]:
    """The Cython loss classes skops' ``LossNode`` constructs."""
    from skops.io._sklearn import ALLOWED_LOSSES

    return sorted(type_name(cls) for cls in ALLOWED_LOSSES)


def restricted_parameters(estimators: list[str]) -> dict[str, dict[str, list[Any]]]:
    """``{class: {parameter: allowed values}}`` for trusted classes with a restricted parameter."""
    rules: dict[str, dict[str, list[Any]]] = {}
    for name in estimators:
        module_name, _, attr = name.rpartition(".")
        cls = getattr(importlib.import_module(module_name), attr)
        params = inspect.signature(cls).parameters
        found = {p: v for p, v in RESTRICTED_PARAMETERS.items() if p in params}
        if found:
            rules[name] = found
    return rules


def generate() -> dict[str, Any]:
    """The allow-list document (what ``trusted_types.json`` holds)."""
    import numpy
    import scipy
    import sklearn
    import skops

    estimators = estimator_types()
    corpus = corpus_types()
    classes = {n for loader in CLASS_LOADERS for n in corpus.get(loader, {})}
    functions = {n: sorted(c) for n, c in corpus.get("FunctionNode", {}).items()}
    helpers = family_types() | {n for n in classes if n.startswith("sklearn.")}
    helpers -= set(estimators) | set(loss_types()) | REFUSED_ESTIMATORS | {TREE}
    helpers = {n for n in helpers - REFUSED_HELPERS if not n.startswith(REFUSED_HELPER_MODULES)}
    unknown = sorted(n for n in helpers | set(estimators) if not resolves_to_itself(n))
    if unknown:
        raise SystemExit(f"names that do not resolve to their defining module: {unknown}")
    dicts = {"builtins.dict"} | set(corpus.get("DictNode", {}))
    unknown += sorted(n for n in dicts if n.startswith("sklearn.") and not resolves_to_itself(n))
    if unknown:
        raise SystemExit(f"names that do not resolve to their defining module: {unknown}")
    testing = sorted(n for n in helpers | dicts if TESTING_MODULE.search(n))
    if testing:
        raise SystemExit(f"the corpus holds types of testing modules: {testing}")
    return {
        "generated_from": {
            "scikit-learn": sklearn.__version__,
            "skops": skops.__version__,
            "numpy": numpy.__version__,
            "scipy": scipy.__version__,
        },
        "estimators": estimators,
        "helpers": sorted(helpers),
        "dicts": sorted(dicts),
        "trees": [TREE],
        "losses": loss_types(),
        "numpy_scalars": numpy_scalar_types(),
        "sparse": sparse_types(),
        "bit_generators": bit_generators(),
        "restricted_parameters": restricted_parameters(estimators),
        "corpus_loaders": sorted(corpus),
        "corpus_functions": functions,
        "corpus_other_classes": sorted(n for n in classes if not n.startswith("sklearn.")),
    }


def render(document: dict[str, Any]) -> str:
    """The JSON text written to the repository (stable, one name per line)."""
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None, write: Callable[[str], Any] | None = None) -> int:
    """Writes (or with ``--check``, compares) ``trusted_types.json``."""
    args = sys.argv[1:] if argv is None else argv
    text = render(generate())
    if "--check" in args:
        same = OUTPUT.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{OUTPUT} differs from the installed libraries")
        return 0 if same else 1
    (write or OUTPUT.write_text)(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
