"""SynapseNet Serverless: the Chalice app.

Thin on purpose: it creates the app, registers one Blueprint per domain and declares the
scheduled, S3 and SQS handlers, each delegating to ``chalicelib``. Importing this module must not
import shap, lime, scikit-learn, numba or pandas (every Lambda cold start pays for what it imports).
"""

from __future__ import annotations

import os

from chalice import Chalice, Rate

from chalicelib.abtesting.api import api as abtesting_api
from chalicelib.abtesting.layers_api import api as layers_api
from chalicelib.auth.api import api as auth_api
from chalicelib.auth.service import authenticate
from chalicelib.core import handlers
from chalicelib.core.http import normalize_framework_errors, set_authenticator
from chalicelib.dataversion.api import api as dataversion_api
from chalicelib.explainability.api import api as explainability_api
from chalicelib.explainability.insights_api import api as insights_api
from chalicelib.registry.api import api as registry_api
from chalicelib.system.api import api as system_api
from chalicelib.system.console import blueprint as console

set_authenticator(authenticate)
app = Chalice(app_name="synapsenet")
app.experimental_feature_flags.update(["BLUEPRINTS"])
app.register_middleware(normalize_framework_errors, "http")

app.register_blueprint(system_api.blueprint)
app.register_blueprint(console)
app.register_blueprint(auth_api.blueprint)
app.register_blueprint(registry_api.blueprint)
app.register_blueprint(abtesting_api.blueprint)
app.register_blueprint(layers_api.blueprint)
app.register_blueprint(explainability_api.blueprint)
app.register_blueprint(insights_api.blueprint)
app.register_blueprint(dataversion_api.blueprint)

DATA_BUCKET = os.environ.get("DATA_BUCKET", "synapse-data")
SCHEDULE_MINUTES = int(os.environ.get("SYNAPSE_SCHEDULE_MINUTES", "1"))


@app.schedule(Rate(SCHEDULE_MINUTES, unit=Rate.MINUTES), name="maintenance")
def maintenance(event: object) -> dict[str, int]:
    """Redelivers events that EventBridge refused earlier."""
    return handlers.run_maintenance()


@app.schedule(Rate(60, unit=Rate.MINUTES), name="dataset_retention")
def dataset_retention(event: object) -> dict[str, int]:
    """Applies dataset retention policies and deletes stored objects no live version uses."""
    from chalicelib.dataversion.handlers import run_retention

    return run_retention()


@app.schedule(Rate(SCHEDULE_MINUTES, unit=Rate.MINUTES), name="experiment_monitor")
def experiment_monitor(event: object) -> dict[str, object]:
    """Fans every running experiment out to the monitor queue (25 per message)."""
    from chalicelib.abtesting.handlers import run_monitor

    return run_monitor(event)


@app.on_sqs_message(
    queue=os.environ.get("EXPERIMENT_MONITOR_QUEUE", "synapse-experiment-monitor"),
    batch_size=1,
    name="experiment_monitor_worker",
)
def experiment_monitor_worker(event: object) -> dict[str, object]:
    """Canary checks and rollback, ramp steps and bandit reweighting of the experiments a
    monitor message names."""
    from chalicelib.abtesting.handlers import handle_monitor_messages

    return handle_monitor_messages(event)


@app.on_sqs_message(
    queue=os.environ.get("EXPLANATION_JOBS_QUEUE", "synapse-explanation-jobs"),
    batch_size=1,
    name="explanation_worker",
)
def explanation_worker(event: object) -> dict[str, int]:
    """Runs queued explanation jobs (batch, global, dependence)."""
    from chalicelib.explainability import handlers as explainability_handlers

    return explainability_handlers.handle_job_messages(event)


@app.on_s3_event(
    bucket=DATA_BUCKET, prefix="incoming/", events=["s3:ObjectCreated:*"], name="dataset_ingest"
)
def dataset_ingest(event: object) -> None:
    """Turns files landing under incoming/<dataset>/ into dataset versions (idempotent)."""
    from chalicelib.dataversion.handlers import handle_s3_event

    handle_s3_event(event)


@app.on_s3_event(
    bucket=DATA_BUCKET, prefix="cas/sha256/", events=["s3:ObjectCreated:Put"], name="dataset_upload"
)
def dataset_upload(event: object) -> None:
    """Versions direct uploads (a verified PUT straight into cas/) in place (idempotent).

    Only PUTs: the copies the other paths make into cas/ raise ObjectCreated:Copy events.
    """
    from chalicelib.dataversion.handlers import handle_s3_event

    handle_s3_event(event)
