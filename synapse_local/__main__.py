"""``python -m synapse_local`` (what ``make run`` starts): the local stack until Ctrl-C.

Environment:
    PORT: HTTP port of the API (default 8000).
    MOTO_PORT: Port of the embedded moto server (default: any free port).
    SYNAPSE_ADMIN_TOKEN: Admin API token to seed (default: a new one, printed).
    SYNAPSE_SCHEDULE_SECONDS: Run every scheduled handler at this period instead of its rate.
    SYNAPSE_LOCAL_DIR: Where the state is kept across restarts (default ``.synapse-local``).
    SYNAPSE_LOCAL_RESET: ``1`` deletes the kept state first (``make run RESET=1``).
    SYNAPSE_LOCAL_PERSIST: ``0`` keeps everything in memory only (the demo and benches).
    SYNAPSE_LOCAL_FLUSH_SECONDS: How often changed state is written (default 5).
    SYNAPSE_LOCAL_MEMORY_REPORT: A file the Python memory held is written to on SIGUSR1
        (:mod:`synapse_local.memreport`; the local stack bench).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

# Before anything reads them: the local stage and no EMF metric lines on the console.
os.environ.setdefault("SYNAPSE_STAGE", "local")
os.environ.setdefault("SYNAPSE_METRICS", "off")

from chalicelib.core.errors import SynapseError  # noqa: E402
from synapse_local import memreport  # noqa: E402
from synapse_local.stack import LocalStack  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def _state_options() -> dict[str, object]:
    """Where and how often the state is kept (``SYNAPSE_LOCAL_*``), wiping it if asked."""
    from synapse_local.persistence import Persistence

    if os.environ.get("SYNAPSE_LOCAL_PERSIST", "1").strip() == "0":
        return {}
    folder = Path(os.environ.get("SYNAPSE_LOCAL_DIR") or REPO / ".synapse-local")
    if os.environ.get("SYNAPSE_LOCAL_RESET", "").strip() not in ("", "0"):
        Persistence(folder, "").reset()
        print(f"Starting empty: deleted the kept state in {folder}", flush=True)
    flush = float(os.environ.get("SYNAPSE_LOCAL_FLUSH_SECONDS") or 5.0)
    return {"state_dir": folder, "flush_seconds": flush}


def main() -> int:
    """Runs the stack until SIGINT or SIGTERM; returns the exit code."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("werkzeug", "botocore.credentials", "pynamodb.settings"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # moto's request lines, boto3 chatter
    stop = threading.Event()
    _install_signal_handlers(stop)
    stack = LocalStack(
        port=int(os.environ.get("PORT") or 8000),
        moto_port=int(os.environ.get("MOTO_PORT") or 0),
        **_state_options(),
    )
    try:
        stack.start()
    except OSError as exc:
        print(
            f"Cannot start the local stack: {exc} (is PORT={stack.port} in use?)", file=sys.stderr
        )
        return 1
    except (SynapseError, ValueError) as exc:  # a bad SYNAPSE_ADMIN_TOKEN or schedule
        print(f"Cannot start the local stack: {exc}", file=sys.stderr)
        return 2
    memreport.install(quiet=stack.persistence.lock if stack.persistence else None)
    print(stack.describe(), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        print("Stopping the local stack...", flush=True)
        stack.stop()
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
