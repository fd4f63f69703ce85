"""``make demo`` / ``python -m demo [--fast] [--out DIR]``.

Starts the local stack (or uses ``$SYNAPSE_URL`` with ``$SYNAPSE_TOKEN``), plays the story
through the HTTP API and writes ``demo-output/`` (PNG plots, ``report.html``, ``results.json``).

Environment:
    DEMO_FAST=1: small traffic and no wait for the ramp (about a minute instead of several).
    SYNAPSE_SCHEDULE_SECONDS: period of the scheduled monitor of a stack the demo starts (2).
    SYNAPSE_URL, SYNAPSE_TOKEN: use a running stack (its schedule period is its own).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from demo import (
    step_canary,
    step_data,
    step_experiment,
    step_explain,
    step_guardrails,
    step_models,
)
from demo.client import Api
from demo.report import make_plots, write_html
from demo.stack import endpoint
from demo.story import Context, Options, run_step

STEPS = [
    ("data", "1. Data: upload, S3-triggered version, cleaning, split, lineage", step_data.run),
    ("models", "2a. Train and register three model versions", step_models.run),
    ("canary", "2b/3. Canary of v2 with a ramp; automatic rollback", step_canary.run),
    ("experiment", "4. A/B test of v3 to significance; conclude and promote", step_experiment.run),
    ("explain", "5. Explain the winner: SHAP, LIME, global importance", step_explain.run),
    (
        "guardrails",
        "6. Attribution drift; an explanation guardrail rolls a shortcut model back",
        step_guardrails.run,
    ),
]


def run_demo(url: str, token: str, options: Options) -> Context:
    """Plays every step against the API at ``url`` and writes the report.

    Returns:
        The context: step states, results and plot names.
    """
    options.out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(Api(url, token), options)
    ctx.say(f"SynapseNet demo against {url}{' (fast mode)' if options.fast else ''}")
    for name, title, step in STEPS:
        if options.steps is None or name in options.steps:
            run_step(ctx, name, title, step)
        elif name == "data":
            step_data.local_fallback(ctx)
    ctx.say()
    ctx.say("=== Report ===")
    make_plots(ctx)
    report = write_html(ctx, url)
    ctx.say(f"  report: {report}")
    ctx.say()
    for status in ctx.steps:
        extra = f": {status.reason}" if status.reason else ""
        ctx.say(f"  {status.state:>8}  {status.title}{extra}")
    return ctx


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit code 1 if a step failed."""
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", default=os.environ.get("DEMO_FAST") == "1")
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--steps", nargs="*", default=None, choices=[s[0] for s in STEPS])
    args = parser.parse_args(argv)
    schedule = float(os.environ.get("SYNAPSE_SCHEDULE_SECONDS") or 2)
    steps = tuple(args.steps) if args.steps else None
    options = Options(args.fast, args.out, args.seed, schedule, steps)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with endpoint(args.out, schedule) as api:
        if api.started_here:
            print(
                f"Started a local stack at {api.url} (monitor every {schedule:g} s; log in "
                f"{args.out / 'stack.log'})",
                flush=True,
            )
        ctx = run_demo(api.url, api.token, options)
    print(f"Done in {time.monotonic() - started:.0f} s.", flush=True)
    return 1 if any(s.state == "failed" for s in ctx.steps) else 0
