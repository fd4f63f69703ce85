"""The report's figures (matplotlib, Agg backend), drawn only from numbers the API returned."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"control": "#1f77b4", "canary": "#d62728", "treatment": "#2ca02c"}


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mark_rollback(ax: Any, rollback_at: float | None) -> None:
    if rollback_at is not None:
        ax.axvline(rollback_at, color="black", linestyle="--", linewidth=1)
        ax.annotate(
            "rollback",
            (rollback_at, 1),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
        )


def canary_metrics(result: dict[str, Any], path: Path) -> Path:
    """Cumulative error rate and requests per variant over time, the threshold and the rollback."""
    samples = result["samples"]
    threshold = result["policy"]["error_rate_threshold"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for variant in samples[-1]["metrics"]:
        points = [
            (s["t"], s["metrics"][variant]["error_rate"], s["metrics"][variant]["request_count"])
            for s in samples
        ]
        colour = COLOURS.get(variant)
        top.plot(
            [p[0] for p in points if p[1] is not None],
            [p[1] for p in points if p[1] is not None],
            label=variant,
            color=colour,
        )
        bottom.plot([p[0] for p in points], [p[2] for p in points], label=variant, color=colour)
    top.axhline(threshold, color="grey", linestyle=":", label=f"threshold {threshold:g}")
    top.set_ylabel("error rate (cumulative, from /metrics)")
    top.set_title("Canary of v2: error rate per variant")
    bottom.set_ylabel("requests recorded")
    bottom.set_xlabel("seconds since start")
    for ax in (top, bottom):
        _mark_rollback(ax, result.get("rollback_at"))
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def canary_ramp(result: dict[str, Any], path: Path) -> Path:
    """Effective traffic weights over time (ramp steps, then rollback to control)."""
    samples = result["samples"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for variant in samples[0]["weights"]:
        ax.step(
            [s["t"] for s in samples],
            [s["weights"][variant] for s in samples],
            where="post",
            label=variant,
            color=COLOURS.get(variant),
        )
    _mark_rollback(ax, result.get("rollback_at"))
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("effective weight")
    ax.set_xlabel("seconds since start")
    ax.set_title("Ramp weights (GET /experiments/{id})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def experiment(result: dict[str, Any], path: Path) -> Path:
    """p-value and conversion rates (with the CI of the difference) as samples accumulate."""
    rows = result["trajectory"]
    n = [r["n_control"] + r["n_treatment"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(n, [max(r["p_value"], 1e-12) for r in rows], marker="o", color="#444")
    left.axhline(0.05, color="grey", linestyle=":", label="alpha 0.05")
    left.set_yscale("log")
    left.set_xlabel("requests")
    left.set_ylabel("p-value (two-proportion z)")
    left.set_title("Significance over time")
    left.legend(fontsize=8)
    for key, variant in (("control_rate", "control"), ("treatment_rate", "treatment")):
        right.plot(n, [r[key] for r in rows], label=variant, color=COLOURS[variant], marker=".")
    low = [r["control_rate"] + r["ci"][0] for r in rows if r["ci"][0] is not None]
    high = [r["control_rate"] + r["ci"][1] for r in rows if r["ci"][1] is not None]
    if len(low) == len(n):
        right.fill_between(n, low, high, color=COLOURS["treatment"], alpha=0.15,
                           label="control + 95% CI of difference")  # fmt: skip
    right.set_xlabel("requests")
    right.set_ylabel("conversion rate")
    right.set_title("Conversion per variant")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _ordered_contributions(explanation: dict[str, Any], names: list[str]) -> list[float]:
    by_name = {c["feature_name"]: c["contribution"] for c in explanation["feature_contributions"]}
    return [float(by_name.get(name, 0.0)) for name in names]


def _shap_explanation(explanations: list[dict[str, Any]], names: list[str]) -> Any:
    import numpy as np
    import shap

    values = np.array([_ordered_contributions(e, names) for e in explanations])
    data = np.array(
        [
            [
                float(
                    {c["feature_name"]: c["feature_value"] for c in e["feature_contributions"]}.get(
                        n, math.nan
                    )
                )
                for n in names
            ]
            for e in explanations
        ]
    )
    bases = np.array([e["base_prediction"] for e in explanations])
    return shap.Explanation(values=values, base_values=bases, data=data, feature_names=names)


def _names(explanation: dict[str, Any]) -> list[str]:
    return [c["feature_name"] for c in explanation["feature_contributions"]]


def _save_shap_figure(title: str, path: Path) -> Path:
    """Sizes, titles and saves the figure a ``shap.plots`` call just drew."""
    fig = plt.gcf()
    fig.set_size_inches(9, 6)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def shap_waterfall(one: dict[str, Any], path: Path) -> Path:
    """shap's waterfall of one explanation rebuilt from the API's numbers."""
    import shap

    names = _names(one)
    explanation = _shap_explanation([one], names)[0]
    shap.plots.waterfall(explanation, max_display=12, show=False)
    return _save_shap_figure(f"SHAP waterfall ({one['algorithm']}, {one['output_space']})", path)


def shap_beeswarm(batch: dict[str, Any], path: Path) -> Path:
    """shap's beeswarm of a batch of explanations."""
    import shap

    explanations = batch["explanations"]
    names = _names(explanations[0])
    shap.plots.beeswarm(_shap_explanation(explanations, names), max_display=12, show=False)
    return _save_shap_figure(f"SHAP values of {len(explanations)} test cases", path)


