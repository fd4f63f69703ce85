"""``pip install .`` gives a working client and ``synapse`` command without the service's code."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out)],
        check=True, cwd=out, capture_output=True, text=True,
    )  # fmt: skip
    return next(out.glob("synapse_client-*.whl"))


def test_the_wheel_holds_the_client_and_the_console_script_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "synapse_client/_assignment.py" in names and "synapse_client/cli.py" in names
    assert not [n for n in names if n.startswith(("chalicelib", "synapse_local", "tests", "app"))]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "synapse = synapse_client.cli:run" in text


def test_pip_install_gives_a_synapse_command_that_imports_no_service_code(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    # A venv without its own pip (ensurepip took 10 of the test's 35 s); this pip installs the
    # wheel and its dependencies into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
         str(wheel)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr
    helped = subprocess.run([str(venv / "bin" / "synapse"), "--help"], capture_output=True,
                            text=True, cwd=tmp_path)  # fmt: skip
    assert helped.returncode == 0 and "Exit codes" in helped.stdout
    probe = ("import sys, synapse_client; from synapse_client.cli import main; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('chalicelib', 'boto3', 'pynamodb', 'numpy')))")  # fmt: skip
    imported = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True,
                              text=True, cwd=tmp_path)  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "[]"
