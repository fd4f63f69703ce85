"""Step 2a: train three model versions on the split and register them (skops) in the registry.

v1 LogisticRegression (goes to production), v2 RandomForest (the canary that will misbehave),
v3 GradientBoosting (the challenger of the A/B test).
"""

from __future__ import annotations

import base64
from typing import Any

from demo.data import Frame
from demo.story import Context, Skip

ROUTES = [
    ("POST", "/models"),
    ("POST", "/models/{}/versions"),
    ("POST", "/models/{}/versions/{}/stage"),
]


def candidates(seed: int, fast: bool = False) -> list[tuple[str, Any]]:
    """(description, unfitted estimator) in registration order."""
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    forest, boosting = (40, 50) if fast else (200, 150)
    return [
        (
            "StandardScaler + LogisticRegression",
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        ),
        (
            f"RandomForestClassifier ({forest} trees)",
            RandomForestClassifier(n_estimators=forest, max_depth=8, random_state=seed, n_jobs=1),
        ),
        (
            f"GradientBoostingClassifier ({boosting} trees of depth 3)",
            GradientBoostingClassifier(n_estimators=boosting, max_depth=3, random_state=seed),
        ),
    ]


def _register(
    ctx: Context, model_id: str, estimator: Any, description: str, train: Frame, metadata: dict
) -> dict[str, Any]:
    from skops.io import dumps

    artifact = base64.b64encode(dumps(estimator)).decode()
    stride = max(1, len(train.X) // 100)
    body = {
        "artifact_base64": artifact,
        "format": "skops",
        "task": "classification",
        "feature_names": train.feature_names,
        "class_names": [str(c) for c in estimator.classes_],
        "background_sample": train.X[::stride][:100],
        "description": description,
        "metadata": metadata,
    }
    train_version = ctx.shared.get("train_version")
    if train_version:
        body["metadata"] = {**metadata, "train_dataset_version_id": train_version["version_id"]}
    return ctx.api.post(f"/models/{model_id}/versions", body)


def run(ctx: Context) -> None:
    """Trains, registers, and promotes v1 to production."""
    ctx.need_routes("the model registry", ROUTES)
    train, test = ctx.shared.get("train"), ctx.shared.get("test")
    if train is None or test is None:
        raise Skip("no training data")
    model = ctx.api.post(
        "/models",
        {"name": f"breast-cancer-{ctx.suffix}", "description": "malignant vs benign"},
    )
    model_id = model["model_id"]
    ctx.say(f"  model {model['name']} ({model_id})")
    fitted, rows = {}, []
    for description, estimator in candidates(ctx.options.seed, ctx.fast):
        estimator.fit(train.X, train.y)
        accuracy = float(estimator.score(test.X, test.y))
        version = _register(
            ctx, model_id, estimator, description, train, {"test_accuracy": f"{accuracy:.4f}"}
        )
        fitted[version["version"]] = estimator
        rows.append(
            {
                "version": version["version"],
                "description": description,
                "test_accuracy": accuracy,
                "artifact_size": version.get("artifact_size"),
                "stage": version.get("stage"),
            }
        )
        ctx.say(
            f"  v{version['version']}: {description}: test accuracy {accuracy:.3f}, "
            f"{version.get('artifact_size', 0):,} bytes of skops"
        )
    staged = ctx.api.post(f"/models/{model_id}/versions/1/stage", {"stage": "production"})
    ctx.say(f"  v1 is now {staged.get('stage')}")
    ctx.shared.update(model_id=model_id, estimators=fitted)
    ctx.results["models"] = {"model": model, "versions": rows, "production": 1}
