"""The suite's own fixtures do what they say: the ``aws`` fixture's tables, copied from a template
made once per process, are the tables ``create_all_tables`` makes, and no test sees another's
items."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moto import mock_aws

from chalicelib.core import aws as aws_clients
from chalicelib.core.singleton import reset_all
from tests.conftest import (
    LONGEST_MODULES,
    SLOW_MODULES,
    SLOW_TESTS,
    UNTRACED_TESTS,
    bootstrapped_aws,
    longest_modules_first,
)


def _described() -> dict[str, Any]:
    client = aws_clients.client("dynamodb")
    found = {}
    for name in client.list_tables()["TableNames"]:
        table = client.describe_table(TableName=name)["Table"]
        table.pop("CreationDateTime")
        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        found[name] = (table, ttl)
    return found


def _fresh_account(build: Any, describe: Callable[[Any], Any] | None = None) -> Any:
    """What ``describe`` (default: the tables, :func:`_described`) finds in the account ``build``
    makes, given what ``build`` yields; the app's singletons and clients are reset around it."""
    reset_all()
    aws_clients.reset_clients()
    with build() as resources:
        described = describe(resources) if describe else _described()
    reset_all()
    aws_clients.reset_clients()
    return described


def test_tables_copied_from_the_template_describe_as_created_ones() -> None:
    from contextlib import contextmanager

    from chalicelib.domains import all_table_models, create_all_tables

    @contextmanager
    def created() -> Any:
        with mock_aws():
            names = create_all_tables()
            assert create_all_tables() == names  # a second call finds them all: idempotent
            yield

    by_api = _fresh_account(created)
    assert len(by_api) == len(all_table_models())
    expiring = {model.Meta.table_name for model in all_table_models() if model._ttl_attribute()}
    enabled = {name for name, (_, ttl) in by_api.items() if ttl["TimeToLiveStatus"] == "ENABLED"}
    assert expiring and enabled == expiring  # every TTL attribute declared, and only those
    assert any(table.get("GlobalSecondaryIndexes") for table, _ in by_api.values())
    for _ in range(2):  # the first may make the template, the second copies it
        assert _fresh_account(bootstrapped_aws) == by_api


def _resources_described_and_exercised() -> dict[str, Any]:
    """The account's buckets, notifications, queues (timestamps aside) and event buses, and where
    an object put under ``incoming/`` is announced: on the S3 events queue, then, after more
    receives than its redrive policy allows, on that queue's dead-letter queue."""
    from synapse_local.bootstrap import S3_EVENT_ATTEMPTS

    s3, sqs, events = (aws_clients.client(name) for name in ("s3", "sqs", "events"))
    buckets = sorted(bucket["Name"] for bucket in s3.list_buckets()["Buckets"])
    found: dict[str, Any] = {
        "buses": sorted(b["Name"] for b in events.list_event_buses()["EventBuses"])
    }
    for bucket in buckets:
        notified = s3.get_bucket_notification_configuration(Bucket=bucket)
        notified.pop("ResponseMetadata")
        for configuration in notified.get("QueueConfigurations", []):
            configuration.pop("Id")  # random, made when the configuration is put
        found[f"s3:{bucket}"] = notified
    urls = sorted(sqs.list_queues()["QueueUrls"])
    for url in urls:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        for stamp in ("CreatedTimestamp", "LastModifiedTimestamp"):
            attributes.pop(stamp)
        found[f"sqs:{url}"] = attributes
    s3.put_object(Bucket=buckets[0], Key="incoming/d/a.csv", Body=b"x\n1\n")

    def received(url: str) -> list[str]:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        bodies = [json.loads(message["Body"]) for message in got.get("Messages", [])]
        return sorted(
            body.get("Event") or body["Records"][0]["s3"]["object"]["key"] for body in bodies
        )

    events_url = next(url for url in urls if url.endswith("synapse-s3-events"))
    found["received"] = [received(events_url) for _ in range(S3_EVENT_ATTEMPTS + 1)]
    found["dead-lettered"] = received(f"{events_url}-dlq")
    return found


