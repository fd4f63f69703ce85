"""Step 4: an A/B test where the treatment (v3) genuinely converts better; outcomes go in batches
until the service's analysis recommends concluding with a winner, which is then promoted."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from demo.story import Context, Skip
from demo.traffic import Behaviour, Traffic

ROUTES = [
    ("POST", "/experiments"),
    ("GET", "/experiments/{}/analysis"),
    ("POST", "/experiments/{}/conclude"),
]


def _create(ctx: Context) -> dict[str, Any]:
    model_id = ctx.shared["model_id"]
    body = {
        "name": f"ab-v3-{ctx.suffix}",
        "description": "GradientBoosting (v3) against production v1 on conversion",
        "allocation_strategy": "percentage",
        "variants": [
            {
                "variant_id": "control",
                "model_id": model_id,
                "model_version": 1,
                "traffic_weight": "0.5",
                "is_control": True,
            },
            {
                "variant_id": "treatment",
                "model_id": model_id,
                "model_version": 3,
                "traffic_weight": "0.5",
            },
        ],
        "primary_metric": "conversion_rate",
        "guardrail_metrics": ["latency_p95_ms"],
        "minimum_sample_size": 300 if ctx.fast else 1000,
        "confidence_level": 0.95,
    }
    return ctx.api.post("/experiments", body)


def _row(analysis: dict[str, Any]) -> dict[str, Any]:
    treatment = analysis["treatments"][0]
    observed = analysis["sample_ratio"]["observed"]
    return {
        "n_control": observed.get("control", 0),
        "n_treatment": observed.get("treatment", 0),
        "control_rate": treatment["control_value"],
        "treatment_rate": treatment["treatment_value"],
        "p_value": treatment["p_value"],
        "ci": treatment["confidence_interval"],
        "lift": treatment["effect_size"],
        "recommendation": analysis["recommendation"],
    }


def run(ctx: Context) -> None:
    """Runs the A/B test to significance and concludes it."""
    ctx.need_routes("the A/B testing service", ROUTES)
    if "model_id" not in ctx.shared:
        raise Skip("no registered model versions")
    created = _create(ctx)
    experiment_id = created["experiment_id"]
    ctx.api.post(f"/experiments/{experiment_id}/start")
    rates = (0.10, 0.20) if ctx.fast else (0.10, 0.14)
    behaviours = {
        "control": Behaviour(error_rate=0.005, latency_ms=40.0, conversion_rate=rates[0]),
        "treatment": Behaviour(error_rate=0.005, latency_ms=34.0, conversion_rate=rates[1]),
    }
    ctx.say(
        f"  experiment {experiment_id}: simulated conversion {rates[0]:.0%} (v1) vs "
        f"{rates[1]:.0%} (v3); analysing after every batch"
    )
    traffic = Traffic(ctx.api, experiment_id, behaviours, seed=ctx.options.seed + 1, threads=4)
    batch, limit = (300, 6_000) if ctx.fast else (500, 20_000)
    trajectory: list[dict[str, Any]] = []
    analysis: dict[str, Any] = {}
    with tqdm(desc="  traffic", unit="req", total=limit, mininterval=0.5) as bar:
        while traffic.stats.total < limit:
            traffic.run(max_requests=batch, progress=bar)
            analysis = ctx.api.get(f"/experiments/{experiment_id}/analysis")
            row = _row(analysis)
            trajectory.append(row)
            bar.set_postfix_str(
                f"p={row['p_value']:.4g} lift={row['lift'] or 0:+.1%} {row['recommendation']}",
                refresh=False,
            )
            if analysis["recommendation"] == "conclude_winner":
                break
    _report_analysis(ctx, analysis)
    if analysis["recommendation"] != "conclude_winner":
        raise RuntimeError(f"no significant winner after {traffic.stats.total} requests")
    concluded = ctx.api.post(f"/experiments/{experiment_id}/conclude", {})
    winner = concluded["winning_variant_id"]
    version = next(v["model_version"] for v in concluded["variants"] if v["variant_id"] == winner)
    model = ctx.api.get(f"/models/{ctx.shared['model_id']}")
    ctx.say(
        f"  concluded: winner {winner} (model version {version}); the registry's production "
        f"version is now v{model['production_version']}"
    )
    ctx.shared["winner_version"] = version
    ctx.results["experiment"] = {
        "experiment": concluded,
        "analysis": analysis,
        "trajectory": trajectory,
        "simulated_rates": {"control": rates[0], "treatment": rates[1]},
        "requests": traffic.stats.total,
        "winner": winner,
        "winner_version": version,
        "production_version": model["production_version"],
    }


def _report_analysis(ctx: Context, analysis: dict[str, Any]) -> None:
    treatment = analysis["treatments"][0]
    srm = analysis["sample_ratio"]
    low, high = treatment["confidence_interval"]
    ctx.say(
        f"  {treatment['test']}: control {treatment['control_value']:.4f}, treatment "
        f"{treatment['treatment_value']:.4f}, lift {treatment['effect_size']:+.1%}, "
        f"p = {treatment['p_value']:.3g} (Holm {treatment['adjusted_p_value']:.3g}), "
        f"95% CI of the difference [{low:+.4f}, {high:+.4f}]"
    )
    ctx.say(
        f"  SRM: chi2 = {srm['chi_square']:.3f}, p = {srm['p_value']:.3f}, mismatch "
        f"{srm['mismatch']}; observed {srm['observed']}"
    )
    for guard in treatment["guardrails"]:
        ctx.say(
            f"  guardrail {guard['metric_name']}: control {guard['control_value']}, treatment "
            f"{guard['treatment_value']}, degraded {guard['degraded']}"
        )
    ctx.say(f"  recommendation: {analysis['recommendation']} → {analysis['recommended_winner']}")
    for warning in analysis.get("warnings", []):
        ctx.say(f"  warning: {warning}")
