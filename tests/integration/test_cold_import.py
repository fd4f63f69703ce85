"""Importing ``app.py`` (every Lambda cold start) must not pull in the heavy explainer stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("shap", "lime", "sklearn", "numba", "pandas", "skimage")

PROBE = """
import json, sys
import app
print(json.dumps({"app": type(app.app).__name__, "modules": sorted(sys.modules)}))
"""


def test_importing_app_in_a_fresh_interpreter_loads_no_heavy_library() -> None:
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
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["app"] == "Chalice"
    loaded = {name.split(".")[0] for name in found["modules"]}
    assert "chalicelib" in loaded
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
