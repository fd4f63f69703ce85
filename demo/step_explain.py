"""Step 5: explain the winner with SHAP and LIME, then global importance with stability."""

from __future__ import annotations

from typing import Any

from demo.story import Context, Skip

ROUTES = [
    ("POST", "/explanations"),
    ("POST", "/explanations/batch"),
    ("POST", "/explanations/global"),
    ("GET", "/explanations/jobs/{}"),
]
MALIGNANT = "malignant"


def _pick_row(test: Any) -> int:
    """The first malignant case of the test split (the interesting class to explain)."""
    return next((i for i, label in enumerate(test.y) if label == MALIGNANT), 0)


def _answer(ctx: Context, response: dict[str, Any], what: str) -> dict[str, Any]:
    """A synchronous result, or the result of the 202 job it became."""
    if "job_id" in response and "status_url" in response:
        ctx.say(f"  {what}: 202 → job {response['job_id']}, polling…")
        return ctx.api.wait_job(response["job_id"], limit=600)
    return response


def _single(
    ctx: Context, base: dict[str, Any], row: dict[str, float], other: dict[str, float]
) -> dict[str, Any]:
    body = {**base, "explanation_type": "shap"}
    cold = ctx.api.post("/explanations", {**body, "input_data": other})
    ctx.say(
        f"  first SHAP call (cold: the server loads shap and the model): "
        f"{cold['computation_time_ms']:.0f} ms"
    )
    shap_one = ctx.api.post("/explanations", {**body, "input_data": row})
    again = ctx.api.post("/explanations", {**base, "explanation_type": "shap", "input_data": row})
    ctx.say(
        f"  SHAP ({shap_one['algorithm']}, {shap_one['output_space']}): base "
        f"{shap_one['base_prediction']:.4f} → prediction {shap_one['actual_prediction']:.4f} "
        f"for '{shap_one['explained_class']}', additivity error "
        f"{shap_one['additivity_error']:.2e}, "
        f"{shap_one['computation_time_ms']:.1f} ms; repeat: cached={again['cached']} "
        f"{again['computation_time_ms']:.2f} ms"
    )
    ctx.say(
        f"    top +: {', '.join(shap_one['top_positive_features'][:3])}; "
        f"top -: {', '.join(shap_one['top_negative_features'][:3])}"
    )
    return {"shap": shap_one, "shap_repeat": again, "shap_cold_ms": cold["computation_time_ms"]}


def _lime(ctx: Context, base: dict[str, Any], row: dict[str, float]) -> dict[str, Any]:
    body = {
        **base,
        "explanation_type": "lime",
        "input_data": row,
        "num_samples": 1000 if ctx.fast else 5000,
        "num_features": 10,
    }
    found = ctx.api.post("/explanations", body)
    top = sorted(found["feature_contributions"], key=lambda c: -abs(c["contribution"]))[:3]
    ctx.say(
        f"  LIME ({body['num_samples']} samples): local fidelity R² "
        f"{found['local_fidelity']:.3f}, {found['computation_time_ms']:.0f} ms; top: "
        + ", ".join(
            f"{c.get('condition') or c['feature_name']} ({c['contribution']:+.3f})" for c in top
        )
    )
    return found


def run(ctx: Context) -> None:
    """Local SHAP + LIME, a SHAP batch for the beeswarm, and global importance."""
    ctx.need_routes("the explainability service", ROUTES)
    version = ctx.shared.get("winner_version")
    if version is None and "model_id" in ctx.shared:
        version = 3
        ctx.say("  (no concluded experiment: explaining v3)")
    if version is None:
        raise Skip("no registered model to explain")
    test = ctx.shared["test"]
    base = {"model_id": ctx.shared["model_id"], "model_version": version, "class_name": MALIGNANT}
    index = _pick_row(test)
    row = test.records([index])[0]
    found: dict[str, Any] = {"version": version, "row_index": index, "row_label": test.y[index]}
    other = test.records([index + 1 if index + 1 < len(test.y) else 0])[0]
    found.update(_single(ctx, base, row, other))
    found["lime"] = _lime(ctx, base, row)
    rows = min(len(test.y), 30 if ctx.fast else 50)
    batch = ctx.api.post("/explanations/batch", {**base, "inputs": test.records(range(rows))})
    batch = _answer(ctx, batch, "batch")
    ctx.say(f"  SHAP batch: {batch['count']} explanations")
    found["batch"] = batch
    found["batch_labels"] = test.y[:rows]
    inputs = test.records(range(min(len(test.y), 40 if ctx.fast else len(test.y))))
    body = {**base, "inputs": inputs, "aggregation_method": "mean", "top_k": 5}
    global_ = _answer(ctx, ctx.api.post("/explanations/global", body), "global importance")
    stability = global_["stability"]
    top = sorted(global_["feature_importances"].items(), key=lambda kv: -kv[1])[:5]
    ctx.say(
        f"  global ({global_['n_explanations']} rows, {global_['aggregation_method']} |SHAP|): "
        + ", ".join(f"{name} {value:.4f}" for name, value in top)
    )
    ctx.say(
        f"  stability: mean pairwise top-{stability['top_k']} Jaccard "
        f"{stability['mean_pairwise_jaccard']}, in the top-{stability['top_k']}: "
        + ", ".join(
            f"{name} {share:.0%}"
            for name, share in sorted(stability["top_k_frequency"].items(), key=lambda kv: -kv[1])[
                :5
            ]
        )
    )
    for pair in global_.get("interactions", [])[:3]:
        ctx.say(
            f"  correlated contributions: {pair['feature_a']} ~ {pair['feature_b']} "
            f"({pair['correlation']:+.2f})"
        )
    found["global"] = global_
    if ctx.api.has("GET", "/explanations/cache/stats"):
        found["cache"] = ctx.api.get("/explanations/cache/stats")
        ctx.say(
            f"  cache: {found['cache']['hits']} hits, {found['cache']['misses']} misses "
            f"(hit rate {found['cache']['hit_rate']:.0%})"
        )
    ctx.results["explain"] = found
