"""Bounded load on the local stack over loopback HTTP: several threads route requests, post
outcomes (re-posting some request ids, as retrying clients do), create dataset versions inline
and through presigned S3 uploads (ingested by the S3 event pump), and register model versions,
all at once for ``SYNAPSE_LOAD_SECONDS`` (default 4).

Afterwards: no request failed except by design, outcome counts equal the distinct request ids,
sticky assignments held, and dataset and model version numbers are consecutive from 1.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.conftest import moto_is_atomic
from tests.helpers.models import skops_artifact
from tests.reliability.seeding import fifty_fifty
from tests.reliability.stack import Api, running_stack

pytestmark = pytest.mark.e2e

SECONDS = float(os.environ.get("SYNAPSE_LOAD_SECONDS", "4"))
USERS = [f"user-{i}" for i in range(25)]


@dataclass
class Record:
    """What the workers did, for the checks afterwards (guarded by ``lock``)."""

    unexpected: list[str] = field(default_factory=list)
    assignments: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    outcomes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    outcome_posts: int = 0
    inline_created: int = 0
    inline_duplicates: int = 0
    uploads: int = 0
    registered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, what: str, response: requests.Response) -> None:
        with self.lock:
            self.unexpected.append(f"{what}: {response.status_code} {response.text[:300]}")


@dataclass
class Setup:
    api: Api
    experiment_id: str
    variants: list[str]
    dataset_id: str
    model_id: str
    artifact_b64: str


def _ok(api: Api, method: str, path: str, body: Any = None, status: int = 201) -> Any:
    response = api.call(method, path, body)
    assert response.status_code == status, (path, response.status_code, response.text)
    return response.json() if response.content else None


def _setup(api: Api) -> Setup:
    artifact = skops_artifact()
    model_id = _ok(api, "POST", "/models", {"name": f"load-{uuid.uuid4().hex[:6]}"})["model_id"]
    version_body = {"artifact_base64": artifact, "task": "classification", "feature_names": FEAT}
    for _ in range(2):
        _ok(api, "POST", f"/models/{model_id}/versions", version_body)
    variants = fifty_fifty(model_id, 2)
    experiment = _ok(api, "POST", "/experiments", {"name": "load", "variants": variants})
    _ok(api, "POST", f"/experiments/{experiment['experiment_id']}/start", status=200)
    dataset = _ok(
        api, "POST", "/datasets", {"name": f"load-{uuid.uuid4().hex[:6]}", "format": "csv"}
    )
    return Setup(
        api,
        experiment["experiment_id"],
        ["control", "treatment"],
        dataset["dataset_id"],
        model_id,
        artifact,
    )


FEAT = ["f0", "f1", "f2"]


def _router(setup: Setup, record: Record, worker: int) -> Callable[[int], None]:
    api = setup.api.fork()
    path = f"/experiments/{setup.experiment_id}"
    posted: list[tuple[str, str]] = []

    def step(i: int) -> None:
        user = USERS[(worker * 7 + i) % len(USERS)]
        request_id = f"r-{worker}-{i}"
        routed = api.call("POST", f"{path}/route", {"request_id": request_id, "user_id": user})
        if routed.status_code != 200:
            return record.fail("route", routed)
        variant = routed.json()["variant_id"]
        with record.lock:
            record.assignments[user].add(variant)
        # Every third post repeats an earlier request id: a client retry that must count once.
        if i % 3 == 2 and posted:
            request_id, variant = posted[i % len(posted)]
        outcome = {
            "variant_id": variant,
            "request_id": request_id,
            "success": i % 5 != 0,
            "latency_ms": float(i % 50),
            "converted": i % 4 == 0,
        }
        response = api.call("POST", f"{path}/outcomes", outcome)
        if response.status_code != 200:
            return record.fail("outcome", response)
        posted.append((request_id, variant))
        with record.lock:
            record.outcomes[variant].add(request_id)
            record.outcome_posts += 1

    return step


def _inline_versions(setup: Setup, record: Record, worker: int) -> Callable[[int], None]:
    api = setup.api.fork()
    path = f"/datasets/{setup.dataset_id}/versions"

    def step(i: int) -> None:
        # Every fourth request re-sends the previous content: the same version, 200.
        n = i - 1 if i % 4 == 3 else i
        body = {"data": f"a,b\n{worker},{n}\n"}
        response = api.call("POST", path, body)
        if response.status_code not in (200, 201):
            return record.fail("dataset version", response)
        with record.lock:
            if response.status_code == 201:
                record.inline_created += 1
            else:
                record.inline_duplicates += 1

    return step


def _uploads(setup: Setup, record: Record, worker: int) -> Callable[[int], None]:
    api = setup.api.fork()
    path = f"/datasets/{setup.dataset_id}/uploads"

    def step(i: int) -> None:
        response = api.call("POST", path, {"filename": f"part-{worker}-{i}.csv"})
        if response.status_code != 201:
            return record.fail("upload url", response)
        put = requests.put(
            response.json()["url"], data=f"a,b\n{100000 + i},{worker}\n".encode(), timeout=30
        )
        if put.status_code != 200:
            return record.fail("presigned put", put)
        with record.lock:
            record.uploads += 1

    return step


def _registrations(setup: Setup, record: Record, worker: int) -> Callable[[int], None]:
    api = setup.api.fork()
    path = f"/models/{setup.model_id}/versions"
    body = {"artifact_base64": setup.artifact_b64, "task": "classification", "feature_names": FEAT}

    def step(i: int) -> None:
        response = api.call("POST", path, body)
        if response.status_code != 201:
            return record.fail("model version", response)
        with record.lock:
            record.registered += 1

    return step


def _run(workers: list[Callable[[int], None]], seconds: float) -> None:
    stop = time.monotonic() + seconds
    errors: list[BaseException] = []

    def loop(step: Callable[[int], None]) -> None:
        i = 0
        try:
            while time.monotonic() < stop:
                step(i)
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@pytest.fixture(scope="module")
def loaded() -> Iterator[tuple[Setup, Record]]:
    assert moto_is_atomic()  # DynamoDB applies each request atomically; so must moto here
    with running_stack(run_schedules=False, pump_options={"wait_seconds": 1}) as stack:
        api = Api(stack.url, stack.admin_token, requests.Session())
        setup = _setup(api)
        record = Record()
        workers = [
            _router(setup, record, 0),
            _router(setup, record, 1),
            _router(setup, record, 2),
            _inline_versions(setup, record, 0),
            _inline_versions(setup, record, 1),
            _uploads(setup, record, 0),
            _registrations(setup, record, 0),
        ]
        _run(workers, SECONDS)
        _wait_for_ingest(setup, record)
        yield setup, record


def _dataset_versions(setup: Setup) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = _ok(
            setup.api, "GET", f"/datasets/{setup.dataset_id}/versions?limit=100&offset={offset}",
            status=200,
        )  # fmt: skip
        found += page["versions"]
        offset = page["next_offset"]
    return found


def _wait_for_ingest(setup: Setup, record: Record, limit_seconds: float = 60) -> None:
    """Waits (bounded) until the pump has turned every upload into a version."""
    expected = record.inline_created + record.uploads
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        if len(_dataset_versions(setup)) >= expected:
            return
        time.sleep(0.5)


def test_no_request_failed(loaded: tuple[Setup, Record]) -> None:
    _, record = loaded
    assert record.unexpected == []
    assert record.outcome_posts > 0 and record.inline_created > 0
    assert record.uploads > 0 and record.registered > 0


def test_outcome_counts_equal_distinct_request_ids(loaded: tuple[Setup, Record]) -> None:
    setup, record = loaded
    metrics = _ok(setup.api, "GET", f"/experiments/{setup.experiment_id}/metrics", status=200)
    counted = {v: m["request_count"] for v, m in metrics["variants"].items()}
    expected = {v: len(record.outcomes.get(v, set())) for v in setup.variants}
    assert counted == expected
    assert sum(expected.values()) < record.outcome_posts  # duplicates were sent and not counted


def test_sticky_assignment_held_under_concurrency(loaded: tuple[Setup, Record]) -> None:
    _, record = loaded
    assert {user: len(v) for user, v in record.assignments.items() if len(v) != 1} == {}


def test_dataset_versions_are_consecutive_and_complete(loaded: tuple[Setup, Record]) -> None:
    setup, record = loaded
    versions = _dataset_versions(setup)
    numbers = sorted(v["version_number"] for v in versions)
    assert numbers == list(range(1, len(numbers) + 1))
    assert len(versions) == record.inline_created + record.uploads
    assert len({v["sha256"] for v in versions}) == len(versions)
    sources = Counter(v["source_key"] is not None for v in versions)
    assert sources[True] == record.uploads


def test_model_versions_are_consecutive(loaded: tuple[Setup, Record]) -> None:
    setup, record = loaded
    listed = _ok(setup.api, "GET", f"/models/{setup.model_id}/versions", status=200)
    numbers = [v["version"] for v in listed["versions"]]
    assert sorted(numbers) == list(range(1, record.registered + 3))
