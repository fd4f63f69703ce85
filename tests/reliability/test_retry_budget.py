"""Retries are bounded so that a dependency outage ends in a 503 inside API Gateway's 29 s limit.

Botocore's throttling backoff is ``rand * min(2 ** i, 20)`` seconds before retry ``i + 1``; the
worst case of a call is the sum over its retries. A request that waits longer than the gateway
allows is cut off with a 504 after its change may have committed, and its event never reaches the
outbox. These tests read the configured attempts (no timing is measured).
"""

from __future__ import annotations

from typing import Any

import pytest

GATEWAY_LIMIT_SECONDS = 29.0
PER_CALL_BUDGET_SECONDS = 7.0


def worst_throttle_wait(total_attempts: int) -> float:
    """The longest botocore can wait between ``total_attempts`` throttled attempts."""
    return float(sum(min(2**i, 20) for i in range(total_attempts - 1)))


@pytest.mark.parametrize("service", ["s3", "dynamodb", "events", "sqs", "lambda"])
def test_each_boto3_client_waits_at_most_seven_seconds(service: str, module_aws: Any) -> None:
    from chalicelib.core import aws

    attempts = aws.client(service).meta.config.retries["total_max_attempts"]
    assert worst_throttle_wait(attempts) <= PER_CALL_BUDGET_SECONDS


def test_each_table_waits_at_most_seven_seconds() -> None:
    from chalicelib.domains import all_table_models

    for model in all_table_models():
        attempts = 1 + model.Meta.max_retry_attempts
        assert worst_throttle_wait(attempts) <= PER_CALL_BUDGET_SECONDS, model.__name__


def test_an_eventbridge_outage_costs_a_request_well_under_the_gateway_limit(
    module_aws: Any,
) -> None:
    from chalicelib.core import aws
    from chalicelib.core.events import EventBridgeBus

    bus = EventBridgeBus()
    per_call = worst_throttle_wait(aws.client("events").meta.config.retries["total_max_attempts"])
    own_backoff = sum(bus.backoff_seconds * 2**i for i in range(bus.attempts - 1))
    assert bus.attempts * per_call + own_backoff <= GATEWAY_LIMIT_SECONDS / 2
