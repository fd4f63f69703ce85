"""What ``make run`` starts (``python -m synapse_local``), as a user sees it: the printed URL
and token, the API over HTTP, and a clean exit on Ctrl-C."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.helpers.net import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-admin-token-for-make-run"

pytestmark = pytest.mark.e2e


@dataclass
class Running:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    port: int = 0
    url: str = ""
    token: str = ""


def _read(process: subprocess.Popen[str], sink: queue.Queue[str | None]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sink.put(line)
    sink.put(None)


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    port = free_port()
    # A user's shell: none of the test settings conftest put into this process's environment.
    test_only = ("COV_", "PYTEST_", "AWS_", "SYNAPSE_", "POWERTOOLS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(test_only)}
    env.update({"PORT": str(port), "SYNAPSE_ADMIN_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1",
                "SYNAPSE_LOCAL_DIR": str(tmp_path_factory.mktemp("state"))})  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "synapse_local"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read, args=(process, lines), daemon=True).start()
    running = Running(process, port=port)
    try:
        while not running.lines or "Ctrl-C" not in running.lines[-1]:
            line = lines.get(timeout=120)
            if line is None:
                pytest.fail("the local stack exited early:\n" + "".join(running.lines))
            running.lines.append(line)
            if match := re.search(r"API URL:\s+(http://\S+)", line):
                running.url = match.group(1)
            if match := re.search(r"Admin token:\s+(\S+)", line):
                running.token = match.group(1)
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_prints_the_url_on_the_requested_port_and_the_seeded_token(local_stack: Running) -> None:
    assert local_stack.url == f"http://127.0.0.1:{local_stack.port}"
    assert f"Console:      {local_stack.url}/console" in "".join(local_stack.lines)
    assert local_stack.token == TOKEN
    assert any("curl" in line for line in local_stack.lines)


def test_health_and_openapi_are_served(local_stack: Running) -> None:
    health = requests.get(f"{local_stack.url}/health", timeout=10)
    openapi = requests.get(f"{local_stack.url}/openapi.json", timeout=10)

    assert health.status_code == 200
    assert health.json() == {"status": "ok", "stage": "local"}
    assert openapi.status_code == 200
    assert "/health" in openapi.json()["paths"]


def test_the_seeded_token_is_an_admin_token(local_stack: Running) -> None:
    headers = {"Authorization": f"Bearer {local_stack.token}"}

    whoami = requests.get(f"{local_stack.url}/auth/whoami", headers=headers, timeout=10)
    anonymous = requests.get(f"{local_stack.url}/auth/whoami", timeout=10)

    assert whoami.status_code == 200
    assert whoami.json()["roles"] == ["admin"]
    assert anonymous.status_code == 401


def test_ctrl_c_stops_everything_with_exit_code_zero(local_stack: Running) -> None:
    local_stack.process.send_signal(signal.SIGINT)

    assert local_stack.process.wait(timeout=30) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{local_stack.url}/health", timeout=5)
