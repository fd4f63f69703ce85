"""``make demo`` in its fast mode against an in-process local stack: the canary is rolled back by
the scheduled monitor with a reason, a shortcut model is rolled back by its explanation
guardrails, and the report and its plots are written.

Bounded: small models, a few hundred simulated requests, the monitor every second (well under a
minute on a quiet machine). The full story is ``make demo``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.main import run_demo
from demo.story import Context, Options
from synapse_local.stack import LocalStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Context, Path]]:
    out = tmp_path_factory.mktemp("demo-output")
    steps = ("models", "canary", "guardrails")
    options = Options(fast=True, out_dir=out, schedule_seconds=1, steps=steps)
    with LocalStack(port=0, moto_port=0, schedule_seconds=1) as stack:
        yield run_demo(stack.url, stack.admin_token, options), out


def test_fast_demo_runs_the_selected_steps_to_the_end(demo_run: tuple[Context, Path]) -> None:
    ctx, _ = demo_run

    assert {s.name: (s.state, s.reason) for s in ctx.steps} == {
        "models": ("ok", ""),
        "canary": ("ok", ""),
        "guardrails": ("ok", ""),
    }


def test_monitor_rolls_the_failing_canary_back_with_its_reason(
    demo_run: tuple[Context, Path],
) -> None:
    ctx, _ = demo_run
    canary = ctx.results["canary"]
    experiment = canary["experiment"]

    assert experiment["status"] == "rolled_back"
    assert experiment["rollback_details"]["metric"] == "error_rate"
    details = experiment["rollback_details"]
    # The judge's first failing criterion. The policy sets both: the canary's error rate
    # against the control's with the relative tolerance, and the absolute cap (0.05). Which one
    # is shown first depends on where the monitor's ticks fall in the threaded traffic (both
    # failing in one check, the cap is listed first), so either is the right answer; each must
    # have failed for its own reason: its always-valid interval entirely above zero.
    assert details["kind"] in ("versus_control", "cap"), details
    if details["kind"] == "versus_control":
        assert details["observed"] > details["reference"] * (1 + details["threshold"]), details
    else:
        assert details["reference"] == details["threshold"] == 0.05, details
        assert details["observed"] > details["threshold"], details
    assert details["lower_bound"] > 0, details
    assert "error_rate" in experiment["rollback_reason"]
    assert set(canary["routing_after"]) == {"control"}
    assert {v["variant_id"]: v["effective_weight"] for v in experiment["variants"]} == {
        "control": "1",
        "canary": "0",
    }


def test_report_and_plots_are_written(demo_run: tuple[Context, Path]) -> None:
    _, out = demo_run

    for name in ("report.html", "results.json", "canary_metrics.png", "canary_ramp.png"):
        assert (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "rolled_back" in html and "canary_metrics.png" in html
    assert (
        json.loads((out / "results.json").read_text())["plots"]["canary_ramp"] == "canary_ramp.png"
    )


def test_the_shortcut_model_is_rolled_back_by_its_explanation_guardrails(
    demo_run: tuple[Context, Path],
) -> None:
    ctx, out = demo_run
    found = ctx.results["guardrails"]
    guard = found["guardrail"]
    evaluation = guard["evaluation"]

    assert evaluation["status"] == "failed"
    assert evaluation["top_features"]["treatment"][0] == guard["feature"]
    assert guard["feature"] not in evaluation["top_features"]["control"][:3]
    assert guard["experiment"]["status"] == "rolled_back"
    assert guard["experiment"]["rollback_details"]["metric"] == "explanation_guardrails"
    assert f"'{guard['feature']}' is rank 1" in evaluation["reason"]
    assert 0.0 <= found["drift"]["ndcg"] <= 1.0 and 0.0 <= found["versions"]["ndcg"] <= 1.0
    assert "6. Attribution drift and explanation guardrails" in (
        (out / "report.html").read_text(encoding="utf-8")
    )