def test_buckets_queues_and_buses_copied_from_the_first_bootstrap_behave_as_made_ones() -> None:
    from contextlib import contextmanager

    from synapse_local.bootstrap import S3_EVENT_ATTEMPTS, bootstrap

    @contextmanager
    def made() -> Any:
        with mock_aws():
            yield bootstrap()

    def described(resources: Any) -> tuple[Any, dict[str, Any]]:
        return resources, _resources_described_and_exercised()

    by_api = _fresh_account(made, described)
    received = ["incoming%2Fd%2Fa.csv", "s3:TestEvent"]  # S3 URL-encodes keys in events
    assert by_api[1]["received"] == [received] * S3_EVENT_ATTEMPTS + [[]]
    assert by_api[1]["dead-lettered"] == received
    assert len([key for key in by_api[1] if key.startswith("sqs:")]) == 6
    for _ in range(2):  # the first may make the template, the second copies it
        assert _fresh_account(bootstrapped_aws, described) == by_api


def test_each_aws_fixture_starts_with_empty_tables_whatever_the_last_test_wrote() -> None:
    from chalicelib.auth.service import AuthService

    for _ in range(2):
        reset_all()
        aws_clients.reset_clients()
        with bootstrapped_aws():
            service = AuthService()
            assert service.list_keys() == []
            issued = service.create_key("alice", ["reader"])
            assert service.verify(issued.token).principal == "alice"
            assert [key.key_id for key in service.list_keys()] == [issued.key.key_id]


def test_every_test_marked_slow_exists() -> None:
    root = Path(__file__).resolve().parents[2]
    for module in (*SLOW_MODULES, *LONGEST_MODULES):
        assert (root / module).is_file(), module
    for test in (*SLOW_TESTS, *UNTRACED_TESTS):
        module, name = test.split("::")
        assert f"def {name}(" in (root / module).read_text(encoding="utf-8"), test


def test_the_longest_modules_start_first_and_every_module_keeps_its_tests_in_order() -> None:
    from types import SimpleNamespace

    longest, second = LONGEST_MODULES[:2]
    names = [
        "tests/unit/a.py::one", f"{second}::first", "tests/unit/b.py::one",
        "tests/unit/b.py::two[1]", f"{longest}::first", "tests/unit/a.py::two",
        f"{second}::second", "tests/unit/b.py::three", f"{longest}::second",
    ]  # fmt: skip
    items = [SimpleNamespace(nodeid=name) for name in names]

    ordered = [item.nodeid for item in longest_modules_first(items)]

    assert ordered == [
        f"{longest}::first", f"{longest}::second", f"{second}::first", f"{second}::second",
        "tests/unit/b.py::one", "tests/unit/b.py::two[1]", "tests/unit/b.py::three",
        "tests/unit/a.py::one", "tests/unit/a.py::two",
    ]  # fmt: skip


def test_make_test_hands_out_whole_modules_in_the_suites_order() -> None:
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text(encoding="utf-8")
    for target in ("test", "test-fast"):
        recipe = makefile.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
        assert "--dist loadfile --no-loadscope-reorder" in recipe, target


