"""How long ``make test``'s pytest takes, on a quiet machine and with cores kept busy.

Not one of ``make bench``'s benchmarks (a run is the whole suite, 7-9 minutes on 2 cores): the
figure issue 13 asks for. Each run is ``make test``'s pytest command (coverage on) with
``--workers`` processes, while ``--busy`` processes spin (``while True: pass``) for its whole
duration: the reproducible stand-in for "a loaded machine". Prints one row per run.

Usage: ``.venv/bin/python bench/suite_time.py [--workers 4] [--busy 0 1] [--repeats 1]`` from a
clean clone (``git clone . /tmp/x``, with a ``.venv``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COVERAGE = [f"--cov={name}" for name in ("chalicelib", "synapse_local", "synapse_client", "app")]


def spin() -> None:
    """Keeps one core busy until killed."""
    while True:
        pass


def run(workers: int, busy: int) -> tuple[float, int, str]:
    """One ``make test``-like pytest run beside ``busy`` spinning processes: its wall seconds,
    exit status and pytest's summary line."""
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
    for spinner in spinners:
        spinner.start()
    command = [sys.executable, "-m", "pytest", "-n", str(workers), "--dist", "loadfile"]
    command += ["--no-loadscope-reorder", *COVERAGE, "--cov-fail-under=85"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    finally:
        for spinner in spinners:
            spinner.kill()
    seconds = time.monotonic() - started
    summary = re.findall(r"^=*\s*(\d+ passed.*?)\s*=*$", done.stdout, re.MULTILINE)
    return seconds, done.returncode, summary[-1] if summary else done.stdout[-300:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[4])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; make test's pytest, coverage on")
    print(f"{'workers':>7} {'busy':>4} {'wall s':>7} {'rc':>3}  summary")
    failed = 0
    for _ in range(args.repeats):
        for workers in args.workers:
            for busy in args.busy:
                seconds, code, summary = run(workers, busy)
                failed |= code
                print(f"{workers:>7} {busy:>4} {seconds:>7.1f} {code:>3}  {summary}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
