"""Step 6: attribution drift, and an explanation guardrail that rolls a shortcut model back.

* Drift: the challenger v3's global SHAP attribution over its own background rows (its baseline)
  against the same version's attribution over serving inputs (the test split), with Clarify's
  NDCG (``POST /explanations/drift``).
* Guardrail: a retrain of v3 whose training data leaked the label into one weak feature (the
  one v3 ranks lowest) scores well offline; registered as v4, it goes into an experiment against
  v3 with explanation guardrails (NDCG against the control at least 0.9 on the top 5, the leaked
  feature kept out of the top 3, ``action: rollback``) evaluated on the inputs the experiment
  served: each test row is routed and its input posted with the request id
  (``POST .../explanation-inputs``, a uniform bottom-k sample). The scheduled monitor submits one
  explanation job per arm, decides on a later tick, and rolls the experiment back with the
  reason.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from demo.client import poll
from demo.data import Frame
from demo.story import Context, Skip

ROUTES = [
    ("POST", "/explanations/drift"),
    ("POST", "/experiments"),
    ("POST", "/experiments/{}/route"),
    ("POST", "/experiments/{}/explanation-inputs"),
    ("PUT", "/experiments/{}/explanation-guardrails"),
    ("GET", "/experiments/{}/explanation-guardrails"),
]
MALIGNANT = "malignant"


def _drift(ctx: Context, model_id: str, version: int, test: Frame) -> dict[str, Any]:
    rows = test.records(range(min(len(test.y), 30 if ctx.fast else 50)))
    body = {
        "baseline": {"model_id": model_id, "model_version": version},
        "current": {"model_id": model_id, "model_version": version, "inputs": rows},
        "top_k": 5,
    }
    found = ctx.api.post("/explanations/drift", body)
    ctx.say(
        f"  drift of v{version}: background baseline vs {len(rows)} serving inputs: NDCG@5 "
        f"{found['ndcg']:.4f} (threshold {found['threshold']}: "
        f"{'drifted' if found['drifted'] else 'no drift'})"
    )
    ctx.say(f"    baseline top 5: {', '.join(found['baseline_top'])}")
    ctx.say(f"    serving  top 5: {', '.join(found['current_top'])}")
    return found


def _versions(ctx: Context, model_id: str, test: Frame) -> dict[str, Any]:
    rows = test.records(range(min(len(test.y), 30 if ctx.fast else 50)))
    sides = [{"model_id": model_id, "model_version": v, "inputs": rows} for v in (2, 3)]
    found = ctx.api.post(
        "/explanations/drift", {"baseline": sides[0], "current": sides[1], "top_k": 5}
    )
    ctx.say(
        f"  drift between v2 (RandomForest) and v3 (GradientBoosting) on the same inputs: "
        f"NDCG@5 {found['ndcg']:.4f} ({'drifted' if found['drifted'] else 'no drift'}); "
        f"largest changes: "
        + ", ".join(f"{c['feature']} {c['change']:+.4f}" for c in found["features"][:3])
    )
    return found


def _shortcut(ctx: Context, model_id: str, train: Frame, feature: str) -> dict[str, Any]:
    """v4: v3's recipe trained on data where ``feature`` carries the label (a pipeline bug)."""
    import numpy as np
    from sklearn.ensemble import GradientBoostingClassifier
    from skops.io import dumps

    X = np.asarray(train.X, dtype=float)
    y = np.asarray(train.y)
    column = train.feature_names.index(feature)
    spread = float(X[:, column].std()) or 1.0
    center = float(X[:, column].mean())
    noise = np.random.default_rng(ctx.options.seed).normal(scale=0.3 * spread, size=len(y))
    X[:, column] = np.where(y == MALIGNANT, center + spread, center - spread) + noise
    model = GradientBoostingClassifier(
        n_estimators=30 if ctx.fast else 100, max_depth=3, random_state=ctx.options.seed
    ).fit(X, y)
    stride = max(1, len(X) // 100)
    body = {
        "artifact_base64": base64.b64encode(dumps(model)).decode(),
        "format": "skops",
        "task": "classification",
        "feature_names": train.feature_names,
        "class_names": [str(c) for c in model.classes_],
        "background_sample": np.asarray(train.X)[::stride][:100].tolist(),
        "description": f"GradientBoosting retrained on data whose '{feature}' leaked the label",
        "metadata": {"train_accuracy_with_leak": f"{model.score(X, y):.4f}"},
    }
    version = ctx.api.post(f"/models/{model_id}/versions", body)
    ctx.say(
        f"  v{version['version']}: {body['description']} (training accuracy "
        f"{model.score(X, y):.3f})"
    )
    return version


def _serve(ctx: Context, experiment_id: str, test: Frame) -> dict[str, Any]:
    """Routes every test row (as requests the service answers) and posts their inputs."""
    served = []
    for index, row in enumerate(test.records(range(len(test.y)))):
        request_id = f"serve-{index}"
        ctx.api.post(f"/experiments/{experiment_id}/route", {"request_id": request_id})
        served.append({"request_id": request_id, "input_data": row})
    receipt = ctx.api.post(f"/experiments/{experiment_id}/explanation-inputs", {"inputs": served})
    ctx.say(
        f"  routed {len(served)} requests and posted their inputs: the experiment's uniform "
        f"sample holds {receipt['held']}"
    )
    return dict(receipt)


def _experiment(ctx: Context, model_id: str, control: int, treatment: int) -> str:
    body = {
        "name": f"shortcut-v{treatment}-{ctx.suffix}",
        "description": f"v{treatment} (a retrain) against v{control}, explanation guardrails",
        "variants": [
            {"variant_id": "control", "model_id": model_id, "model_version": control,
             "traffic_weight": "0.9", "is_control": True},
            {"variant_id": "treatment", "model_id": model_id, "model_version": treatment,
             "traffic_weight": "0.1"},
        ],
        "primary_metric": "success_rate",
    }  # fmt: skip
    experiment_id = ctx.api.post("/experiments", body)["experiment_id"]
    ctx.api.post(f"/experiments/{experiment_id}/start")
    return str(experiment_id)


def _decided(ctx: Context, path: str) -> dict[str, Any] | None:
    evaluation = ctx.api.get(path)["evaluation"]
    if evaluation is None or evaluation["status"] == "pending":
        return None
    return dict(evaluation)


def _guardrail(ctx: Context, model_id: str, control: int, feature: str, test: Frame) -> dict:
    treatment = _shortcut(ctx, model_id, ctx.shared["train"], feature)["version"]
    experiment_id = _experiment(ctx, model_id, control, treatment)
    path = f"/experiments/{experiment_id}/explanation-guardrails"
    declared = ctx.api.put(
        path,
        {
            "explanation_guardrails": [
                {"type": "ndcg", "min": 0.9, "top_k": 5},
                {"type": "feature_not_in_top_k", "feature": feature, "k": 3},
            ],
            "source": "posted_inputs",
            "action": "rollback",
            "sample_size": 50 if ctx.fast else 100,
        },
    )
    receipt = _serve(ctx, experiment_id, test)
    ctx.say(
        f"  experiment {experiment_id}: v{control} vs v{treatment}, guardrails NDCG@5 >= 0.9 "
        f"and '{feature}' not in the top 3, action rollback, {declared['sample_size']} rows"
    )
    started = time.monotonic()
    evaluation = poll(lambda: _decided(ctx, path), limit=300, what="the guardrail evaluation")
    waited = time.monotonic() - started
    ctx.say(f"  evaluation after {waited:.0f} s (explanation jobs run between monitor ticks): "
            f"{evaluation['status']}")  # fmt: skip
    for result in evaluation["results"]:
        ctx.say(f"    {'pass' if result['passed'] else 'FAIL'}: {result['reason']}")
    experiment = ctx.api.get(f"/experiments/{experiment_id}")
    if evaluation["status"] == "failed":
        experiment = poll(lambda: _rolled_back(ctx, experiment_id), limit=60, what="the rollback")
    ctx.say(f"  experiment status: {experiment['status']}")
    if experiment.get("rollback_reason"):
        ctx.say(f"    rollback_reason: {experiment['rollback_reason'][:160]}…")
    return {
        "experiment_id": experiment_id,
        "control_version": control,
        "treatment_version": treatment,
        "feature": feature,
        "evaluation": evaluation,
        "waited_seconds": waited,
        "experiment": experiment,
        "posted": receipt,
    }


def _rolled_back(ctx: Context, experiment_id: str) -> dict[str, Any] | None:
    found = ctx.api.get(f"/experiments/{experiment_id}")
    return dict(found) if found["status"] == "rolled_back" else None


def run(ctx: Context) -> None:
    """Attribution drift of the challenger, then a guardrail experiment with a shortcut model."""
    ctx.need_routes("explanation guardrails", ROUTES)
    model_id, test = ctx.shared.get("model_id"), ctx.shared.get("test")
    if model_id is None or test is None or "train" not in ctx.shared:
        raise Skip("no registered model or data")
    control = 3  # the GradientBoosting challenger: TreeSHAP, exact and fast
    drift = _drift(ctx, model_id, control, test)
    baseline = drift["baseline_attribution"]
    weakest = min(baseline, key=lambda name: (baseline[name], name))
    found = {"drift": drift, "drift_version": control, "versions": _versions(ctx, model_id, test)}
    found["guardrail"] = _guardrail(ctx, model_id, control, str(weakest), test)
    ctx.results["guardrails"] = found
