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


def handle_job_messages(event: Any) -> dict[str, int]:
    """Runs the job named by each message (``{"job_id": ...}``); malformed messages are dropped.

    An unexpected error propagates so that SQS redelivers the message (the job stays
    ``running`` and is retried up to the job's attempt limit).
    """
    handled = 0
    service = get_explanation_service()
    for body in _bodies(event):
        try:
            job_id = json.loads(body)["job_id"]
        except (ValueError, KeyError, TypeError):
            logger.warning("dropping malformed explanation job message")
            continue
        service.handle_job(str(job_id))
        handled += 1
    return {"jobs": handled}


@lazy
def get_function_service() -> ExplanationService:
    """The service as the explanation function runs it: always computing in-process."""
    return build_service("inprocess")


def explainer_function_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Entry point of the explanation function: ``{"operation", "payload"}`` → result.

    Returns:
        ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {error, message, status}}``
        so the API function can re-raise the same error.
    """
    try:
        if not isinstance(event, dict) or "operation" not in event:
            raise ValidationError("the event needs an operation and a payload")
        result = get_function_service().execute(event["operation"], event.get("payload") or {})
    except SynapseError as error:
        return {"ok": False, "error": {**error.to_dict(), "status": error.status}}
    return {"ok": True, "result": result}
