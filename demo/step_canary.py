"""Steps 2b and 3: a ramped canary of v2 with a rollback policy; v2 starts failing and the
scheduled experiment monitor rolls it back.

Timeline: while v2 is healthy the ramp advances (its interval is one minute, the shortest the
service allows, so the full demo waits for one step); then v2's error rate jumps and the demo
watches the API until the monitor has rolled the experiment back, recording metrics and
weights every second for the plots.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from tqdm import tqdm

from demo.story import Context, Skip
from demo.traffic import Behaviour, Traffic

ROUTES = [
    ("POST", "/experiments"),
    ("POST", "/experiments/{}/start"),
    ("POST", "/experiments/{}/route"),
    ("POST", "/experiments/{}/outcomes"),
    ("GET", "/experiments/{}/metrics"),
    ("PUT", "/experiments/{}/rollback-policy"),
]
POLICY = {
    "error_rate_threshold": 0.05,
    "latency_degradation_threshold": 0.5,
    "min_requests_before_rollback": 100,
    "latency_percentile": "p95",
}


def _parse(moment: str | None) -> float | None:
    if not moment:
        return None
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()


class Recorder:
    """Polls the experiment and its metrics; keeps the time series for the plots."""

    def __init__(self, ctx: Context, experiment_id: str) -> None:
        self.ctx = ctx
        self.experiment_id = experiment_id
        self.started = time.time()
        self.samples: list[dict[str, Any]] = []
        self.experiment: dict[str, Any] = {}
        self.phase = "healthy"

    def sample(self) -> dict[str, Any]:
        """One observation (experiment state, effective weights, metrics per variant)."""
        api = self.ctx.api
        self.experiment = api.get(f"/experiments/{self.experiment_id}")
        metrics = api.get(f"/experiments/{self.experiment_id}/metrics")["variants"]
        found = {
            "t": time.time() - self.started,
            "phase": self.phase,
            "status": self.experiment["status"],
            "ramp_step": (self.experiment.get("ramp") or {}).get("current_step"),
            "weights": {
                v["variant_id"]: float(v["effective_weight"]) for v in self.experiment["variants"]
            },
            "metrics": {
                name: {
                    key: m[key]
                    for key in ("request_count", "error_count", "error_rate", "latency_p95_ms")
                }
                for name, m in metrics.items()
            },
        }
        self.samples.append(found)
        return found

    def relative(self, moment: str | None) -> float | None:
        """An API timestamp as seconds since the recorder started."""
        value = _parse(moment)
        return None if value is None else value - self.started


def _create(ctx: Context, fast: bool) -> dict[str, Any]:
    model_id = ctx.shared["model_id"]
    steps = ["0.25", "0.5", "1"] if fast else ["0.1", "0.25", "0.5", "1"]
    body = {
        "name": f"canary-v2-{ctx.suffix}",
        "description": "Canary of the RandomForest (v2) against production v1, ramped",
        "allocation_strategy": "ramping",
        "variants": [
            {
                "variant_id": "control",
                "model_id": model_id,
                "model_version": 1,
                "traffic_weight": str(1 - float(steps[0])),
                "is_control": True,
            },
            {
                "variant_id": "canary",
                "model_id": model_id,
                "model_version": 2,
                "traffic_weight": steps[0],
            },
        ],
        "ramp": {"steps": steps, "interval_minutes": 1, "min_requests_per_variant": 50},
        "primary_metric": "success_rate",
    }
    return ctx.api.post("/experiments", body)


def _phase(
    ctx: Context,
    traffic: Traffic,
    recorder: Recorder,
    name: str,
    until: Any,
    limit: float,
    rate: float | None,
) -> bool:
    """Runs traffic until ``until(sample)`` or ``limit`` seconds; returns whether ``until`` held."""
    recorder.phase = name
    deadline = time.monotonic() + limit
    reached = {"ok": False}

    def tick() -> bool:
        sample = recorder.sample()
        bar.set_postfix_str(_postfix(sample), refresh=False)
        if until(sample):
            reached["ok"] = True
            return True
        return time.monotonic() > deadline

    with tqdm(desc=f"  {name}", unit="req", leave=True, mininterval=0.5) as bar:
        traffic.run(max_requests=1_000_000, rate=rate, tick=tick, tick_seconds=1.0, progress=bar)
    return reached["ok"]


def _postfix(sample: dict[str, Any]) -> str:
    canary = sample["metrics"].get("canary", {})
    rate = canary.get("error_rate")
    return (
        f"canary weight {sample['weights'].get('canary', 0):.2f}, "
        f"canary errors {rate if rate is None else round(rate, 4)} "
        f"({canary.get('request_count', 0)} req), {sample['status']}"
    )


def _verify_routing(ctx: Context, experiment_id: str, count: int) -> dict[str, int]:
    seen: dict[str, int] = {}
    for index in range(count):
        routed = ctx.api.post(
            f"/experiments/{experiment_id}/route",
            {"request_id": f"after-rollback-{index}", "user_id": f"user-{index}"},
        )
        seen[routed["variant_id"]] = seen.get(routed["variant_id"], 0) + 1
    return seen


def run(ctx: Context) -> None:
    """Creates, starts and drives the canary until the monitor rolls it back."""
    ctx.need_routes("the A/B testing service", ROUTES)
    if "model_id" not in ctx.shared:
        raise Skip("no registered model versions")
    fast = ctx.fast
    created = _create(ctx, fast)
    experiment_id = created["experiment_id"]
    policy = ctx.api.put(f"/experiments/{experiment_id}/rollback-policy", POLICY)
    started = ctx.api.post(f"/experiments/{experiment_id}/start")
    ramp = started["ramp"]
    ctx.say(
        f"  experiment {experiment_id}: {started['status']}, ramp {ramp['steps']} every "
        f"{ramp['interval_minutes']} min; policy: error rate > {policy['error_rate_threshold']}, "
        f"latency {policy['latency_percentile']} > +{policy['latency_degradation_threshold']:.0%} "
        f"after {policy['min_requests_before_rollback']} requests"
    )
    healthy = Behaviour(error_rate=0.01, latency_ms=40.0)
    behaviours = {"control": healthy, "canary": Behaviour(error_rate=0.01, latency_ms=46.0)}
    traffic = Traffic(ctx.api, experiment_id, behaviours, seed=ctx.options.seed, threads=4)
    recorder = Recorder(ctx, experiment_id)
    recorder.sample()
    ramped = None
    if not fast:
        ctx.say("  phase 1: v2 healthy (1 % errors); waiting for the monitor to advance the ramp")
        ramped = _phase(
            ctx, traffic, recorder, "healthy", lambda s: (s["ramp_step"] or 0) >= 1, 100, 20.0
        )
        ctx.say(f"  ramp advanced: {ramped} (step {recorder.samples[-1]['ramp_step']})")
    regression = Behaviour(error_rate=0.15, latency_ms=52.0)
    behaviours["canary"] = regression
    ctx.say("  phase 2: v2 starts failing (15 % errors); waiting for the scheduled rollback")
    rolled = _phase(
        ctx,
        traffic,
        recorder,
        "regression",
        lambda s: s["status"] == "rolled_back",
        30 if fast else 120,
        None if fast else 20.0,
    )
    if not rolled:
        raise TimeoutError("the experiment monitor did not roll the canary back in time")
    if not fast:
        _phase(ctx, traffic, recorder, "after rollback", lambda s: False, 5, 20.0)
    experiment = ctx.api.get(f"/experiments/{experiment_id}")
    after = _verify_routing(ctx, experiment_id, 20 if fast else 100)
    details = experiment.get("rollback_details") or {}
    ctx.say(f"  ROLLED BACK by the scheduled monitor: {experiment['rollback_reason']}")
    ctx.say(
        f"  observed {details.get('metric')} = {details.get('observed')} vs threshold "
        f"{details.get('threshold')}; routing now: {after}"
    )
    ctx.results["canary"] = {
        "experiment": experiment,
        "policy": policy,
        "behaviour": {
            "control": vars(healthy),
            "canary_healthy": {"error_rate": 0.01, "latency_ms": 46.0},
            "canary_regression": vars(regression),
        },
        "samples": recorder.samples,
        "ramped": ramped,
        "rollback_at": recorder.relative(experiment.get("end_time") or experiment["updated_at"]),
        "routing_after": after,
        "routed": dict(traffic.stats.routed),
        "rejected_posts": traffic.stats.rejected[:5],
    }
