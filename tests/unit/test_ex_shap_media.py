"""SHAP (Partition explainer) on real text and image classifiers registered through the registry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from chalicelib.core.errors import UnprocessableEntity, ValidationError
from chalicelib.explainability.models import ExplanationRequest, ExplanationType
from tests.helpers.explain import MemoryContext, memory_context, register

REVIEWS = [
    "an excellent film",
    "excellent acting and a fine story",
    "the cast was excellent",
    "simply excellent",
    "an awful film",
    "awful acting and a dull story",
    "the cast was awful",
    "simply awful",
] * 3
SENTIMENT = [1, 1, 1, 1, 0, 0, 0, 0] * 3


@pytest.fixture
def ctx() -> MemoryContext:
    """The registry and service over in-memory stores."""
    return memory_context()


def _text_model(ctx: Any) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(TfidfVectorizer(), LogisticRegression(C=10)).fit(REVIEWS, SENTIMENT)
    return register(ctx.reg, pipeline, "text_classification", [], np.zeros((0, 0)), ["neg", "pos"])


def _image_model(ctx: Any) -> tuple[Any, np.ndarray]:
    """Class ``top`` has a bright top half, ``bottom`` a bright bottom half (12×12 grayscale)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    images = rng.random((120, 12, 12)) * 0.2
    labels = rng.integers(0, 2, 120)
    images[labels == 1, :6, :] += 0.8
    images[labels == 0, 6:, :] += 0.8
    classifier = LogisticRegression(max_iter=500).fit(images.reshape(120, -1), labels)
    model = register(ctx.reg, classifier, "image_classification", [], images, ["bottom", "top"])
    return model, images[int(np.flatnonzero(labels == 1)[0])]


def test_text_shap_gives_the_decisive_word_the_largest_positive_contribution(ctx: Any) -> None:
    model = _text_model(ctx)
    text = "the story was excellent, truly excellent"
    explanation = ctx.svc.shap.explain_text_prediction(model.model_id, model.version, text)
    weights = explanation.contribution_map()
    proba = model.estimator.predict_proba([text])[0]
    assert explanation.explained_class == "pos"
    assert explanation.input_kind == "text" and explanation.algorithm == "partition"
    assert explanation.explanation_type == "shap" and explanation.output_space == "probability"
    assert explanation.top_positive_features[0] == "excellent"
    assert weights["excellent"] == max(weights.values()) > 0.1
    # both occurrences of "excellent" are one feature, like LIME's bag of words
    assert [c.feature_name for c in explanation.feature_contributions].count("excellent") == 1
    assert set(weights) == {"the", "story", "was", "excellent", "truly"}
    # Partition SHAP is additive: masked-everything value + contributions = the model's output
    assert explanation.actual_prediction == pytest.approx(proba[1], abs=1e-12)
    assert explanation.base_prediction == pytest.approx(
        model.estimator.predict_proba([""])[0][1], abs=1e-12
    )
    total = explanation.base_prediction + sum(weights.values())
    assert abs(total - explanation.actual_prediction) < 1e-6
    assert explanation.additivity_error < 1e-6
    assert explanation.parameters == {
        "max_evals": 500,
        "class_name": None,
        "seed": 0,
        "n_tokens": 6,  # "excellent" twice
    }
    assert ctx.bus.of_type("ExplanationCompleted")[-1].detail["algorithm"] == "partition"


def test_text_shap_explains_the_requested_class_and_is_deterministic(ctx: Any) -> None:
    model = _text_model(ctx)
    text = "an awful story with excellent acting"
    explain = ctx.svc.shap.explain_text_prediction
    negative = explain(model.model_id, model.version, text, class_name="neg", seed=7)
    assert negative.explained_class == "neg"
    weights = negative.contribution_map()
    assert weights["awful"] == max(weights.values()) > 0 > weights["excellent"]
    assert negative.additivity_error < 1e-6
    ctx.svc.shap.cache = None  # recompute instead of reading the cache
    again = explain(model.model_id, model.version, text, class_name="neg", seed=7)
    assert again.cached is False
    assert [(c.feature_name, c.contribution) for c in again.feature_contributions] == [
        (c.feature_name, c.contribution) for c in negative.feature_contributions
    ]
    assert again.base_prediction == negative.base_prediction


