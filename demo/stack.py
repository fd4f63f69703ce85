"""Where the demo's API lives: ``$SYNAPSE_URL`` + ``$SYNAPSE_TOKEN``, or a local stack it starts.

The stack runs in a child process (``python -m synapse_local``) so that the server and the
traffic simulator use different cores; its log goes to ``<out>/stack.log``.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Endpoint:
    """A running API.

    Attributes:
        url: Base URL.
        token: Admin token.
        started_here: Whether the demo started (and will stop) the stack.
        schedule_seconds: The monitor period, when known.
        pid: The stack's process id when started here (benches sample its memory).
    """

    url: str
    token: str
    started_here: bool
    schedule_seconds: float | None
    pid: int | None = None


def _wait_healthy(url: str, process: subprocess.Popen[str], limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the local stack exited with code {process.returncode}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the local stack did not answer /health within {limit:.0f} s")


def _read_url(process: subprocess.Popen[str], log_file: Path, limit: float) -> str:
    """Copies the child's output to the log and returns the ``API URL:`` it prints."""
    found: dict[str, str] = {}
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        with log_file.open("a", encoding="utf-8") as sink:
            for line in process.stdout:
                sink.write(line)
                sink.flush()
                match = re.search(r"API URL:\s+(\S+)", line)
                if match and not ready.is_set():
                    found["url"] = match.group(1)
                    ready.set()
        ready.set()

    threading.Thread(target=pump, name="stack-log", daemon=True).start()
    if not ready.wait(limit) or "url" not in found:
        raise RuntimeError(f"the local stack did not start; see {log_file}")
    return found["url"]


@contextmanager
def local_stack(
    out_dir: Path, schedule_seconds: float | None, env_overrides: dict[str, str] | None = None
) -> Iterator[Endpoint]:
    """Starts ``python -m synapse_local`` on a free port and stops it afterwards.

    Args:
        out_dir: Where ``stack.log`` goes.
        schedule_seconds: Period of every scheduled handler (``None``: their own rates).
        env_overrides: More environment for the stack (a bench keeps its state on disk, as
            ``make run`` does, with ``SYNAPSE_LOCAL_PERSIST=1`` and ``SYNAPSE_LOCAL_DIR``).
    """
    token = "demo-" + secrets.token_urlsafe(24)
    env = dict(os.environ)
    env.pop("SYNAPSE_SCHEDULE_SECONDS", None)
    env.update(
        PORT="0",
        SYNAPSE_ADMIN_TOKEN=token,
        SYNAPSE_LOCAL_PERSIST="0",  # the demo starts empty and leaves no state behind
        PYTHONUNBUFFERED="1",
    )
    if schedule_seconds is not None:
        env["SYNAPSE_SCHEDULE_SECONDS"] = str(schedule_seconds)
    env.update(env_overrides or {})
    log_file = out_dir / "stack.log"
    log_file.write_text("")
    process = subprocess.Popen(
        [sys.executable, "-m", "synapse_local"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = _read_url(process, log_file, limit=120)
        _wait_healthy(url, process, limit=60)
        yield Endpoint(url, token, True, schedule_seconds, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def endpoint(out_dir: Path, schedule_seconds: float) -> Iterator[Endpoint]:
    """The stack at ``$SYNAPSE_URL`` (token ``$SYNAPSE_TOKEN``) or a new local one."""
    url = os.environ.get("SYNAPSE_URL", "").strip()
    if url:
        token = os.environ.get("SYNAPSE_TOKEN", "").strip()
        if not token:
            raise SystemExit("SYNAPSE_URL is set: set SYNAPSE_TOKEN to an admin token too")
        requests.get(f"{url.rstrip('/')}/health", timeout=10).raise_for_status()
        yield Endpoint(url.rstrip("/"), token, False, None)
        return
    with local_stack(out_dir, schedule_seconds) as running:
        yield running
