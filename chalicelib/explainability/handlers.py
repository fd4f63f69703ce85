"""Event-handler bodies: the SQS job worker and the explanation function's entry point.

``app.py`` declares ``explanation_worker`` (SQS, the jobs queue) and delegates to
:func:`handle_job_messages`. In AWS the explanation function (a separate Lambda with shap, lime
and scikit-learn in its image/layer) uses :func:`explainer_function_handler` as its handler.
"""

from __future__ import annotations

import json
from typing import Any

from chalicelib.core.errors import SynapseError, ValidationError
from chalicelib.core.observability import logger
from chalicelib.core.singleton import lazy
from chalicelib.explainability.budget import Allowance, bounded
from chalicelib.explainability.errors import NeedsJob
from chalicelib.explainability.service import (
    ExplanationService,
    build_service,
    get_explanation_service,
)


def _bodies(event: Any) -> list[str]:
    """Message bodies of a Chalice ``SQSEvent`` or a raw ``{"Records": [...]}`` event."""
    if isinstance(event, dict):
        return [record["body"] for record in event.get("Records", [])]
    return [record.body for record in event]


def seconds_left(context: Any) -> float | None:
    """The invocation's remaining time from a Lambda context (``None`` without one)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return max(0.0, float(remaining()) / 1000)


def handle_job_messages(event: Any, context: Any = None) -> dict[str, int]:
    """Runs the job named by each message (``{"job_id": ...}``); malformed messages are dropped.

    Jobs run in this invocation get its remaining time (``context``, or the Chalice event's
    context) as their limit. An unexpected error propagates so that SQS redelivers the message
    (the job goes back to ``queued`` and is retried up to the job's attempt limit).
    """
    handled = 0
    service = get_explanation_service()
    context = context if context is not None else getattr(event, "context", None)
    for body in _bodies(event):
        try:
            job_id = json.loads(body)["job_id"]
        except (ValueError, KeyError, TypeError):
            logger.warning("dropping malformed explanation job message")
            continue
        service.handle_job(str(job_id), seconds_left(context))
        handled += 1
    return {"jobs": handled}


@lazy
def get_function_service() -> ExplanationService:
    """The service as the explanation function runs it: always computing in-process."""
    return build_service("inprocess")


def explainer_function_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Entry point of the explanation function: ``{"operation", "payload", "allowance"}`` →
    result. Synchronous work runs under the caller's ``allowance``; a job gets this function's
    remaining time.

    Returns:
        ``{"ok": true, "result": ...}``, ``{"ok": false, "error": {error, message, status}}``
        so the API function can re-raise the same error, or ``{"ok": false, "needs_job":
        estimate}`` for synchronous work that must become a job.
    """
    try:
        if not isinstance(event, dict) or "operation" not in event:
            raise ValidationError("the event needs an operation and a payload")
        payload = dict(event.get("payload") or {})
        if event["operation"] == "run_job":
            payload["seconds_available"] = seconds_left(context)
        allowance = _allowance(event.get("allowance"))
        with bounded(allowance):
            result = get_function_service().execute(event["operation"], payload)
    except NeedsJob as over:
        return {
            "ok": False,
            "needs_job": None if over.estimate is None else over.estimate.to_dict(),
        }
    except SynapseError as error:
        return {"ok": False, "error": {**error.to_dict(), "status": error.status}}
    return {"ok": True, "result": result}


def _allowance(found: Any) -> Allowance | None:
    """The caller's allowance sent with the event (``None``: none sent).

    Raises:
        ValidationError: A malformed allowance.
    """
    if found is None:
        return None
    try:
        return Allowance.from_dict(found)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ValidationError("the event's allowance is malformed") from None