def shap_bar(batch: dict[str, Any], path: Path) -> Path:
    """shap's bar plot (mean |SHAP|) of a batch."""
    import shap

    explanations = batch["explanations"]
    names = _names(explanations[0])
    shap.plots.bar(_shap_explanation(explanations, names), max_display=12, show=False)
    return _save_shap_figure("Mean |SHAP| over the batch", path)


def lime_bar(lime: dict[str, Any], path: Path) -> Path:
    """LIME's local weights of one prediction."""
    items = sorted(lime["feature_contributions"], key=lambda c: abs(c["contribution"]))[-10:]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = [c.get("condition") or c["feature_name"] for c in items]
    values = [c["contribution"] for c in items]
    ax.barh(labels, values, color=["#d62728" if v > 0 else "#1f77b4" for v in values])
    ax.set_title(f"LIME (local fidelity R² = {lime['local_fidelity']:.3f})")
    ax.set_xlabel(f"weight toward '{lime['explained_class']}'")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def global_importance(found: dict[str, Any], path: Path) -> Path:
    """Global importance with each feature's top-k frequency (stability)."""
    importances = sorted(found["feature_importances"].items(), key=lambda kv: kv[1])[-12:]
    frequency = found["stability"]["top_k_frequency"]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.barh([k for k, _ in importances], [v for _, v in importances], color="#6a51a3")
    for index, (name, value) in enumerate(importances):
        share = frequency.get(name)
        if share:
            ax.annotate(f" top-{found['stability']['top_k']} in {share:.0%}", (value, index),
                        va="center", fontsize=8)  # fmt: skip
    jaccard = found["stability"]["mean_pairwise_jaccard"]
    ax.set_title(
        f"Global importance ({found['aggregation_method']} |SHAP| over {found['n_explanations']}"
        f" rows; mean pairwise Jaccard {jaccard if jaccard is None else round(jaccard, 3)})",
        fontsize=9,
    )
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def lineage(graph: dict[str, Any], rows: dict[str, Any], names: dict[str, str], path: Path) -> Path:
    """The lineage DAG, laid out by depth."""
    nodes = {n["version_id"]: n for n in graph["nodes"]}
    layers: dict[int, list[str]] = {}
    for node_id, node in nodes.items():
        layers.setdefault(int(node.get("depth", 0)), []).append(node_id)
    position = {}
    for depth, members in layers.items():
        for index, node_id in enumerate(sorted(members)):
            position[node_id] = (depth, index - (len(members) - 1) / 2)
    fig, ax = plt.subplots(figsize=(2.6 * max(len(layers), 2), 3.5))
    for edge in graph["edges"]:
        source, target, kind = edge["parent_id"], edge["child_id"], edge["transformation_type"]
        if source in position and target in position:
            (x0, y0), (x1, y1) = position[source], position[target]
            ax.annotate("", (x1 - 0.22, y1), (x0 + 0.22, y0),
                        arrowprops={"arrowstyle": "->", "color": "#555"})  # fmt: skip
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.08, str(kind), ha="center", fontsize=8,
                    color="#555")  # fmt: skip
    for node_id, (x, y) in position.items():
        node = nodes[node_id]
        name = names.get(node_id, f"v{node.get('version_number')}")
        label = f"{name}\n{rows.get(node_id, '?')} rows\n{(node.get('sha256') or '')[:8]}"
        ax.text(x, y, label, ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round", "facecolor": "#e8f0fe",
                      "edgecolor": "#1f77b4"})  # fmt: skip
    ax.set_xlim(-0.5, max(layers) + 0.5)
    spread = max(len(m) for m in layers.values())
    ax.set_ylim(-spread / 2 - 0.3, spread / 2 + 0.3)
    ax.axis("off")
    ax.set_title("Dataset lineage (GET /lineage/{raw version}?direction=downstream)")
    return _save(fig, path)
