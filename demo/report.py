"""Plots and ``report.html`` from the results the steps gathered (all numbers from the API)."""

from __future__ import annotations

import html
import json
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from demo import plots
from demo.story import Context


def _try(ctx: Context, key: str, draw: Callable[[], Path | None]) -> None:
    try:
        ctx.plot(key, draw())
    except Exception as exc:  # noqa: BLE001 - one bad figure must not lose the others
        ctx.say(f"  plot {key} failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()


def _lineage_rows(data: dict[str, Any]) -> dict[str, Any]:
    versions = [data["raw"], *(step["version"] for step in data["chain"])]
    versions += list(data["split"].values())
    return {v["version_id"]: v.get("row_count") for v in versions}


def make_plots(ctx: Context) -> None:
    """Writes every figure whose data exists."""
    out, results = ctx.options.out_dir, ctx.results
    if "data" in results and results["data"].get("lineage"):
        data = results["data"]
        rows = _lineage_rows(data)
        names = data["names"]
        _try(ctx, "lineage",
             lambda: plots.lineage(data["lineage"], rows, names, out / "lineage.png"))  # fmt: skip
    if "canary" in results:
        canary = results["canary"]
        _try(
            ctx, "canary_metrics", lambda: plots.canary_metrics(canary, out / "canary_metrics.png")
        )
        _try(ctx, "canary_ramp", lambda: plots.canary_ramp(canary, out / "canary_ramp.png"))
    if "experiment" in results:
        found = results["experiment"]
        _try(ctx, "experiment", lambda: plots.experiment(found, out / "experiment.png"))
    if "explain" in results:
        ex = results["explain"]
        _try(
            ctx,
            "shap_waterfall",
            lambda: plots.shap_waterfall(ex["shap"], out / "shap_waterfall.png"),
        )
        _try(
            ctx,
            "shap_beeswarm",
            lambda: plots.shap_beeswarm(ex["batch"], out / "shap_beeswarm.png"),
        )
        _try(ctx, "shap_bar", lambda: plots.shap_bar(ex["batch"], out / "shap_bar.png"))
        _try(ctx, "lime", lambda: plots.lime_bar(ex["lime"], out / "lime.png"))
        _try(
            ctx,
            "global",
            lambda: plots.global_importance(ex["global"], out / "global_importance.png"),
        )


# ---- HTML ---------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return _esc(value)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(ctx: Context, key: str) -> str:
    name = ctx.plots.get(key)
    return f'<p><img src="{_esc(name)}" alt="{_esc(key)}"></p>' if name else ""


def _data_html(ctx: Context) -> str:
    data = ctx.results.get("data")
    if not data:
        return ""
    raw, names = data["raw"], data["names"]
    steps = [("upload (S3 trigger)", raw)]
    steps += [(step["type"], step["version"]) for step in data["chain"]]
    steps += [(f"split: {role}", version) for role, version in data["split"].items()]
    rows = [
        [what, names.get(v["version_id"]), v.get("row_count"), len((v.get("schema") or {})
         .get("columns", {})), v["sha256"][:16], v.get("created_by")]
        for what, v in steps
    ]  # fmt: skip
    compare = json.dumps(data.get("compare"), indent=1, default=str)[:4000]
    repro = data.get("reproducibility", {})
    return (
        "<h2>1. Data: presigned upload, S3-triggered version, cleaning, split, lineage</h2>"
        f"<p>The raw export has {data['raw_rows_in_file']} rows, {data['blanked_rows']} of them "
        f"with a blank cell (injected by the demo). The S3 trigger created "
        f"{_esc(names.get(raw['version_id']))} {raw['trigger_seconds']:.1f} s after the presigned "
        f"upload. Train split reproducible from its root: {_esc(repro.get('reproducible'))}.</p>"
        + _table(["step", "version", "rows", "columns", "sha256", "created by"], rows)
        + _img(ctx, "lineage")
        + f"<details><summary>compare clean v1 vs v2 (API response)</summary><pre>{_esc(compare)}"
        "</pre></details>"
    )


def _models_html(ctx: Context) -> str:
    found = ctx.results.get("models")
    if not found:
        return ""
    rows = [[v["version"], v["description"], v["test_accuracy"], v["artifact_size"]]
            for v in found["versions"]]  # fmt: skip
    return "<h2>2. Models registered (skops)</h2>" + _table(
        ["version", "model", "test accuracy (demo, on the test split)", "bytes"], rows
    )


def _canary_html(ctx: Context) -> str:
    found = ctx.results.get("canary")
    if not found:
        return ""
    exp, policy = found["experiment"], found["policy"]
    details = exp.get("rollback_details") or {}
    return (
        "<h2>3. Canary of v2 and the automatic rollback</h2>"
        f"<p>Ramp {_esc(exp['ramp']['steps'])}, interval {exp['ramp']['interval_minutes']} min; "
        f"rollback policy: error rate &gt; {policy['error_rate_threshold']}, latency "
        f"{policy['latency_percentile']} &gt; "
        f"+{policy['latency_degradation_threshold']:.0%}, after "
        f"{policy['min_requests_before_rollback']} requests. Simulated: v2 1&nbsp;% errors, then "
        f"{found['behaviour']['canary_regression']['error_rate']:.0%}.</p>"
        f"<p><b>Status {exp['status']}</b>. Reason stored by the monitor: "
        f"<code>{_esc(exp.get('rollback_reason'))}</code><br>"
        f"Observed {_esc(details.get('metric'))} = {_fmt(details.get('observed'))}, threshold "
        f"{_fmt(details.get('threshold'))}. Routing after the rollback: "
        f"{_esc(found['routing_after'])}.</p>"
        + _img(ctx, "canary_metrics")
        + _img(ctx, "canary_ramp")
    )


def _experiment_html(ctx: Context) -> str:
    found = ctx.results.get("experiment")
    if not found:
        return ""
    analysis = found["analysis"]
    t = analysis["treatments"][0]
    srm = analysis["sample_ratio"]
    rows = [
        ["test", t["test"]],
        ["control conversion", t["control_value"]],
        ["treatment conversion", t["treatment_value"]],
        ["lift (relative)", t["effect_size"]],
        ["p-value", t["p_value"]],
        ["Holm-adjusted p", t["adjusted_p_value"]],
        [
            "95% CI of the difference",
            f"[{t['confidence_interval'][0]:.4f}, {t['confidence_interval'][1]:.4f}]",
        ],  # fmt: skip
        [
            "SRM chi-square / p / mismatch",
            f"{srm['chi_square']:.3f} / {srm['p_value']:.3f} / {srm['mismatch']}",
        ],  # fmt: skip
        ["observed requests", srm["observed"]],
        ["recommendation", f"{analysis['recommendation']} → {analysis['recommended_winner']}"],
        ["production version after conclude", f"v{found['production_version']}"],
    ]
    return (
        "<h2>4. A/B test of v3 to significance</h2>"
        f"<p>Simulated conversion rates {found['simulated_rates']} ({found['requests']} requests, "
        "analysed after every batch).</p>"
        + _table(["", "value (GET /analysis)"], rows)
        + _img(ctx, "experiment")
    )


def _explain_html(ctx: Context) -> str:
    found = ctx.results.get("explain")
    if not found:
        return ""
    one, lime, global_ = found["shap"], found["lime"], found["global"]
    rows = [
        ["SHAP algorithm / output", f"{one['algorithm']} / {one['output_space']}"],
        ["base → prediction", f"{one['base_prediction']:.4f} → {one['actual_prediction']:.4f}"],
        ["additivity error", one["additivity_error"]],
        ["first SHAP call (cold server path)", f"{found['shap_cold_ms']:.0f} ms"],
        ["SHAP time / repeat (cached)", f"{one['computation_time_ms']:.1f} ms / "
         f"{found['shap_repeat']['computation_time_ms']:.2f} ms "
         f"({found['shap_repeat']['cached']})"],
        ["LIME local fidelity R²", lime["local_fidelity"]],
        ["LIME time", f"{lime['computation_time_ms']:.0f} ms"],
        ["global: rows, mean pairwise top-k Jaccard",
         f"{global_['n_explanations']}, {global_['stability']['mean_pairwise_jaccard']}"],
    ]  # fmt: skip
    return (
        f"<h2>5. Explaining the winner (v{found['version']})</h2>"
        f"<p>Test case #{found['row_index']} (label {_esc(found['row_label'])}).</p>"
        + _table(["", "value"], rows)
        + "".join(
            _img(ctx, k) for k in ("shap_waterfall", "lime", "shap_bar", "shap_beeswarm", "global")
        )  # fmt: skip
    )


def _guardrails_html(ctx: Context) -> str:
    found = ctx.results.get("guardrails")
    if not found:
        return ""
    drift, versions, guard = found["drift"], found["versions"], found["guardrail"]
    evaluation, experiment = guard["evaluation"], guard["experiment"]
    rows = [
        [f"v{found['drift_version']}: background baseline vs serving inputs, NDCG@5",
         f"{drift['ndcg']:.4f} ({'drifted' if drift['drifted'] else 'no drift'})"],
        ["v2 vs v3 on the same inputs, NDCG@5",
         f"{versions['ndcg']:.4f} ({'drifted' if versions['drifted'] else 'no drift'})"],
        ["guardrail evaluation", f"{evaluation['status']} after {guard['waited_seconds']:.0f} s "
         f"({evaluation['sample_rows']} rows per arm)"],
        ["control top 5", ", ".join(evaluation["top_features"].get("control", [])[:5])],
        ["treatment top 5", ", ".join(evaluation["top_features"].get("treatment", [])[:5])],
        ["experiment status", experiment["status"]],
        ["rollback reason", experiment.get("rollback_reason") or ""],
    ]  # fmt: skip
    rows += [[("pass: " if r["passed"] else "FAIL: ") + str(r["guardrail"]), r["reason"]]
             for r in evaluation["results"]]  # fmt: skip
    return (
        "<h2>6. Attribution drift and explanation guardrails</h2>"
        f"<p>v{guard['treatment_version']} was trained on data whose "
        f"<code>{_esc(guard['feature'])}</code> leaked the label; its experiment against "
        f"v{guard['control_version']} declared explanation guardrails (Clarify's NDCG against the "
        "control, the feature kept out of the top 3) evaluated by the scheduled monitor on a "
        f"uniform sample of the {guard['posted']['held']} inputs it served.</p>"
        + _table(["", "value"], rows)
    )


STYLE = (
    "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
    "text-align:left;font-size:14px}img{max-width:100%}.skipped{color:#a60}.failed{color:#c00}"
)


def write_html(ctx: Context, url: str) -> Path:
    """Writes ``report.html`` and ``results.json``."""
    steps = _table(
        ["step", "state", "seconds", "reason"],
        [[s.title, s.state, round(s.seconds, 1), s.reason] for s in ctx.steps],
    )
    body = "".join(
        part(ctx)
        for part in (
            _data_html,
            _models_html,
            _canary_html,
            _experiment_html,
            _explain_html,
            _guardrails_html,
        )
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>SynapseNet demo</title>"
        f"<style>{STYLE}</style></head><body><h1>SynapseNet demo</h1>"
        f"<p>API {_esc(url)}, run {_esc(ctx.suffix)}{' (fast mode)' if ctx.fast else ''}.</p>"
        f"{steps}{body}</body></html>"
    )
    path = ctx.options.out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    (ctx.options.out_dir / "results.json").write_text(
        json.dumps(
            {"steps": [vars(s) for s in ctx.steps], "results": ctx.results, "plots": ctx.plots},
            indent=1,
            default=str,
        ),
        encoding="utf-8",
    )
    return path