def test_text_shap_through_the_service_is_cached_per_method_and_options(ctx: Any) -> None:
    model = _text_model(ctx)
    request = ExplanationRequest(
        model.model_id, model.version, input_data={"text": "simply excellent"}, max_evals=200
    )
    first = ctx.svc.explain(request)
    second = ctx.svc.explain(request)
    assert first.algorithm == "partition" and first.cached is False
    assert second.cached is True and second.contribution_map() == first.contribution_map()
    # the key the Lambda backend checks before invoking is the key the engine stored under
    descriptor, key = ctx.svc.request_key(request)
    assert ctx.svc.cache.get(key, descriptor.model_id) is not None
    other_budget = ExplanationRequest(
        model.model_id, model.version, input_data={"text": "simply excellent"}, max_evals=300
    )
    assert ctx.svc.explain(other_budget).cached is False
    lime = ExplanationRequest(
        model.model_id,
        model.version,
        ExplanationType.LIME,
        {"text": "simply excellent"},
        num_samples=100,
    )
    assert ctx.svc.explain(lime).algorithm == "lime_text"


def test_text_and_image_shap_options_are_validated(ctx: Any) -> None:
    model = _text_model(ctx)
    explain = ctx.svc.shap.explain_text_prediction
    for bad, message in (
        ({"max_evals": 5}, "max_evals must be between 10 and 10000"),
        ({"max_evals": 10_001}, "max_evals must be between 10 and 10000"),
        ({"class_name": "meh"}, "unknown class_name"),
        ({"hide_color": float("nan")}, "hide_color must be a finite number"),
        ({"segmentation": "watershed"}, "segmentation must be one of"),
    ):
        with pytest.raises(ValidationError, match=message):
            explain(model.model_id, model.version, "excellent", **bad)
    with pytest.raises(ValidationError, match="input_data.text"):
        explain(model.model_id, model.version, "  ")
    with pytest.raises(UnprocessableEntity, match="not an image classifier"):
        ctx.svc.shap.explain_image_prediction(model.model_id, model.version, [[0, 1], [1, 0]])
    dependence = {"model_id": model.model_id, "model_version": model.version}
    dependence.update(feature="excellent", inputs=[{"text": "excellent"}])
    with pytest.raises(UnprocessableEntity, match="need a tabular model"):
        ctx.svc.dependence(dependence)


def test_image_shap_explains_lime_superpixels_additively(ctx: Any) -> None:
    model, image = _image_model(ctx)
    explanation = ctx.svc.shap.explain_image_prediction(
        model.model_id, model.version, image.tolist(), n_segments=4
    )
    lime = ctx.svc.lime.explain_image_prediction(
        model.model_id, model.version, image.tolist(), num_samples=50, n_segments=4
    )
    segments = np.asarray(explanation.segments)
    assert segments.shape == (12, 12)
    assert explanation.segments == lime.segments  # the same features for both methods
    assert explanation.input_kind == "image" and explanation.algorithm == "partition"
    assert explanation.explained_class == "top"
    weights = {c.feature_value: c.contribution for c in explanation.feature_contributions}
    assert set(weights) == set(np.unique(segments).tolist())
    assert all(
        c.feature_name == f"segment_{c.feature_value}" for c in explanation.feature_contributions
    )
    top = np.mean([weights[s] for s in np.unique(segments[:6])])
    bottom = np.mean([weights[s] for s in np.unique(segments[6:])])
    assert top > bottom and top > 0
    # masked superpixels take the image's mean: the base is the model on a flat mean image
    flat = np.full((1, 144), image.mean())
    assert explanation.base_prediction == pytest.approx(model.estimator.predict_proba(flat)[0][1])
    assert explanation.actual_prediction == pytest.approx(
        model.estimator.predict_proba(image.reshape(1, -1))[0][1]
    )
    assert explanation.additivity_error < 1e-6
    assert explanation.parameters["hide_color"] is None
    assert explanation.parameters["n_superpixels"] == len(weights)


