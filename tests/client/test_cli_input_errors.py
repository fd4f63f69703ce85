"""Careless input to ``synapse`` (malformed JSON or YAML, a broken config file) is wrong usage:
exit code 2 and one line naming the problem, never a Python traceback with exit code 1 (which
the documented exit codes reserve for the API refusing a request). Nothing here reaches the API:
every case fails before a request is sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from synapse_client.cli import main


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("SYNAPSE_URL", "SYNAPSE_TOKEN", "SYNAPSE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def _usage_error(runner: CliRunner, args: list[str], says: str) -> None:
    result = runner.invoke(main, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert says in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: [unclosed\n variants: {", "not valid YAML"),
        ("name: x\nvariants: 5\n", "variants"),
        ("name: x\nvariants: [control]\n", "variants"),
    ],
)
def test_a_malformed_experiment_spec_is_a_usage_error(
    runner: CliRunner, tmp_path: Path, text: str, says: str
) -> None:
    spec = tmp_path / "exp.yaml"
    spec.write_text(text)
    _usage_error(runner, ["--json", "exp", "create", "-f", str(spec)], says)


def test_malformed_explanation_inputs_are_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    _usage_error(runner, ["--json", "explain", "m-1", "--input", "{bad"], "not valid JSON")
    lines = tmp_path / "inputs.jsonl"
    lines.write_text('[1, 2]\n{"a": \n')
    _usage_error(runner, ["explain", "m-1", "--input-file", str(lines)], "not valid JSON")


@pytest.mark.parametrize("content", ['{"url": "http://x", "tok', "[1]"])
def test_a_broken_config_file_is_a_usage_error_that_names_it(
    runner: CliRunner, tmp_path: Path, content: str
) -> None:
    config = tmp_path / "config" / "synapse" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text(content)
    _usage_error(runner, ["--json", "whoami"], str(config))


@pytest.mark.parametrize("interval", ["-1", "0", "nan"])
def test_a_watch_interval_that_is_not_a_positive_number_of_seconds_is_a_usage_error(
    runner: CliRunner, interval: str
) -> None:
    args = ["exp", "status", "exp-1", "--watch", "--interval", interval]
    _usage_error(runner, args, "--interval")


def test_a_missing_spec_or_input_file_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.yaml")
    _usage_error(runner, ["--json", "exp", "create", "-f", missing], "does not exist")
    _usage_error(runner, ["explain", "m-1", "--input-file", missing], "does not exist")


def test_a_local_file_error_is_one_line_and_exit_1_not_a_traceback(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("a,b\n1,2\n")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("SYNAPSE_STATE_DIR", str(blocker / "uploads"))  # cannot be created
    result = runner.invoke(main, ["--json", "data", "push", str(data), "ds-1"])
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "error: " in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
