"""The local stack with the real app, over real HTTP and a real moto server: what ``make run``
serves, the admin token it seeds, and the S3 notification and schedule wiring."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
import requests

from synapse_local.pumps import S3Route
from synapse_local.stack import RESPONSE_BUFFER_BYTES, LocalStack


def wait_for(predicate: Callable[[], bool], limit: float = 15.0) -> bool:
    """Polls ``predicate`` until it holds or ``limit`` seconds pass (a bound, not a measurement)."""
    pause = threading.Event()
    for _ in range(int(limit / 0.05)):
        if predicate():
            return True
        pause.wait(0.05)
    return predicate()


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(port=0, moto_port=0, schedule_seconds=1) as running:
        yield running


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_is_served_over_http_without_a_token(stack: LocalStack) -> None:
    response = requests.get(f"{stack.url}/health", timeout=10)

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_openapi_document_is_served_over_http(stack: LocalStack) -> None:
    response = requests.get(f"{stack.url}/openapi.json", timeout=10)

    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert "/health" in document["paths"]
    assert "/auth/whoami" in document["paths"]


def test_generated_admin_token_authenticates_as_admin(stack: LocalStack) -> None:
    response = requests.get(f"{stack.url}/auth/whoami", headers=auth(stack.admin_token), timeout=10)

    assert stack.admin_token.startswith("snk_")
    assert response.status_code == 200
    assert response.json()["principal"] == "admin"
    assert response.json()["roles"] == ["admin"]


def test_requests_without_or_with_a_bad_token_get_401(stack: LocalStack) -> None:
    missing = requests.get(f"{stack.url}/auth/whoami", timeout=10)
    wrong = requests.get(f"{stack.url}/auth/whoami", headers=auth("snk_nope_nope"), timeout=10)

    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert wrong.json()["error"]


def test_concurrent_clients_each_see_their_own_principal(stack: LocalStack) -> None:
    tokens = {}
    for index in range(8):
        created = requests.post(
            f"{stack.url}/auth/keys",
            json={"principal": f"user-{index}", "roles": ["reader"]},
            headers=auth(stack.admin_token),
            timeout=10,
        )
        assert created.status_code == 201, created.text
        tokens[f"user-{index}"] = created.json()["token"]

    def whoami(item: tuple[str, str]) -> tuple[str, int, str]:
        name, token = item
        response = requests.get(f"{stack.url}/auth/whoami", headers=auth(token), timeout=20)
        return name, response.status_code, response.json().get("principal", "")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(whoami, list(tokens.items()) * 4))

    assert all(status == 200 for _, status, _ in results)
    assert all(name == principal for name, _, principal in results)


def test_s3_put_to_incoming_reaches_the_s3_pump_through_the_bootstrapped_notification(
    stack: LocalStack,
) -> None:
    assert stack.s3_pump is not None and stack.s3_pump.running
    bucket = stack.resources.buckets[0]
    seen: list[dict[str, Any]] = []
    route = S3Route(lambda event, context: seen.append(event), "recorder", bucket, "incoming/")
    stack.s3_pump.routes.append(route)
    key = f"incoming/local stack {uuid.uuid4().hex[:6]}.csv"
    s3 = boto3.client("s3", endpoint_url=stack.endpoint_url, region_name="us-east-1")
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=b"a,b\n1,2\n")
        assert wait_for(lambda: bool(seen))
    finally:
        stack.s3_pump.routes.remove(route)

    record = seen[0]["Records"][0]
    assert record["s3"]["bucket"]["name"] == bucket
    assert record["s3"]["object"]["key"] == key.replace(" ", "+")


def test_schedule_runner_invokes_every_scheduled_handler_of_the_app(stack: LocalStack) -> None:
    assert stack.scheduler is not None
    names = {job.name for job in stack.scheduler.jobs}
    assert "maintenance" in names
    maintenance = next(job for job in stack.scheduler.jobs if job.name == "maintenance")

    assert wait_for(lambda: maintenance.runs >= 1)
    assert maintenance.last_result == {"events_redelivered": 0}


def test_stack_points_boto3_at_moto_while_running(stack: LocalStack) -> None:
    assert os.environ["AWS_ENDPOINT_URL"] == stack.endpoint_url
    tables = boto3.client(
        "dynamodb", endpoint_url=stack.endpoint_url, region_name="us-east-1"
    ).list_tables()["TableNames"]
    assert set(stack.resources.tables) <= set(tables)


# Nagle's algorithm meeting the client's delayed ACK holds a response sent in two writes for at
# least 40 ms on Linux; an unstalled /health answers in a few milliseconds.
STALL_SECONDS = 0.035
KEEP_ALIVE_REQUESTS = 150


def _keep_alive_stalls(stack: LocalStack, path: str) -> tuple[int, set[int]]:
    """Sends sequential GETs on one connection; returns (stalls, local ports used)."""
    import http.client
    import time

    connection = http.client.HTTPConnection(stack.host, stack.port, timeout=10)
    headers = auth(stack.admin_token)
    stalls, ports = 0, set()
    try:
        for _ in range(KEEP_ALIVE_REQUESTS):
            started = time.perf_counter()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            stalls += time.perf_counter() - started >= STALL_SECONDS
            assert response.status == 200
            ports.add(connection.sock.getsockname()[1])
    finally:
        connection.close()
    return stalls, ports


def test_keep_alive_requests_do_not_stall_on_delayed_acks(stack: LocalStack) -> None:
    stalls, ports = _keep_alive_stalls(stack, "/health")

    # Every request stalled before the fix (149 of 150); a loaded machine delays a few.
    assert len(ports) == 1, "the server closed the keep-alive connection"
    assert stalls <= KEEP_ALIVE_REQUESTS // 4, f"{stalls} of {KEEP_ALIVE_REQUESTS} stalled"


def test_keep_alive_responses_larger_than_one_write_do_not_stall_either(
    stack: LocalStack,
) -> None:
    size = len(requests.get(f"{stack.url}/openapi.json", timeout=10).content)
    stalls, ports = _keep_alive_stalls(stack, "/openapi.json")

    assert size > RESPONSE_BUFFER_BYTES  # more than one buffer: sent in several writes
    assert len(ports) == 1
    assert stalls <= KEEP_ALIVE_REQUESTS // 4, f"{stalls} of {KEEP_ALIVE_REQUESTS} stalled"