def test_image_shap_is_deterministic_and_honours_hide_color_and_size(ctx: Any) -> None:
    model, image = _image_model(ctx)
    explain = ctx.svc.shap.explain_image_prediction
    black = explain(model.model_id, model.version, image.tolist(), n_segments=9, hide_color=0.0)
    black_image = np.zeros((1, 144))
    assert black.base_prediction == pytest.approx(model.estimator.predict_proba(black_image)[0][1])
    assert black.additivity_error < 1e-6 and len(black.feature_contributions) > 4
    ctx.svc.shap.cache = None
    again = explain(model.model_id, model.version, image.tolist(), n_segments=9, hide_color=0.0)
    assert again.contribution_map() == black.contribution_map()
    budget = explain(model.model_id, model.version, image.tolist(), n_segments=9, max_evals=10)
    assert budget.additivity_error < 1e-6  # additive even when the budget runs out
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    with pytest.raises(ValidationError, match="expects 144"):
        explain(model.model_id, model.version, rgb.tolist())


@pytest.mark.parametrize("text", ["excellent", "awful!", "!!!", "🙂"])
def test_a_text_of_one_token_gets_the_whole_difference_from_the_masked_text(
    ctx: Any, text: str
) -> None:
    """shap's text masker cannot cluster fewer than two tokens (numpy's max of an empty
    array, a 500); with one feature its Shapley value is, by definition, f(text) − f(masked)."""
    model = _text_model(ctx)
    explanation = ctx.svc.shap.explain_text_prediction(model.model_id, model.version, text)
    proba = model.estimator.predict_proba([text])[0]
    label = int(np.argmax(proba))
    masked = model.estimator.predict_proba([""])[0][label]  # no word left, as "..."
    assert explanation.explained_class == ["neg", "pos"][label]
    assert explanation.actual_prediction == pytest.approx(proba[label], abs=1e-12)
    assert explanation.base_prediction == pytest.approx(masked, abs=1e-12)
    [only] = explanation.feature_contributions
    assert only.feature_name == (text.rstrip("!") or text)
    assert only.contribution == pytest.approx(proba[label] - masked, abs=1e-12)
    assert explanation.parameters["n_tokens"] == 1


@pytest.mark.parametrize("kind", [ExplanationType.SHAP, ExplanationType.LIME])
@pytest.mark.parametrize("pixel", [1e308, 5e307, -5e307])
def test_an_image_of_the_largest_doubles_is_explained_not_a_500(
    ctx: Any, kind: ExplanationType, pixel: float
) -> None:
    """Switched-off superpixels take the image's mean, which summed 36 pixels of 1e308 to inf
    (scikit-learn then refused the masked images: a 500). A constant image is its own mean:
    hiding any superpixel changes nothing, so every contribution is 0 and the base is the
    prediction."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    images = rng.random((40, 6, 6))
    classifier = LogisticRegression().fit(images.reshape(40, -1), np.arange(40) % 2)
    model = register(ctx.reg, classifier, "image_classification", [], images, ["a", "b"])
    image = np.full((6, 6), pixel)
    request = ExplanationRequest(model.model_id, model.version, kind, {"image": image.tolist()})
    explanation = ctx.svc.explain(request)
    label = ["a", "b"].index(explanation.explained_class)
    assert not any(c.contribution for c in explanation.feature_contributions)
    assert explanation.actual_prediction == classifier.predict_proba(image.reshape(1, -1))[0][label]
    # Where the model's own arithmetic overflows (inf - inf inside its decision function),
    # the answer is the clean 422 every explanation gives for non-finite outputs.
    image = np.full((6, 6), -1.7e308)
    request = ExplanationRequest(model.model_id, model.version, kind, {"image": image.tolist()})
    with pytest.raises(UnprocessableEntity, match="not finite"):
        ctx.svc.explain(request)
