"""Shared fixtures: a moto-backed AWS, the Chalice test client and API tokens per role.

Environment variables are set before anything from the app is imported, as in Lambda.
"""

from __future__ import annotations

import os

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "SYNAPSE_STAGE": "test",
        "SYNAPSE_METRICS": "off",
        "SYNAPSE_VALIDATE_RESPONSES": "1",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "POWERTOOLS_DEV": "false",
        # Synchronous explanations stop at 20 s when deployed (API Gateway gives up at 29 s);
        # here the first shap Partition call of a process compiles with numba, which took 17 s
        # on a shared 2-vCPU machine under load. Tests of the deadline set their own limits.
        "SYNAPSE_EXPLAIN_SYNC_DEADLINE": "300",
    }
)
os.environ.pop("AWS_ENDPOINT_URL", None)

from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from moto import mock_aws  # noqa: E402

from chalicelib.core import aws as aws_clients  # noqa: E402
from chalicelib.core.singleton import reset_all  # noqa: E402
from synapse_local.motofix import install as install_moto_fixes  # noqa: E402

# Property tests draw the same examples on every run (derived from each test's source), and no
# example fails for time on a loaded machine: no deadline, no ``too_slow`` health check. A
# test's own ``@settings`` inherit this (test_suite_fixtures checks it).
settings.register_profile(
    "suite",
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
settings.load_profile("suite")

# moto's DynamoDB made atomic per request (as DynamoDB is) and its transactions cheaper, and its
# S3 object requests atomic with respect to each other (as S3's are). These are the suite's only
# serializations of moto: tests needing DynamoDB's per-request atomicity rely on them
# (``moto_is_atomic`` below checks it is in place), and so do tests racing S3 deletes against
# copies and uploads (the dataset garbage collector's).
install_moto_fixes()


def _share_botocore_loader() -> None:
    """One botocore data loader for the whole test process.

    Every boto3 session builds its own loader and parses the JSON service models and
    ``endpoints.json`` again (about 0.1 s per client); the ``aws`` fixture makes fresh clients
    for every test, so that parsing was most of a test's setup. The files never change while
    the suite runs, and a loader only caches what it read, so sharing one is safe.
    """
    import functools

    import botocore.loaders
    import botocore.session

    if not isinstance(botocore.session.create_loader, functools._lru_cache_wrapper):
        botocore.session.create_loader = functools.lru_cache(maxsize=None)(
            botocore.loaders.create_loader
        )


_share_botocore_loader()


# Tests (or whole modules, whose expensive module fixture is the cost) that took about 20 s or
# more in a ``make test``-like run (coverage on, --durations=0, 2 workers, load 4-5; 2026-12-02
# 12:12 UTC): marked ``slow``. ``make test`` runs them all; ``make
# test-fast`` leaves them and the ``e2e`` stack tests out for a quick loop while working.
# ``tests/unit/test_suite_fixtures.py`` fails when an entry names no test.
SLOW_TESTS = (
    "tests/integration/test_local_diskitems.py::"
    "test_outcomes_stored_in_sqlite_retain_no_memory_per_outcome",
    "tests/integration/test_ab_segments.py::"
    "test_wide_batches_stay_within_dynamodb_limits_and_segment_moments_are_exact",
    "tests/integration/test_ab_segments.py::test_a_regression_in_one_segment_is_flagged_over_http",
    "tests/integration/test_invocation_costs.py::"
    "test_an_outcome_batch_of_1000_with_three_dimensions_stays_within_the_write_budget",
    "tests/integration/test_dv_lifecycle.py::"
    "test_garbage_collection_racing_with_uploads_never_deletes_a_referenced_object",
    "tests/client/test_local_assignment.py::"
    "test_client_and_route_agree_on_100000_users_with_layers_a_holdout_and_targeting",
    "tests/client/test_local_assignment.py::"
    "test_client_and_route_agree_on_100000_users_across_ramp_pause_resume_and_rollback",
    "tests/integration/test_ab_monitor.py::"
    "test_a_tick_fans_the_fleet_out_25_per_message_and_checks_every_experiment",
    "tests/unit/test_ab_judge.py::test_a_latency_aa_is_not_rolled_back_by_the_histogram_test",
    "tests/unit/test_ab_judge.py::"
    "test_aa_canary_false_rollbacks_over_60_checks_are_at_most_one_percent",
    "tests/unit/test_ab_phases.py::"
    "test_a_full_history_refuses_pauses_and_still_concludes_within_the_item_limit",
    "tests/integration/test_local_motofix.py::"
    "test_memory_per_thousand_outcomes_stays_constant_as_outcomes_accumulate",
    "tests/unit/test_ex_jit_cache.py::"
    "test_a_second_process_seeded_with_the_built_cache_does_not_recompile",
    "tests/unit/test_ex_jit_cache.py::test_the_cached_output_builder_computes_what_shaps_does",
    "tests/unit/test_ex_correctness.py::"
    "test_hist_gradient_boosting_goes_through_tree_shap_equal_to_shap",
)
SLOW_MODULES = (
    "tests/integration/test_packaging.py",
    "tests/client/test_packaging.py",
    "tests/security/test_bounded_probe.py",
    "tests/security/test_bounded_rows.py",
)


# Tests run with coverage's tracer paused, listed with the reason in ``tests/untraced_tests.txt``:
# in the test's thread and in the threads it starts, until the test ends (a thread started in it
# that outlives it, such as a keep-alive connection's handler in a module's local stack, is
# traced again from its first call after the test; threads running before it keep their tracer).
# Tracing made the code they run (numpy, scipy, moto, shap, our loops) 1.5-3x slower. What the
# report can lose, and how to check it: ``tests/helpers/coverage_audit.py``. ``SYNAPSE_TRACE_ALL=1``
# traces them (``make coverage-audit``). ``tests/unit/test_suite_fixtures.py`` fails when an
# entry names no test.
UNTRACED_TESTS = tuple(
    line
    for line in (Path(__file__).with_name("untraced_tests.txt")).read_text("utf-8").splitlines()
    if line and not line.startswith("#")
)


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Marks what :data:`SLOW_TESTS` and :data:`SLOW_MODULES` name ``slow`` and what
    :data:`UNTRACED_TESTS` names ``untraced``; the longest modules go first
    (:func:`longest_modules_first`)."""
    trace_all = os.environ.get("SYNAPSE_TRACE_ALL") == "1"
    for item in items:
        test = item.nodeid.split("[", 1)[0]
        if test in SLOW_TESTS or test.split("::", 1)[0] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        if test in UNTRACED_TESTS and not trace_all:
            item.add_marker(pytest.mark.untraced)
    items[:] = longest_modules_first(items)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: Any) -> Iterator[None]:
    """Runs a test marked ``untraced`` with coverage paused (:data:`UNTRACED_TESTS`)."""
    if item.get_closest_marker("untraced") is None:
        yield
        return
    from tests.helpers.tracing import untraced_test

    with untraced_test():
        yield


# The modules that took longest in a ``make test`` run (a clean clone's ``.ci/run`` with
# ``PYTEST_ADDOPTS=--durations=0``, summed per module, 2 workers, quiet machine, 2026-12-02 17:14
# UTC), longest first: ``make test`` starts them first, so no long module starts near the end.
LONGEST_MODULES = (
    "tests/reliability/test_api_fuzz.py",  # 70 s
    "tests/integration/test_local_motofix.py",  # 32 s
    "tests/e2e/test_demo_smoke.py",  # 29 s
    "tests/client/test_local_assignment.py",  # 28 s
    "tests/unit/test_ex_jit_cache.py",  # 27 s
    "tests/e2e/test_console.py",  # 27 s
    "tests/unit/test_dv_records.py",  # 26 s
    "tests/integration/test_ab_segments.py",  # 25 s
    "tests/client/test_data.py",  # 24 s
    "tests/integration/test_invocation_costs.py",  # 24 s
    # 9 s with the machine's build cache (dependencies zipped, template linted before); 55 s
    # on a machine's first run (pip install 25 s, zip 15 s, cfn-lint 12 s).
    "tests/integration/test_packaging.py",
    "tests/security/test_access_matrix.py",  # 22 s
    "tests/integration/test_dv_lifecycle.py",  # 21 s
    "tests/integration/test_ab_cuped_join.py",  # 18 s
    "tests/integration/test_ab_explain_guardrails.py",  # 17 s
    "tests/e2e/test_local_persistence.py",  # 17 s
    "tests/integration/test_ab_layers.py",  # 17 s
    "tests/unit/test_ex_budget.py",  # 17 s
    "tests/security/test_bounded_probe.py",  # 16 s
    "tests/client/test_cli.py",  # 15 s
    "tests/integration/test_dv_concurrency.py",  # 14 s
)


def _module_of(item: Any) -> str:
    return str(item.nodeid.split("::", 1)[0])


def longest_modules_first(items: list[Any]) -> list[Any]:
    """The modules of :data:`LONGEST_MODULES` first, in that order, then every other module,
    most tests first; each module's tests keep their order.

    ``make test`` hands out whole modules (``--dist loadfile``) in this order
    (``--no-loadscope-reorder``). pytest-xdist's own order (most tests first) started the
    85 s numba module (7 tests) among the last, so one worker ran it alone at the end.
    """
    rank = {module: index for index, module in enumerate(LONGEST_MODULES)}
    counts: dict[str, int] = {}
    for item in items:
        counts[_module_of(item)] = counts.get(_module_of(item), 0) + 1
    order = sorted(counts, key=lambda module: (rank.get(module, len(rank)), -counts[module]))
    position = {module: index for index, module in enumerate(order)}
    return sorted(items, key=lambda item: position[_module_of(item)])


def moto_is_atomic() -> bool:
    """True when moto applies each DynamoDB request atomically (``synapse_local.motofix``)."""
    from moto.dynamodb.responses import DynamoHandler

    return getattr(DynamoHandler.call_action, "_serialized", False)


# The empty DynamoDB tables ``create_all_tables`` made the first time in this process, by account,
# region and table names (moto's Table objects, deep-copied before anything was written).
_TABLE_TEMPLATES: dict[tuple[str, str, tuple[str, ...]], dict[str, Any]] = {}


def _tables_from_template() -> list[str]:
    """``chalicelib.domains.create_all_tables`` for a fresh moto account: the first call in a
    process creates the tables through the API (as the local stack does) and keeps a copy of
    moto's empty tables; later calls put a copy of that copy in place. Creating 24 tables through
    boto3 and moto was most of every ``aws`` fixture's setup (0.3-0.8 s); a copy takes 2 ms.
    ``tests/unit/test_suite_fixtures.py`` checks a copied table describes and behaves exactly as a
    created one."""
    import copy

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    from chalicelib.core.config import region
    from chalicelib.domains import all_table_models, create_all_tables

    names = tuple(model.Meta.table_name for model in all_table_models())
    key = (DEFAULT_ACCOUNT_ID, region(), names)
    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][region()]
    template = _TABLE_TEMPLATES.get(key)
    if template is None or set(names) & set(backend.tables):
        created = create_all_tables()
        if template is None:
            _TABLE_TEMPLATES[key] = copy.deepcopy({name: backend.tables[name] for name in created})
        return created
    backend.tables.update(copy.deepcopy(template))
    return list(names)


# What ``synapse_local.bootstrap`` made the first time in this process, by account, region,
# settings, S3 events queue and table names: its ``Resources`` and copies of moto's buckets,
# queues and event buses.
_BOOTSTRAPS: dict[tuple[Any, ...], tuple[Any, dict[str, Any]]] = {}


def _moto_backends() -> dict[str, Any]:
    """moto's S3, SQS and EventBridge backends of the default account in the configured region."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.events.models import events_backends
    from moto.s3.models import s3_backends
    from moto.sqs.models import sqs_backends

    from chalicelib.core.config import region

    return {
        "s3": s3_backends[DEFAULT_ACCOUNT_ID]["aws"],
        "sqs": sqs_backends[DEFAULT_ACCOUNT_ID][region()],
        "events": events_backends[DEFAULT_ACCOUNT_ID][region()],
    }


def _copied(resources: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``{"buckets", "queues", "buses"}`` (moto's objects); each copied queue gets
    a lock of its own instead of a copy of the original's, which cannot be copied."""
    import copy
    import threading

    memo: dict[int, Any] = {
        id(queue._messages_lock): threading.Condition() for queue in resources["queues"].values()
    }
    return copy.deepcopy(resources, memo)


def _restore(resources: dict[str, Any]) -> None:
    """Puts a copy of ``resources`` (see :func:`_copied`) into this account's empty backends."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backends, copies = _moto_backends(), _copied(resources)
    backends["s3"].buckets.update(copies["buckets"])
    for name in copies["buckets"]:
        s3_backends.bucket_accounts[name] = (backends["s3"].partition, DEFAULT_ACCOUNT_ID)
    backends["sqs"].queues.update(copies["queues"])
    backends["events"].event_buses.update(copies["buses"])


@contextmanager
def bootstrapped_aws() -> Iterator[Any]:
    """A fresh moto account with every resource ``synapse_local.bootstrap`` makes.

    The first call in a process (for an account, region, settings and tables) runs the bootstrap
    through boto3, as the local stack does, its tables copied from this process's template (see
    :func:`_tables_from_template`), and keeps a copy of the buckets, queues and event buses it
    made; later calls put a copy of that copy in place (2 ms instead of 60-180 ms, most of it
    making the S3, SQS and EventBridge clients a test may never use). A copy keeps the creation
    times of the first bootstrap's resources (no test reads them).
    ``tests/unit/test_suite_fixtures.py`` checks the copies describe and behave as made ones.
    """
    import copy
    from unittest import mock

    from moto.core import DEFAULT_ACCOUNT_ID

    from chalicelib.core.config import get_settings, region
    from chalicelib.domains import all_table_models
    from synapse_local import bootstrap as bootstrap_module

    tables = tuple(model.Meta.table_name for model in all_table_models())
    events_queue = bootstrap_module.s3_events_queue_name()
    key = (DEFAULT_ACCOUNT_ID, region(), get_settings(), events_queue, tables)
    with mock_aws():
        kept = _BOOTSTRAPS.get(key)
        backends = _moto_backends()
        if kept is None or backends["s3"].buckets or backends["sqs"].queues:
            with mock.patch.object(bootstrap_module, "create_all_tables", _tables_from_template):
                resources = bootstrap_module.bootstrap()
            if kept is None:
                made = {
                    "buckets": backends["s3"].buckets,
                    "queues": backends["sqs"].queues,
                    "buses": backends["events"].event_buses,
                }
                _BOOTSTRAPS[key] = (resources, _copied(made))
        else:
            resources = copy.deepcopy(kept[0])  # its lists are a test's own, too
            _tables_from_template()
            _restore(kept[1])
        yield resources


@pytest.fixture
def aws() -> Iterator[Any]:
    """A fresh moto AWS with every table, bucket, queue and the event bus created."""
    reset_all()
    aws_clients.reset_clients()
    with bootstrapped_aws() as resources:
        yield resources
    reset_all()
    aws_clients.reset_clients()


@pytest.fixture
def atomic_dynamodb(aws: Any) -> Any:
    """The ``aws`` fixture, for tests of concurrent writes: moto applies each DynamoDB request
    atomically, as DynamoDB does (``synapse_local.motofix``, installed above), so threads never
    interleave inside one request and the app's own conditions are what the test exercises."""
    assert moto_is_atomic(), "synapse_local.motofix.install() did not run"
    return aws


@pytest.fixture(scope="module")
def module_aws() -> Iterator[Any]:
    """One moto AWS with every resource for a whole module (tests create their own resources
    with unique names and never rely on an empty account)."""
    from synapse_local.stack import point_tables_at

    reset_all()
    aws_clients.reset_clients()
    point_tables_at(None)
    with bootstrapped_aws() as resources:
        yield resources
    reset_all()
    aws_clients.reset_clients()
    point_tables_at(None)


@dataclass
class Tokens:
    """A token per role (and one with a group) for HTTP tests."""

    admin: str
    writer: str
    reader: str
    other_writer: str

    @staticmethod
    def header(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def make_tokens() -> Tokens:
    """API keys for an admin, a writer (group ``ml``), a reader (group ``ml``), another writer
    (group ``other``), created in the current AWS."""
    from chalicelib.auth.service import get_auth_service

    service = get_auth_service()
    return Tokens(
        admin=service.create_key("admin", ["admin"]).token,
        writer=service.create_key("alice", ["writer"], ["ml"]).token,
        reader=service.create_key("rita", ["reader"], ["ml"]).token,
        other_writer=service.create_key("bob", ["writer"], ["other"]).token,
    )


@pytest.fixture
def tokens(aws: Any) -> Tokens:
    """API keys for an admin, a writer (group ``ml``), a reader (group ``ml``), another writer."""
    return make_tokens()


@pytest.fixture(scope="module")
def module_tokens(module_aws: Any) -> Tokens:
    """Tokens per role in the module's AWS."""
    return make_tokens()


@pytest.fixture
def bus(aws: Any) -> Any:
    """A ``RecordingEventBus`` holding every event the app publishes in this test (services
    built after this fixture use it)."""
    from chalicelib.core.events import RecordingEventBus, get_event_bus

    recording = RecordingEventBus()
    get_event_bus.override(recording)
    return recording


@pytest.fixture
def client(aws: Any) -> Iterator[Any]:
    """Chalice's in-process test client over the real app."""
    from chalice.test import Client

    import app as app_module

    with Client(app_module.app, stage_name="local") as test_client:
        yield test_client


class Http:
    """Small JSON helper over the Chalice test client."""

    def __init__(self, client: Any, token: str | None) -> None:
        self.client = client
        self.token = token

    def _headers(self, token: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        chosen = self.token if token is None else token
        if chosen:
            headers["Authorization"] = f"Bearer {chosen}"
        return headers

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        import json

        raw = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
        response = (
            getattr(self.client.http, method.lower())(path, headers=self._headers(token), body=raw)
            if method.upper() not in {"GET", "DELETE"}
            else getattr(self.client.http, method.lower())(path, headers=self._headers(token))
        )
        response.data = json.loads(response.body) if response.body else None
        return response


@pytest.fixture
def http(client: Any, tokens: Tokens) -> Http:
    """HTTP helper authenticated as the writer by default (pass ``token=`` to switch)."""
    return Http(client, tokens.writer)


@pytest.fixture(scope="module")
def module_http(module_aws: Any, module_tokens: Tokens) -> Iterator[Http]:
    """The Chalice test client over the app in the module's AWS, as the writer by default."""
    from chalice.test import Client

    import app as app_module

    with Client(app_module.app, stage_name="local") as client:
        yield Http(client, module_tokens.writer)
