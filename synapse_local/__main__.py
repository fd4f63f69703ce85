"""``python -m synapse_local`` (what ``make run`` starts): the local stack until Ctrl-C.

Environment:
    PORT: HTTP port of the API (default 8000).
    MOTO_PORT: Port of the embedded moto server (default: any free port).
    SYNAPSE_ADMIN_TOKEN: Admin API token to seed (default: a new one, printed).
    SYNAPSE_SCHEDULE_SECONDS: Run every scheduled handler at this period instead of its rate.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

# Before anything reads them: the local stage and no EMF metric lines on the console.
os.environ.setdefault("SYNAPSE_STAGE", "local")
os.environ.setdefault("SYNAPSE_METRICS", "off")

from chalicelib.core.errors import SynapseError  # noqa: E402
from synapse_local.stack import LocalStack  # noqa: E402


def _install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


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
        port=int(os.environ.get("PORT") or 8000), moto_port=int(os.environ.get("MOTO_PORT") or 0)
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
