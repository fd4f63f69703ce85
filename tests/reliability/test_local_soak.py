"""A bounded soak of the local stack as ``make run`` runs it (state kept on disk, over loopback
HTTP with a keep-alive session): memory retained per 1,000 operations stays the same as they
accumulate, for outcomes, dataset creations and inline dataset versions.

Memory is counted in bytes with tracemalloc over the whole process (moto's server, the app and
the persistence snapshots all run in it), never timed. ``SYNAPSE_SOAK_OUTCOMES`` sets the length
(``make fuzz``: 20,000; ``make test`` skips the soak and holds outcomes to the same bound in
``tests/integration/test_local_motofix.py``); issue 17 saw each 1,000 outcomes retain more than
the one before (17 MB, then 10 MB more for every further 1,000). ``bench/bench_local_stack.py``
reports the RSS of a real ``make run`` process up to 200,000 outcomes.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers.models import skops_artifact
from tests.reliability.seeding import fifty_fifty
from tests.reliability.stack import Api, running_stack

SOAK = os.environ.get("SYNAPSE_SOAK_OUTCOMES", "")
OUTCOMES = max(3000, int(SOAK or "0"))
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not SOAK, reason="a soak: make fuzz sets SYNAPSE_SOAK_OUTCOMES"),
]

BATCH = 200
SLICE = 1000
# The dedup records live in SQLite (synapse_local.diskitems): 1,000 outcomes retain bounded
# caches' growth only (measured 16-390 KB; in moto's dict they kept about 1.5 MB).
MAX_RETAINED_PER_THOUSAND = 768 * 1024
SLACK = 512 * 1024


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    import requests

    state = tmp_path_factory.mktemp("soak-state")
    with running_stack(state_dir=state, flush_seconds=1.0, run_schedules=False) as stack:
        yield Api(stack.url, stack.admin_token, requests.Session())


def _retained_per_slice(
    rounds: int, size: int, operation: Callable[[int], None], warm: int
) -> list[int]:
    """Bytes still allocated after each of ``rounds`` slices of ``size`` operations."""
    for number in range(warm):
        operation(-1 - number)
    found = []
    tracemalloc.start()
    try:
        number = 0
        for _ in range(rounds):
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(size):
                operation(number)
                number += 1
            gc.collect()
            found.append(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()
    return found


def _assert_flat(retained: list[int], limit: int, slack: int) -> None:
    first, rest = retained[0], retained[1:]
    assert max(retained) <= limit, retained
    # The late slices retain what the first did (a leak makes each retain more than the last).
    assert max(rest[-2:]) <= first * 1.5 + slack, retained


def _experiment(api: Api) -> str:
    model = api.call("POST", "/models", {"name": f"soak-{uuid.uuid4().hex[:8]}"}).json()
    artifact = skops_artifact()
    body = {"artifact_base64": artifact, "task": "classification",
            "feature_names": ["f0", "f1", "f2"]}  # fmt: skip
    for _ in range(2):
        assert api.call("POST", f"/models/{model['model_id']}/versions", body).status_code == 201
    created = api.call("POST", "/experiments", {"name": "soak",
                       "variants": fifty_fifty(model["model_id"], 2)}).json()  # fmt: skip
    assert api.call("POST", f"/experiments/{created['experiment_id']}/start").status_code == 200
    return str(created["experiment_id"])


def test_memory_per_thousand_outcomes_stays_flat_over_a_soak(api: Api) -> None:
    experiment_id = _experiment(api)
    path = f"/experiments/{experiment_id}/outcomes"
    posted: list[int] = []

    def post_batch(number: int) -> None:
        outcomes = [
            {"variant_id": ("control", "treatment")[i % 2], "request_id": f"r{number}-{i}",
             "success": i % 7 != 0, "latency_ms": 5.0 + (number * 3 + i) % 300}
            for i in range(BATCH)
        ]  # fmt: skip
        answer = api.call("POST", path, {"outcomes": outcomes})
        assert answer.status_code == 200 and answer.json()["accepted"] == BATCH, answer.text
        posted.append(BATCH)

    retained = _retained_per_slice(OUTCOMES // SLICE, SLICE // BATCH, post_batch, warm=10)

    metrics = api.call("GET", f"/experiments/{experiment_id}/metrics").json()
    counted = sum(variant["request_count"] for variant in metrics["variants"].values())
    assert counted == sum(posted)
    _assert_flat(retained, MAX_RETAINED_PER_THOUSAND, SLACK)


def test_memory_per_thousand_datasets_and_versions_stays_flat(api: Api) -> None:
    dataset = api.call("POST", "/datasets", {"name": f"soak-{uuid.uuid4().hex[:8]}"}).json()

    def create(number: int) -> None:
        name = f"soak-{uuid.uuid4().hex[:10]}"
        assert api.call("POST", "/datasets", {"name": name}).status_code == 201

    def version(number: int) -> None:
        rows = "".join(f"{number},{i},{(number + i) % 13}\n" for i in range(10))
        body: dict[str, Any] = {"data": f"id,x,y\n{rows}"}
        answer = api.call("POST", f"/datasets/{dataset['dataset_id']}/versions", body)
        assert answer.status_code == 201, answer.text

    rounds = max(3, OUTCOMES // 10_000 + 2)
    # What 1,000 of them would retain (slices of 100 keep the soak bounded).
    creations = [kept * 10 for kept in _retained_per_slice(rounds, 100, create, warm=20)]
    versions = [kept * 10 for kept in _retained_per_slice(rounds, 100, version, warm=20)]

    _assert_flat(creations, 16 * 1024 * 1024, 10 * SLACK)
    _assert_flat(versions, 32 * 1024 * 1024, 10 * SLACK)
