"""Pipelines with categorical columns (issue 16): strings in ``input_data`` for the columns a
ColumnTransformer encodes, explanations per input column (one-hot groups summed).

Oracle: shap's TreeExplainer on the pipeline's last step, its encoded columns mapped back to the
input columns by scikit-learn's own ``get_feature_names_out`` (``<step>__<column>_<category>``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from chalicelib.core.errors import UnprocessableEntity, ValidationError
from tests.helpers.explain import MemoryContext, count_shap_values, memory_context, register

NAMES = ["color", "size", "city", "age"]


@pytest.fixture
def ctx() -> MemoryContext:
    """The registry and service over in-memory stores."""
    return memory_context()


def _frame(n: int = 300, seed: int = 0) -> Any:
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "color": rng.choice(["red", "green", "blue"], n),
            "size": rng.normal(size=n),
            "city": rng.choice(["paris", "oslo", "rome", "lima"], n),
            "age": rng.integers(18, 80, n).astype(float),
        }
    )


def _pipeline(final: Any, frame: Any, y: Any) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    encode = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["color", "city"]),
            ("num", StandardScaler(), ["size", "age"]),
        ],
        remainder="drop",  # passthrough stores a FunctionTransformer, which the registry refuses
    )
    return make_pipeline(encode, final).fit(frame, y)


def _oracle(pipeline: Any, frame: Any) -> np.ndarray:
    """shap on the last step, grouped per input column by the encoded columns' names."""
    import shap

    encoded = pipeline[:-1].transform(frame)
    values = np.asarray(shap.TreeExplainer(pipeline[-1]).shap_values(encoded))
    names = pipeline[0].get_feature_names_out()
    owner = [next(c for c in NAMES if name.split("__", 1)[1].startswith(c)) for name in names]
    return np.stack(
        [
            values[:, [j for j, o in enumerate(owner) if o == column]].sum(axis=1)
            for column in NAMES
        ],
        axis=1,
    )


def _rows(frame: Any, count: int) -> list[dict[str, Any]]:
    return [dict(zip(NAMES, frame.iloc[i].tolist(), strict=True)) for i in range(count)]


def test_a_pipeline_with_categorical_columns_is_explained_per_input_column(ctx: Any) -> None:
    from sklearn.ensemble import GradientBoostingRegressor

    frame = _frame()
    y = (frame["color"] == "red") * 2.0 + frame["size"] + (frame["city"] == "oslo") * 1.0
    pipeline = _pipeline(GradientBoostingRegressor(n_estimators=20, random_state=0), frame, y)
    model = register(ctx.reg, pipeline, "regression", NAMES, np.zeros((1, 4)))
    rows = _rows(frame, 6)
    batch = ctx.svc.shap.explain_batch(model.model_id, model.version, rows)
    expected = _oracle(pipeline, frame.iloc[:6])
    for i, explanation in enumerate(batch):
        assert explanation.algorithm == "tree"
        found = explanation.contribution_map()
        assert [found[c] for c in NAMES] == pytest.approx(expected[i].tolist(), abs=1e-12)
        assert explanation.actual_prediction == pytest.approx(
            pipeline.predict(frame.iloc[i : i + 1])[0]
        )
        assert explanation.additivity_error < 1e-9
        values = {c.feature_name: c.feature_value for c in explanation.feature_contributions}
        assert values["color"] == rows[i]["color"]
    single = ctx.svc.shap.explain_prediction(model.model_id, model.version, rows[2])
    assert single.cached and single.contribution_map() == batch[2].contribution_map()


def test_a_classifier_pipeline_explains_each_class_and_refuses_strings_elsewhere(
    ctx: Any,
) -> None:
    from sklearn.ensemble import RandomForestClassifier

    frame = _frame(seed=1)
    y = np.where(frame["city"] == "rome", "yes", "no")
    forest = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0)
    pipeline = _pipeline(forest, frame, y)
    model = register(ctx.reg, pipeline, "classification", NAMES, np.zeros((1, 4)))
    row = _rows(frame, 1)[0]
    explanation = ctx.svc.shap.explain_prediction(
        model.model_id, model.version, row, class_name="yes"
    )
    import shap

    encoded = pipeline[:-1].transform(frame.iloc[:1])
    raw = np.asarray(shap.TreeExplainer(forest).shap_values(encoded))[0, :, 1]
    assert sum(explanation.contribution_map().values()) == pytest.approx(raw.sum(), abs=1e-12)
    assert explanation.output_space == "probability"
    with pytest.raises(ValidationError, match="feature 'size' must be a number; got str"):
        ctx.svc.shap.explain_prediction(model.model_id, model.version, {**row, "size": "big"})
    with pytest.raises(ValidationError, match="LIME explains numeric columns"):
        ctx.svc.lime.explain_prediction(model.model_id, model.version, row)


def test_a_categorical_pipeline_whose_last_step_is_not_a_tree_is_422(ctx: Any) -> None:
    from sklearn.linear_model import Ridge

    frame = _frame(seed=2)
    pipeline = _pipeline(Ridge(), frame, frame["size"] * 2)
    model = register(ctx.reg, pipeline, "regression", NAMES, np.zeros((1, 4)))
    with pytest.raises(UnprocessableEntity, match="must be a tree model"):
        ctx.svc.shap.explain_prediction(model.model_id, model.version, _rows(frame, 1)[0])


@pytest.mark.parametrize(("rows", "background"), [(1, "rows"), (300, "zeros"), (1000, "rows")])
def test_the_estimate_of_a_categorical_pipeline_counts_the_tree_shap_it_runs(
    ctx: Any, rows: int, background: str
) -> None:
    """The engine explains a pipeline with categorical columns by TreeSHAP on its last step:
    the estimate prices that (one model row per input, the engine's shap calls on the encoded
    columns, without a deadline and under a synchronous one), not KernelSHAP or exact SHAP
    over the background, because the planner asks the engine's own choice of algorithm. A
    background the pipeline cannot encode (zeros for its string columns) is timed as zeros of
    the encoded width."""
    from sklearn.ensemble import RandomForestClassifier

    from chalicelib.explainability import budget
    from chalicelib.explainability.models import BatchRequest

    frame = _frame(n=max(300, 2 * rows), seed=2)
    y = np.select([frame["city"] == "rome", frame["size"] > 0], ["a", "b"], "c")
    forest = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0)
    pipeline = _pipeline(forest, frame, y)
    rows_in = frame.iloc[:20].to_numpy() if background == "rows" else np.zeros((1, 4))
    model = register(ctx.reg, pipeline, "classification", NAMES, rows_in)
    descriptor = ctx.svc.model_loader.describe(model.model_id, model.version)
    loaded = ctx.svc.model_loader.load(model.model_id, model.version)
    for start, allowance in ((0, None), (rows, budget.sync_allowance())):
        inputs = _rows(frame.iloc[start:], rows)  # rows not explained (cached) yet
        request = BatchRequest.from_dict(
            {"model_id": model.model_id, "explanation_type": "shap", "inputs": inputs}
        )
        with budget.bounded(allowance):
            planned = ctx.svc.planner.measured(request, descriptor)
            counted = count_shap_values(ctx.svc.shap.tree_explainer(loaded))
            batch = ctx.svc.shap.explain_batch(model.model_id, model.version, inputs)
        assert {e.algorithm for e in batch} == {"tree"}
        assert planned.model_rows == rows, allowance
        assert planned.model_calls == counted["calls"] >= 1, allowance
