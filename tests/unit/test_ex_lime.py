"""LIME explanations of real tabular, text and image classifiers registered through the registry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from chalicelib.core.errors import UnprocessableEntity, ValidationError
from chalicelib.explainability.models import ExplanationRequest, ExplanationType
from tests.helpers.explain import MemoryContext, memory_context, register, tabular_data

TEXTS = [
    "a great fun movie",
    "wonderful acting and a great story",
    "good fun for everyone",
    "awful plot and bad acting",
    "boring bad and awful",
    "a terrible boring story",
] * 4
LABELS = [1, 1, 1, 0, 0, 0] * 4


@pytest.fixture
def ctx() -> MemoryContext:
    """The registry and service over in-memory stores."""
    return memory_context()


def _forest(ctx: Any) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    X, names = tabular_data(200, 4)
    y = (X[:, 0] + 2 * X[:, 1] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=15, max_depth=5, random_state=0).fit(X, y)
    return register(ctx.reg, forest, "classification", names, X, ["neg", "pos"], X[:100])


def test_lime_tabular_reports_fidelity_and_the_driving_features(ctx: Any) -> None:
    model = _forest(ctx)
    explanation = ctx.svc.lime.explain_prediction(
        model.model_id, model.version, model.row(7), num_samples=800
    )
    assert explanation.algorithm == "lime_tabular"
    assert explanation.output_space == "probability"
    assert 0.0 <= explanation.local_fidelity <= 1.0
    assert (
        explanation.explained_class == ["neg", "pos"][int(model.estimator.predict(model.X[7:8])[0])]
    )
    assert explanation.actual_prediction == pytest.approx(
        model.estimator.predict_proba(model.X[7:8]).max()
    )
    top_two = {c.feature_name for c in explanation.feature_contributions[:2]}
    assert "f1" in top_two
    assert all(c.condition for c in explanation.feature_contributions)


def test_lime_is_deterministic_for_a_seed_even_without_the_cache(ctx: Any) -> None:
    model = _forest(ctx)
    args = (model.model_id, model.version, model.row(3))
    first = ctx.svc.lime.explain_prediction(*args, num_samples=500, seed=11)
    ctx.svc.cache.invalidate_model(model.model_id)
    again = ctx.svc.lime.explain_prediction(*args, num_samples=500, seed=11)
    other = ctx.svc.lime.explain_prediction(*args, num_samples=500, seed=12)
    assert not again.cached
    assert again.contribution_map() == first.contribution_map()
    assert again.local_fidelity == first.local_fidelity
    assert other.contribution_map() != first.contribution_map()


def test_lime_regression_explains_the_prediction(ctx: Any) -> None:
    from sklearn.linear_model import LinearRegression

    X, names = tabular_data(150, 3)
    y = 4 * X[:, 0] - X[:, 2]
    model = register(ctx.reg, LinearRegression().fit(X, y), "regression", names, X, background=X)
    explanation = ctx.svc.lime.explain_prediction(
        model.model_id, model.version, model.row(1), num_samples=600
    )
    assert explanation.output_space == "raw"
    assert explanation.explained_class is None
    assert explanation.feature_contributions[0].feature_name == "f0"
    assert explanation.actual_prediction == pytest.approx(model.estimator.predict(X[1:2])[0])


def test_lime_text_explains_a_tfidf_pipeline_word_by_word(ctx: Any) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression(C=10)).fit(TEXTS, LABELS)
    model = register(ctx.reg, pipeline, "text_classification", [], np.zeros((0, 0)), ["neg", "pos"])
    request = ExplanationRequest(
        model_id=model.model_id,
        explanation_type=ExplanationType.LIME,
        model_version=model.version,
        input_data={"text": "a great story but awful acting"},
        num_samples=400,
        seed=3,
        class_name="pos",
    )
    explanation = ctx.svc.explain(request)
    weights = explanation.contribution_map()
    assert explanation.algorithm == "lime_text"
    assert explanation.input_kind == "text"
    assert explanation.explained_class == "pos"
    assert weights["great"] > 0 > weights["awful"]
    assert explanation.local_fidelity > 0.5
    assert ctx.svc.explain(request).contribution_map() == weights


def test_lime_image_returns_superpixel_weights_and_the_segment_map(ctx: Any) -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    images = rng.random((120, 12, 12)) * 0.2
    labels = rng.integers(0, 2, 120)
    images[labels == 1, :6, :] += 0.8  # class 1: bright top half
    images[labels == 0, 6:, :] += 0.8  # class 0: bright bottom half
    classifier = LogisticRegression(max_iter=500).fit(images.reshape(120, -1), labels)
    model = register(ctx.reg, classifier, "image_classification", [], images, ["bottom", "top"])
    image = images[int(np.flatnonzero(labels == 1)[0])]
    explanation = ctx.svc.lime.explain_image_prediction(
        model.model_id, model.version, image.tolist(), num_samples=300, n_segments=4
    )
    segments = np.asarray(explanation.segments)
    assert segments.shape == (12, 12)
    assert explanation.explained_class == "top"
    weights = {c.feature_value: c.contribution for c in explanation.feature_contributions}
    assert set(weights) == set(np.unique(segments).tolist())
    top_weight = np.mean([weights[s] for s in np.unique(segments[:6])])
    bottom_weight = np.mean([weights[s] for s in np.unique(segments[6:])])
    assert top_weight > bottom_weight
    with pytest.raises(ValidationError, match="expects 144"):
        ctx.svc.lime.explain_image_prediction(
            model.model_id, model.version, np.zeros((5, 5)).tolist()
        )
    assert "hide_color" not in explanation.parameters  # default: the image's mean
    black = ExplanationRequest(
        model.model_id, model.version, ExplanationType.LIME, {"image": image.tolist()}
    )
    black.num_samples, black.n_segments, black.hide_color = 300, 4, 0.0
    hidden_black = ctx.svc.explain(black)
    assert hidden_black.parameters["hide_color"] == 0.0
    assert hidden_black.base_prediction != explanation.base_prediction
    with pytest.raises(ValidationError, match="hide_color"):
        ctx.svc.lime.explain_image_prediction(
            model.model_id, model.version, image.tolist(), hide_color=float("nan")
        )


def test_unimplemented_types_on_a_text_model_are_422(ctx: Any) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, LABELS)
    model = register(ctx.reg, pipeline, "text_classification", [], np.zeros((0, 0)))
    # (SHAP on text and image models: tests/unit/test_ex_shap_media.py)
    for kind in (ExplanationType.INTEGRATED_GRADIENTS, ExplanationType.ATTENTION):
        request = ExplanationRequest(model.model_id, model.version, kind, {"text": "fun"})
        with pytest.raises(UnprocessableEntity, match="not implemented"):
            ctx.svc.explain(request)
    bad = ExplanationRequest(model.model_id, model.version, ExplanationType.LIME, {"text": " "})
    with pytest.raises(ValidationError, match="input_data.text"):
        ctx.svc.explain(bad)


@pytest.mark.parametrize("text", ["!!!", "🙂", "-- ?"])
def test_lime_on_a_text_without_words_is_422_not_a_crash(ctx: Any, text: str) -> None:
    """LIME perturbs a text by removing words; with none (its splitter finds only separators)
    it drew a count of words from an empty range (numpy's ``low >= high``, a 500)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, LABELS)
    model = register(ctx.reg, pipeline, "text_classification", [], np.zeros((0, 0)))
    request = ExplanationRequest(
        model.model_id, model.version, ExplanationType.LIME, {"text": text}
    )
    with pytest.raises(UnprocessableEntity, match="no word"):
        ctx.svc.explain(request)
    fine = ExplanationRequest(model.model_id, model.version, ExplanationType.LIME, {"text": "fun!"})
    assert [c.feature_name for c in ctx.svc.explain(fine).feature_contributions] == ["fun"]