def test_property_tests_draw_the_same_examples_every_run_and_are_never_timed() -> None:
    """Hypothesis runs derandomized (the examples follow from each test's source, so a failure
    is seen on every run or on none), with no per-example deadline and without the ``too_slow``
    health check (generation time on a loaded machine): a test's own ``@settings`` inherit
    this unless they say otherwise."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    own = settings(max_examples=30)
    assert own.derandomize is True and own.deadline is None
    assert HealthCheck.too_slow in own.suppress_health_check
    drawn: list[list[int]] = []

    @own
    @given(st.lists(st.integers()))
    def draw(values: list[int]) -> None:
        drawn.append(values)

    draw()
    first, drawn[:] = list(drawn), []
    draw()
    assert drawn == first and len(first) == 30


def test_the_audit_names_exactly_the_lines_only_untraced_tests_cover() -> None:
    from tests.helpers.coverage_audit import lines_only_these_cover

    untraced = {"tests/a.py::test_slow", "tests/b.py::test_sim"}
    by_line = {
        ("m.py", 1): {"tests/a.py::test_slow|run"},  # only an untraced test
        ("m.py", 2): {"tests/a.py::test_slow[7]|run", "tests/b.py::test_sim|setup"},  # only both
        ("m.py", 3): {"tests/a.py::test_slow|run", "tests/c.py::test_fast|run"},  # also traced
        ("m.py", 4): {"", "tests/b.py::test_sim|run"},  # run at import: covered anyway
        ("m.py", 5): {"tests/c.py::test_fast|teardown"},
        ("m.py", 6): set(),  # measured, never run
    }
    assert lines_only_these_cover(by_line, untraced) == [("m.py", 1), ("m.py", 2)]


def test_the_proposal_keeps_every_line_covered_by_a_traced_test_longest_first(
    tmp_path: Path,
) -> None:
    from tests.helpers.coverage_audit import lines_only_these_cover, seconds_per_test, untraceable

    log = tmp_path / "durations.log"
    log.write_text(
        "3.00s call     tests/a.py::test_long[1]\n"
        "2.00s call     tests/a.py::test_long[2]\n"
        "0.50s setup    tests/a.py::test_long[1]\n"
        "4.00s call     tests/b.py::test_mid\n"
        "1.00s call     tests/c.py::test_short\n"
        "0.10s call     tests/d.py::test_tiny\n"
        "noise that is not a duration\n"
    )
    seconds = seconds_per_test(str(log))
    assert seconds == {
        "tests/a.py::test_long": 5.5, "tests/b.py::test_mid": 4.0,
        "tests/c.py::test_short": 1.0, "tests/d.py::test_tiny": 0.1,
    }  # fmt: skip
    by_line = {
        ("m.py", 1): {"tests/a.py::test_long[1]|run", "tests/b.py::test_mid|run"},
        ("m.py", 2): {"tests/b.py::test_mid|run", "tests/c.py::test_short|run"},
        ("m.py", 3): {"tests/c.py::test_short|run", "tests/d.py::test_tiny|run"},
        ("m.py", 4): {"", "tests/c.py::test_short|run"},  # run at import too
        ("m.py", 5): {"tests/e.py::test_old|run", "tests/c.py::test_short|run"},
        ("m.py", 6): set(),
    }
    # test_long goes first (line 1 keeps test_mid); then test_mid cannot (line 1 would have
    # no traced test left); test_short can (line 2: test_mid, line 3: test_tiny); test_tiny
    # is under the minimum. test_old is untraced already: line 5 counts test_short only.
    taken = untraceable(by_line, {"tests/e.py::test_old"}, seconds, 0.5)
    assert taken == ["tests/a.py::test_long"]
    assert untraceable(by_line, set(), seconds, 0.5) == [
        "tests/a.py::test_long", "tests/c.py::test_short",
    ]  # fmt: skip
    assert lines_only_these_cover(by_line, {*taken, "tests/e.py::test_old"}) == []


def test_each_aws_fixture_gets_resources_of_its_own() -> None:
    """A test that changes the ``Resources`` it was given changes nothing the next one gets."""
    for _ in range(2):  # the first may make the template, the second copies it
        reset_all()
        aws_clients.reset_clients()
        with bootstrapped_aws() as resources:
            assert "left-behind" not in resources.buckets
            resources.buckets.append("left-behind")
            resources.tables.clear()
    with bootstrapped_aws() as resources:
        assert "left-behind" not in resources.buckets and resources.tables
    reset_all()
    aws_clients.reset_clients()
