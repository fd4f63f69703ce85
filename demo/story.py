"""The demo's shared state and step runner.

Each step is a function ``step(ctx)`` that talks to the API through ``ctx.api`` and stores what it
learned in ``ctx.results[<step>]`` (only numbers that came back from the API, plus the simulation
parameters the story chose). A step whose service is not deployed raises :class:`Skip` with the
reason; a step that fails is reported and the next steps run if they can.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from demo.client import Api, ApiError


class Skip(Exception):
    """A step cannot run (a service is missing, or an earlier step did not produce its input)."""


@dataclass(frozen=True)
class Options:
    """How the demo runs.

    Attributes:
        fast: Small traffic and no wait for the ramp (the smoke test's mode).
        out_dir: Where plots and ``report.html`` go.
        seed: Seed of the simulation.
        schedule_seconds: Period of the scheduled experiment monitor (when the demo started it).
        steps: Run only these steps (``None``: all); without "data" the split is made locally.
    """

    fast: bool
    out_dir: Path
    seed: int = 7
    schedule_seconds: float | None = 2.0
    steps: tuple[str, ...] | None = None


@dataclass
class StepStatus:
    """How a step ended: ``ok``, ``skipped`` or ``failed`` (with the reason)."""

    name: str
    title: str
    state: str = "pending"
    reason: str = ""
    seconds: float = 0.0


@dataclass
class Context:
    """Everything the steps share."""

    api: Api
    options: Options
    suffix: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: list[StepStatus] = field(default_factory=list)
    plots: dict[str, str] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def fast(self) -> bool:
        """Fast mode."""
        return self.options.fast

    def say(self, text: str = "") -> None:
        """Prints a line of progress at once."""
        print(text, flush=True)

    def need_routes(self, service: str, routes: list[tuple[str, str]]) -> None:
        """Raises :class:`Skip` naming the routes the server does not declare."""
        missing = self.api.missing(routes)
        if missing:
            raise Skip(f"{service} is not deployed on this server (missing {', '.join(missing)})")

    def plot(self, key: str, path: Path | None) -> None:
        """Records a written plot (``None``: nothing to plot)."""
        if path is not None:
            self.plots[key] = path.name
            self.say(f"  plot: {path}")


def run_step(ctx: Context, name: str, title: str, step: Callable[[Context], None]) -> StepStatus:
    """Runs one step, printing a header and how it ended."""
    status = StepStatus(name, title)
    ctx.steps.append(status)
    ctx.say()
    ctx.say(f"=== {title} ===")
    started = time.monotonic()
    try:
        step(ctx)
        status.state = "ok"
    except Skip as exc:
        status.state, status.reason = "skipped", str(exc)
        ctx.say(f"  skipped: {exc}")
    except (ApiError, TimeoutError, RuntimeError, ValueError, KeyError) as exc:
        status.state, status.reason = "failed", f"{type(exc).__name__}: {exc}"
        ctx.say(f"  FAILED: {status.reason}")
        traceback.print_exc(file=sys.stderr)
    status.seconds = time.monotonic() - started
    ctx.say(f"  [{status.state}] {title} ({status.seconds:.1f} s)")
    return status
