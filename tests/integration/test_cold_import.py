"""Importing ``app.py`` (every Lambda cold start) must not pull in the heavy explainer stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("shap", "lime", "sklearn", "numba", "pandas", "skimage")

PROBE = """
import json, sys
import app
from pydantic import BaseModel

def subclasses(model):
    for found in model.__subclasses__():
        yield found
        yield from subclasses(found)

schemas = [m for m in set(subclasses(BaseModel)) if m.__module__.startswith("chalicelib.")]
built = sorted(m.__qualname__ for m in schemas if m.__pydantic_complete__)
print(json.dumps({"app": type(app.app).__name__, "modules": sorted(sys.modules),
                  "schemas": len(schemas), "built": built}))
"""


def _import_app() -> dict[str, Any]:
    """What a fresh interpreter holds after ``import app``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_", "PYTEST_"))}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def test_importing_app_in_a_fresh_interpreter_loads_no_heavy_library() -> None:
    found = _import_app()
    assert found["app"] == "Chalice"
    loaded = {name.split(".")[0] for name in found["modules"]}
    assert "chalicelib" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_importing_app_builds_no_schema_and_loads_no_numpy() -> None:
    """A cold start pays only for what its first request uses: the ~200 request and response
    schemas are declared but not built (``chalicelib.core.schema.Schema``'s ``defer_build``), and
    numpy (booster files only) is not imported."""
    found = _import_app()
    assert found["schemas"] > 100
    assert found["built"] == []
    assert "numpy" not in {name.split(".")[0] for name in found["modules"]}


CONCURRENT_FIRST_USE = """
import json, threading
import app
from pydantic import BaseModel, ValidationError

def subclasses(model):
    for found in model.__subclasses__():
        yield found
        yield from subclasses(found)

schemas = sorted(
    (m for m in set(subclasses(BaseModel))
     if m.__module__.startswith("chalicelib.") and not m.__pydantic_complete__
     and any(field.is_required() for field in m.model_fields.values())),
    key=lambda m: (m.__module__, m.__qualname__),
)
start = threading.Barrier(8)
wrong = []

def first_use():
    start.wait()
    for model in schemas:
        try:
            model.model_validate({})
        except ValidationError:
            continue
        wrong.append(model.__qualname__)

threads = [threading.Thread(target=first_use) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"schemas": len(schemas), "wrong": sorted(set(wrong))}))
"""


def test_schemas_built_by_concurrent_first_requests_validate_with_their_own_fields() -> None:
    """The local stack serves requests on threads, so a deferred schema can be built by two
    requests at once. pydantic (2.14, pinned) rebuilds under a lock; releases without it let a
    thread validate with the parent's validator while another rebuilt the class, so a body
    missing every required field passed. Eight threads use each schema for the first time
    together."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COV_", "PYTEST_"))}
    result = subprocess.run(
        [sys.executable, "-c", CONCURRENT_FIRST_USE],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["schemas"] > 50
    assert found["wrong"] == []
