"""The local stack with the real app, over real HTTP and a real moto server: what ``make run``
serves, the admin token it seeds, and the S3 notification and schedule wiring."""

from __future__ import annotations

import http.client
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


# A keep-alive stall is Nagle's algorithm meeting the client's delayed ACK: a response written in
# two sends on a socket without TCP_NODELAY has its second send held until the client
# acknowledges the first (40 ms on Linux). The tests look at the cause, never at the clock (a
# loaded machine delays requests for other reasons): a small response must reach the client in
# one piece (one send, delivered whole on loopback whatever the load), and the server's sockets
# must have TCP_NODELAY (so a response larger than one write is not held either). A control
# server in the same run, Chalice's stock handler, shows the check sees the stall's cause.
KEEP_ALIVE_REQUESTS = 150


def _split_responses(host: str, port: int, path: str, count: int) -> tuple[int, int]:
    """Sends ``count`` sequential GETs on one keep-alive connection; returns how many responses
    did not arrive whole in the first read after their request, and how many were complete."""
    import socket as sockets

    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n"
    split = complete = 0
    with sockets.create_connection((host, port), timeout=10) as connection:
        for _ in range(count):
            connection.sendall(request.encode())
            received = connection.recv(1 << 20)
            split += not _whole(received)
            while not _whole(received):
                more = connection.recv(1 << 20)
                assert more, "the server closed the keep-alive connection"
                received += more
            complete += received.startswith(b"HTTP/1.1 200 ")
    return split, complete


def _whole(received: bytes) -> bool:
    """Whether ``received`` holds one HTTP response's head and its Content-Length of body."""
    head, found, body = received.partition(b"\r\n\r\n")
    if not found:
        return False
    lengths = [
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
        if line.lower().startswith(b"content-length:")
    ]  # fmt: skip
    return len(body) >= (lengths[0] if lengths else 0)


def test_keep_alive_responses_leave_the_server_in_one_write(stack: LocalStack) -> None:
    split, complete = _split_responses(stack.host, stack.port, "/health", KEEP_ALIVE_REQUESTS)

    assert complete == KEEP_ALIVE_REQUESTS
    assert split == 0, f"{split} of {KEEP_ALIVE_REQUESTS} responses came in pieces"


def test_the_check_sees_chalices_stock_handler_split_its_responses() -> None:
    from chalice import Chalice
    from chalice.config import Config
    from chalice.local import LocalDevServer

    control = Chalice("control")
    control.route("/health")(lambda: {"status": "ok"})
    server = LocalDevServer(control, Config(), "127.0.0.1", 0)  # Chalice's own handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server.server_address[1]
        split, complete = _split_responses("127.0.0.1", port, "/health", 40)
    finally:
        server.shutdown()
        server.server.server_close()

    # Headers and body in two sends: the body is held by Nagle (or merely later); on a busy
    # machine the client may find both, so only a share is required.
    assert complete == 40
    assert split >= 10


def test_the_servers_connections_have_tcp_nodelay(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket as sockets

    server = stack._http.server
    handle = server.RequestHandlerClass
    options: list[int] = []

    def handle_and_look(request: Any, client_address: Any, owner: Any) -> Any:
        answered = handle(request, client_address, owner)  # the whole connection
        options.append(request.getsockopt(sockets.IPPROTO_TCP, sockets.TCP_NODELAY))
        return answered

    monkeypatch.setattr(server, "RequestHandlerClass", handle_and_look)
    sizes = []
    for _ in range(2):  # two keep-alive connections, closed by the client
        connection = http.client.HTTPConnection(stack.host, stack.port, timeout=10)
        try:
            for _ in range(3):
                connection.request("GET", "/openapi.json")
                sizes.append(len(connection.getresponse().read()))
        finally:
            connection.close()

    assert min(sizes) > RESPONSE_BUFFER_BYTES  # more than one write: only TCP_NODELAY helps
    assert wait_for(lambda: len(options) == 2), options  # both connections' handlers returned
    assert all(option != 0 for option in options)
