"""Runs a snippet against the real app (moto, the Chalice test client) in a child process.

A hostile model can make the interpreter run out of memory or spin for minutes; in a child
process that is observed (a return code, a timeout) instead of taking pytest down. The snippet
sees ``http`` (the JSON helper with a writer's token), ``tokens``, ``app_module`` and
``report(name, value)``, which hands a JSON value back to the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

_PRELUDE = """
import base64, json, os, sys, time
sys.path.insert(0, {repo!r})
os.chdir({repo!r})
import tests.conftest as tc
os.environ.update({env!r})
from moto import mock_aws
from chalicelib.core import aws as aws_clients
from chalicelib.core.singleton import reset_all
from synapse_local.bootstrap import bootstrap


def report(name, value):
    print("REPORT " + json.dumps({{name: value}}), flush=True)


reset_all()
aws_clients.reset_clients()
with mock_aws():
    bootstrap()
    tokens = tc.make_tokens()
    from chalice.test import Client

    import app as app_module

    with Client(app_module.app, stage_name="local") as client:
        http = tc.Http(client, tokens.writer)
{body}
"""

# A job run the way the SQS-triggered worker runs it, with a Lambda context of ``seconds``.
WORKER = """
def drain_jobs():
    from chalicelib.core import aws
    from chalicelib.core.config import get_settings
    sqs = aws.client("sqs")
    url = sqs.get_queue_url(QueueName=get_settings().explanation_jobs_queue)["QueueUrl"]
    bodies = []
    while True:
        found = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not found:
            return bodies
        for message in found:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

def run_worker(body, seconds):
    from chalice.local import LambdaContext
    event = {"Records": [{"body": body, "messageId": "m-1", "receiptHandle": "r-1",
        "attributes": {}, "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:synapse-explanation-jobs",
        "awsRegion": "us-east-1"}]}
    context = LambdaContext("explanation_worker", 1024, max_runtime_ms=int(seconds * 1000))
    return app_module.app.handler_map["explanation_worker"](event, context)
"""


def run_app(
    body: str, env: dict[str, str] | None = None, timeout: float = 300
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Runs ``body`` (indented into the prelude) in a fresh interpreter.

    Args:
        body: Python statements using ``http``, ``report``, ``app_module``.
        env: Environment set after ``tests.conftest`` (the app reads it at request time).
        timeout: Seconds before the child is killed (the test then fails with a timeout).

    Returns:
        The finished process and every value the snippet reported, by name.
    """
    code = _PRELUDE.format(
        repo=str(REPO), env=env or {}, body=textwrap.indent(textwrap.dedent(body), " " * 8)
    )
    done = subprocess.run(
        [sys.executable, "-"],
        input=code,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=dict(os.environ),
    )
    reported: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        if line.startswith("REPORT "):
            reported.update(json.loads(line[len("REPORT ") :]))
    return done, reported
