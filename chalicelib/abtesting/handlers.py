"""Bodies of the A/B-testing event handlers declared in ``app.py``."""

from __future__ import annotations

from typing import Any

from chalicelib.core.observability import logger


def run_monitor(event: Any = None) -> dict[str, Any]:
    """The ``experiment_monitor`` schedule: rollback checks, ramp steps and bandit reweighting.

    Idempotent (every change is a conditional write) and cheap when nothing is due: one index
    query for running experiments plus a policy read and a metrics query per running experiment.
    """
    from chalicelib.abtesting.rollback import get_rollback_manager

    report = get_rollback_manager().run_once().as_dict()
    if report["rolled_back"] or report["ramped"] or report["reweighted"] or report["errors"]:
        logger.info("experiment monitor", extra=report)
    return report
