"""The README's benchmark table is the one ``make bench`` wrote to ``bench/results.md``, from the
run the README dates: a figure edited by hand, or a table left behind by a newer run, fails."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def headline_table(text: str, after: str = "") -> list[str]:
    """The first markdown table whose header starts ``| figure | ours |`` (after ``after``)."""
    lines = text[text.index(after) :].splitlines() if after else text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| figure | ours |"))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def test_the_readme_table_is_the_last_runs_table() -> None:
    results = (REPO / "bench" / "results.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = headline_table(results)
    assert len(table) > 20
    assert headline_table(readme, "## Benchmarks") == table


def test_the_readme_names_the_runs_date_and_mode() -> None:
    results = (REPO / "bench" / "results.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"Measured (\S+ \S+) UTC .*`make bench( QUICK=1)?`", results)
    assert found, "results.md has no 'Measured <date> UTC … `make bench`' line"
    section = " ".join(readme[readme.index("## Benchmarks") :].split("| figure |")[0].split())
    assert f"{found.group(1)} UTC" in section
    assert ("quick mode" in section) == bool(found.group(2))
