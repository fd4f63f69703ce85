"""The local stack: moto, the Chalice app over HTTP, the schedule runner and the event pumps.

One process, no Docker. :class:`LocalStack` starts moto's ``ThreadedMotoServer`` on loopback,
points boto3 and PynamoDB at it through ``AWS_ENDPOINT_URL``, creates every resource a deployment
has (:func:`synapse_local.bootstrap.bootstrap`), seeds an admin API key, serves the app with
Chalice's local server, and runs what ``chalice local`` does not: the ``@app.schedule``,
``@app.on_s3_event`` and ``@app.on_sqs_message`` handlers, found on the app object.

``make run`` uses it through ``python -m synapse_local``; tests and benchmarks use it directly::

    with LocalStack(port=0) as stack:  # 0: a free port
        headers = {"Authorization": f"Bearer {stack.admin_token}"}
        requests.get(f"{stack.url}/auth/whoami", headers=headers)
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from synapse_local.pumps import S3EventPump, SqsPump, sqs_pumps_for_app
from synapse_local.scheduler import ScheduleRunner

log = logging.getLogger("synapse.local")

# The repository: app.py and .chalice/ (this file is synapse_local/stack.py).
PROJECT_DIR = Path(__file__).resolve().parents[1]
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
}
# Bytes of a response the local server sends in one write (larger ones go out in pieces).
RESPONSE_BUFFER_BYTES = 64 * 1024
# Environment variables the stack sets, restored by stop().
_MANAGED_ENV = (
    *FAKE_CREDENTIALS,
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
)


def _env_float(name: str) -> float | None:
    value = os.environ.get(name, "").strip()
    return float(value) if value else None


# Loggers that may see request lines or URLs (the app's, moto's): their records are redacted.
REDACTED_LOGGERS = ("synapse.local", "synapse.local.http", "werkzeug")


def _local_server_classes() -> tuple[type, type]:
    """Chalice's request handler, answering keep-alive clients without a stall, with request
    lines logged through ``logging`` without credentials (query-string values such as
    ``?access_token=…`` and presigned signatures are redacted).

    Chalice's handler writes a response in two sends on an unbuffered socket (the status line
    and headers, then the body). On a keep-alive connection Nagle's algorithm holds the second
    send until the client acknowledges the first, and the client delays that ACK (40 ms on
    Linux): every request of a ``requests.Session`` took about 46 ms. Here the response is
    written into a buffer and sent in one write when the handler flushes it, and
    ``TCP_NODELAY`` is set so that a response larger than the buffer is not held either.
    """
    from chalice.local import ChaliceRequestHandler, ThreadedHTTPServer

    from chalicelib.core.observability import redact

    http_log = logging.getLogger("synapse.local.http")

    class LocalRequestHandler(ChaliceRequestHandler):
        # Buffered: the stdlib handler flushes once per response (handle_one_request).
        wbufsize = RESPONSE_BUFFER_BYTES

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            http_log.info("%s %s", self.address_string(), redact(format % args))

    return LocalRequestHandler, ThreadedHTTPServer


def point_tables_at(endpoint: str | None) -> None:
    """Points every registered PynamoDB model at ``endpoint`` and drops cached connections.

    ``Meta.host`` is read when a repository module is imported, which may have happened before
    the stack set ``AWS_ENDPOINT_URL`` (in a test process, say).
    """
    from chalicelib.core.config import region
    from chalicelib.domains import all_table_models

    for model in all_table_models():
        model.Meta.host = endpoint
        model.Meta.region = region()
        model._connection = None


def _reset_clients(endpoint: str | None) -> None:
    from chalicelib.core import aws
    from chalicelib.core.singleton import reset_all

    aws.reset_clients()
    reset_all()
    point_tables_at(endpoint)


class LocalStack:
    """Everything ``make run`` serves, startable in-process.

    Args:
        port: HTTP port of the app (0: any free port).
        moto_port: Port of the moto server (0: any free port).
        host: Interface for both servers (loopback).
        admin_token: The admin API token to seed (default: ``SYNAPSE_ADMIN_TOKEN``, else generated).
        schedule_seconds: Run every scheduled handler at this period (default:
            ``SYNAPSE_SCHEDULE_SECONDS``, else each handler's own rate).
        app: The Chalice app, or the module that defines ``app`` (imported after moto is up).
        run_schedules: Start the schedule runner.
        run_pumps: Start the S3 and SQS pumps.
        pump_options: Passed to the pumps (``wait_seconds``, ``retry_delay_seconds``).
        state_dir: Keep the state across restarts in this folder (``None``: in memory only;
            see :mod:`synapse_local.persistence`). A generated admin token is kept there too.
        flush_seconds: How often changed state is written to ``state_dir``.
    """

    def __init__(
        self,
        port: int = 0,
        moto_port: int = 0,
        host: str = "127.0.0.1",
        admin_token: str | None = None,
        schedule_seconds: float | None = None,
        app: Any = "app",
        run_schedules: bool = True,
        run_pumps: bool = True,
        pump_options: dict[str, Any] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        flush_seconds: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.moto_port = moto_port
        self._admin_token = admin_token or os.environ.get("SYNAPSE_ADMIN_TOKEN") or None
        self.schedule_seconds = (
            schedule_seconds
            if schedule_seconds is not None
            else _env_float("SYNAPSE_SCHEDULE_SECONDS")
        )
        self._app_spec = app
        self.run_schedules = run_schedules
        self.run_pumps = run_pumps
        self.pump_options = pump_options or {}
        self.app: Any = None
        self.resources: Any = None
        self.scheduler: ScheduleRunner | None = None
        self.s3_pump: S3EventPump | None = None
        self.sqs_pumps: list[SqsPump] = []
        self._moto: Any = None
        self._http: Any = None
        self._http_thread: threading.Thread | None = None
        self._saved_env: dict[str, str | None] | None = None
        self.started = False
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.flush_seconds = flush_seconds
        self.persistence: Any = None
        self.restored = ""
        self._restored_objects = 0
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """Base URL of the API (``http://127.0.0.1:<port>``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def endpoint_url(self) -> str:
        """The moto server's URL (what ``AWS_ENDPOINT_URL`` is set to)."""
        return f"http://{self.host}:{self.moto_port}"

    @property
    def admin_token(self) -> str:
        """The seeded admin API token."""
        if self._admin_token is None:
            raise RuntimeError("the stack has not been started")
        return self._admin_token

    def start(self) -> LocalStack:
        """Starts moto, bootstraps, seeds the admin key, serves the app and starts the workers.

        Raises:
            OSError: A port is in use.
            chalicelib.core.errors.ValidationError: ``SYNAPSE_ADMIN_TOKEN`` is too short.
        """
        if self.started:
            return self
        from chalicelib.core.observability import redact_logs

        redact_logs(*REDACTED_LOGGERS)
        try:
            self._start_moto()
            state = self._restore_objects()
            self._bootstrap(state)
            self._load_app()
            self._serve_http()
            self._start_workers()
            self._start_flusher()
        except BaseException:
            self.stop()
            raise
        self.started = True
        log.info("local stack up: api %s, aws %s", self.url, self.endpoint_url)
        return self

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        from synapse_local.motofix import install

        install()

        self._moto = ThreadedMotoServer(ip_address=self.host, port=self.moto_port, verbose=False)
        self._moto.start()
        self.moto_port = self._moto.get_host_and_port()[1]
        self._saved_env = {name: os.environ.get(name) for name in _MANAGED_ENV}
        os.environ.pop("AWS_PROFILE", None)
        os.environ.update(FAKE_CREDENTIALS)
        os.environ["AWS_ENDPOINT_URL"] = self.endpoint_url
        os.environ.setdefault("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
        os.environ.setdefault("AWS_DEFAULT_REGION", os.environ["AWS_REGION"])
        _reset_clients(self.endpoint_url)

    def _restore_objects(self) -> dict[str, Any] | None:
        """Saved S3 objects go back before the bootstrap subscribes the notifications."""
        if self.state_dir is None:
            return None
        from chalicelib.core.config import region
        from synapse_local.persistence import Persistence

        self.persistence = Persistence(self.state_dir, region(), self.flush_seconds)
        state = self.persistence.load()
        if state is not None:
            self._restored_objects = self.persistence.restore_objects(state)
        return state

    def _bootstrap(self, state: dict[str, Any] | None = None) -> None:
        from chalicelib.auth.service import get_auth_service
        from synapse_local.bootstrap import bootstrap

        self.resources = bootstrap()
        self._keep_traffic_tables_on_disk()
        if state is not None:
            items = self.persistence.restore_items(state)
            messages = self.persistence.restore_messages(state)
            self.restored = self.persistence.describe((items, self._restored_objects, messages))
        service = get_auth_service()
        token_file = self.state_dir / "admin-token" if self.state_dir is not None else None
        if not self._admin_token and token_file is not None and token_file.exists():
            self._admin_token = token_file.read_text(encoding="utf-8").strip() or None
        if self._admin_token:
            service.ensure_key(self._admin_token, "admin", ["admin"])
        else:
            self._admin_token = service.create_key(
                "admin", ["admin"], description="local stack admin"
            ).token
        if token_file is not None:  # whole or not at all: a kill mid-write keeps the old key
            from synapse_local.persistence import write_atomically

            token_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomically(token_file, self._admin_token.encode("utf-8"))

    def _keep_traffic_tables_on_disk(self) -> None:
        """The outcome dedup and assignment tables go to SQLite files (memory flat in the
        outcomes posted: :mod:`synapse_local.diskitems`), scratch beside the saved state."""
        from moto.backends import get_backend

        from chalicelib.core.config import region
        from synapse_local import diskitems
        from synapse_local.persistence import ACCOUNT

        if self.state_dir is not None:
            folder = self.state_dir / "tables"
        else:
            self._scratch = tempfile.TemporaryDirectory(prefix="synapse-tables-")
            folder = Path(self._scratch.name)
        backend = get_backend("dynamodb")[ACCOUNT][region()]  # type: ignore[call-overload]
        diskitems.attach(backend, folder)

    def _start_flusher(self) -> None:
        if self.persistence is not None:
            self.persistence.track(self._moto)
            self.persistence.save()
            self.persistence.start_flusher()

    def _load_app(self) -> None:
        if isinstance(self._app_spec, str):
            if str(PROJECT_DIR) not in sys.path:
                sys.path.insert(0, str(PROJECT_DIR))
            self.app = importlib.import_module(self._app_spec).app
        else:
            self.app = self._app_spec

    def _chalice_config(self) -> Any:
        from chalice.config import Config

        config_file = PROJECT_DIR / ".chalice" / "config.json"
        from_disk = json.loads(config_file.read_text()) if config_file.exists() else {}
        return Config(
            chalice_stage="local",
            user_provided_params={
                "chalice_app": self.app,
                "app_name": self.app.app_name,
                "project_dir": str(PROJECT_DIR),
            },
            config_from_disk=from_disk,
        )

    def _serve_http(self) -> None:
        from chalice.deploy.validate import validate_routes
        from chalice.local import CustomLocalChalice, LocalChalice, LocalDevServer

        validate_routes(self.app.routes)
        config = self._chalice_config()
        handler_cls, server_cls = _local_server_classes()
        if not isinstance(self.app, LocalChalice):
            # What chalice.local.create_local_server does: a thread-local current_request, so
            # that concurrent requests on the threaded server do not see each other's.
            CustomLocalChalice.__bases__ = (LocalChalice, self.app.__class__)
            self.app.__class__ = CustomLocalChalice
        self._http = LocalDevServer(
            self.app, config, self.host, self.port, handler_cls=handler_cls, server_cls=server_cls
        )
        self.port = self._http.server.server_address[1]
        self._http_thread = threading.Thread(
            target=self._http.server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="local-http",
            daemon=True,
        )
        self._http_thread.start()

    def _start_workers(self) -> None:
        if self.run_schedules:
            self.scheduler = ScheduleRunner.for_app(self.app, self.schedule_seconds).start()
        if self.run_pumps:
            queue_url = self.resources.s3_events_queue_url
            self.s3_pump = S3EventPump.for_app(self.app, queue_url, **self.pump_options).start()
            self.sqs_pumps = [
                pump.start() for pump in sqs_pumps_for_app(self.app, **self.pump_options)
            ]

    def stop(self) -> None:
        """Stops the workers, the HTTP server and moto; restores the environment (idempotent)."""
        pumps = [*self.sqs_pumps, *([self.s3_pump] if self.s3_pump else [])]
        for pump in pumps:  # every long poll ends at once, not one after the other's
            pump.request_stop()
        for pump in pumps:
            pump.stop()
        self.sqs_pumps, self.s3_pump = [], None
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        if self._http is not None:
            self._http.server.shutdown()
            self._http.server.server_close()
            if self._http_thread is not None:
                self._http_thread.join()
            self._http, self._http_thread = None, None
        self._save_state()
        self._release_traffic_tables()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        self._restore_env()
        self.started = False

    def _save_state(self) -> None:
        """A last snapshot on a clean stop (when the stack had started and persists)."""
        if self.persistence is None:
            return
        self.persistence.stop_flusher()
        if self.started:
            self.persistence.save()
        self.persistence = None

    def _release_traffic_tables(self) -> None:
        from synapse_local import diskitems

        diskitems.detach_all()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def _restore_env(self) -> None:
        if self._saved_env is None:
            return
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = None
        _reset_clients(os.environ.get("AWS_ENDPOINT_URL") or None)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def describe(self) -> str:
        """What runs where, with curl examples (printed by ``make run``)."""
        token = self.admin_token
        lines = [
            "SynapseNet local stack is running.",
            f"  API URL:      {self.url}",
            f"  Console:      {self.url}/console",
            f"  Admin token:  {token}",
            f"  AWS (moto):   {self.endpoint_url}  (AWS_ENDPOINT_URL, or aws --endpoint-url)",
        ]
        if self.state_dir is not None:
            kept = f"  State:        {self.state_dir} (kept across restarts"
            lines.append(kept + (f"; {self.restored})" if self.restored else "; empty)"))
        lines += [f"  Schedule:     {job.name} {job.schedule}" for job in self._jobs()]
        lines += [
            f"  S3 trigger:   {route.name} <- s3://{route.bucket}/{route.prefix or ''}"
            for route in (self.s3_pump.routes if self.s3_pump else [])
        ]
        lines += [f"  SQS trigger:  {pump.name} <- {pump.queue_url}" for pump in self.sqs_pumps]
        lines += [
            "Try:",
            f"  curl {self.url}/health",
            f'  curl -H "Authorization: Bearer {token}" {self.url}/auth/whoami',
            "Press Ctrl-C to stop.",
        ]
        return "\n".join(lines)

    def _jobs(self) -> list[Any]:
        return self.scheduler.jobs if self.scheduler else []
