"""The ``synapse`` command against a local stack (moto + the app over loopback HTTP), through
click's CliRunner: every command, ``--json``, progress, and the documented exit codes."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from synapse_client import Client
from synapse_client.cli import main
from tests.helpers.client import model_with_versions
from tests.helpers.models import skops_artifact


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture
def synapse(stack: Any, home: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Runs ``synapse ...`` as a user logged in to the stack with the admin token."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("SYNAPSE_STATE_DIR", str(home / "state"))
    monkeypatch.delenv("SYNAPSE_URL", raising=False)
    monkeypatch.delenv("SYNAPSE_TOKEN", raising=False)
    monkeypatch.delenv("SYNAPSE_CONFIG", raising=False)
    runner = CliRunner()
    login = runner.invoke(main, ["login", "--url", stack.url, "--token", stack.admin_token])
    assert login.exit_code == 0, login.output

    def run(*args: str, code: int = 0, stdin: str | None = None) -> Result:
        result = runner.invoke(main, list(args), input=stdin)
        assert result.exit_code == code, (result.output, result.stderr, result.exception)
        return result

    return run


def as_json(result: Result) -> Any:
    return json.loads(result.stdout)


def test_login_saves_a_0600_config_and_the_environment_overrides_it(
    synapse: Any, stack: Any, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = home / "config" / "synapse" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert json.loads(config.read_text()) == {"url": stack.url, "token": stack.admin_token}
    assert as_json(synapse("--json", "whoami"))["roles"] == ["admin"]
    assert "principal" in synapse("whoami").stdout
    monkeypatch.setenv("SYNAPSE_TOKEN", "snk_not_a_real_token_0000000000")
    refused = synapse("whoami", code=4)
    assert "401" in refused.stderr and "unauthorized" in refused.stderr


def test_login_with_a_bad_token_saves_nothing(synapse: Any, stack: Any, home: Path) -> None:
    before = (home / "config" / "synapse" / "config.json").read_text()
    synapse("login", "--url", stack.url, "--token", "snk_wrong_token_000000000000", code=4)
    assert (home / "config" / "synapse" / "config.json").read_text() == before


def test_unreachable_api_and_usage_errors_have_their_exit_codes(synapse: Any) -> None:
    down = synapse("--url", "http://127.0.0.1:9", "whoami", code=5)
    assert "error:" in down.stderr
    synapse("data", "pull", code=2)
    synapse("exp", "status", "exp-does-not-exist", code=3)


def test_completion_scripts_are_printed_for_each_shell(synapse: Any) -> None:
    assert "_SYNAPSE_COMPLETE" in synapse("completion", "bash").stdout
    assert "compdef" in synapse("completion", "zsh").stdout
    assert "complete" in synapse("completion", "fish").stdout


def test_help_documents_the_exit_codes(synapse: Any) -> None:
    text = synapse("--help").stdout
    for code in ("3  not found", "5  the API could not be reached", "6  the server lacks"):
        assert code in text


def test_data_create_push_log_diff_and_pull_round_trip(synapse: Any, tmp_path: Path) -> None:
    created = as_json(synapse("--json", "data", "create", "cells-cli", "--group", "ml"))
    dataset_id = created["dataset_id"]
    first = tmp_path / "v1.csv"
    first.write_text("id,radius\n1,14.1\n2,12.0\n")
    second = tmp_path / "v2.csv"
    second.write_text("id,radius\n1,14.1\n2,12.0\n3,9.5\n")
    pushed = synapse("data", "push", str(first), "cells-cli")  # by name
    assert "version 1" in pushed.stdout and "upload:" in pushed.stderr
    again = as_json(synapse("--json", "-q", "data", "push", str(first), dataset_id))
    assert again["mode"] == "exists" and again["version"]["version_number"] == 1
    assert again["sent_bytes"] == 0
    synapse("-q", "data", "push", str(second), dataset_id)
    log = synapse("data", "log", dataset_id).stdout.splitlines()
    assert log[0].startswith("VERSION_NUMBER") and log[1].split()[0] == "2"
    logged = as_json(synapse("--json", "data", "log", dataset_id))
    assert [v["version_number"] for v in logged["versions"]] == [2, 1]
    diff = as_json(synapse("--json", "data", "diff", dataset_id, "1", "2"))
    assert list(diff["row_count"].values())[:2] == [2, 3] and diff["same_content"] is False
    assert "same_content" in synapse("data", "diff", dataset_id, "1", "2").stdout
    target = tmp_path / "out.csv"
    pulled = as_json(synapse("--json", "data", "pull", dataset_id, "2", "-o", str(target)))
    assert target.read_bytes() == second.read_bytes()
    assert pulled["sha256"] == logged["versions"][0]["sha256"]
    assert "verified" in synapse("data", "pull", dataset_id, "1", "-o", str(target)).stdout
    assert "cells-cli" in synapse("data", "ls").stdout


def test_tag_drift_and_pull_by_tag(synapse: Any, tmp_path: Any) -> None:
    dataset_id = as_json(synapse("--json", "data", "create", "tagged"))["dataset_id"]
    first, second = tmp_path / "v1.csv", tmp_path / "v2.csv"
    first.write_text("x,kind\n" + "".join(f"{i},a\n" for i in range(200)))
    second.write_text("x,kind\n" + "".join(f"{i + 150},b\n" for i in range(200)))
    synapse("-q", "data", "push", str(first), dataset_id)
    synapse("-q", "data", "push", str(second), dataset_id)
    moved = as_json(synapse("--json", "data", "tag", dataset_id, "1", "production"))
    assert moved["tag"] == "production" and moved["version_number"] == 1, moved
    assert "candidate" in synapse("data", "tag", dataset_id, "2", "candidate").stdout
    drift = as_json(synapse("--json", "data", "drift", dataset_id, "production", "candidate"))
    assert {"x", "kind"} <= set(json.dumps(drift).replace('"', " ").split()), drift
    assert "x" in synapse("data", "drift", dataset_id, "1", "2").stdout
    profile = as_json(synapse("--json", "data", "profile", dataset_id, "candidate"))
    assert [c["name"] for c in profile["columns"]] == ["x", "kind"], profile
    assert profile["columns"][0]["min"] == 150 and profile["columns"][1]["top"] == [
        {"value": "b", "count": 200}
    ]
    assert "kind: categorical, 200 values, 0 empty, 1 distinct; 'b'×200" in (
        synapse("data", "profile", dataset_id, "2").stdout
    )
    target = tmp_path / "out.csv"
    synapse("-q", "data", "pull", dataset_id, "production", "-o", str(target))
    assert target.read_bytes() == first.read_bytes()
    synapse("data", "drift", dataset_id, "1", "nope", code=3)


def _experiment_yaml(model_id: str, name: str) -> str:
    return f"""
name: {name}
allocation_strategy: percentage
variants:
  - {{variant_id: control, model_id: {model_id}, model_version: 1, traffic_weight: 0.5,
     is_control: true}}
  - {{variant_id: treatment, model_id: {model_id}, model_version: 2, traffic_weight: 0.5}}
rollback_policy:
  error_rate_threshold: 0.1
  min_requests_before_rollback: 50
"""


def test_experiment_create_start_status_watch_analyse_conclude(
    synapse: Any, admin: Client, tmp_path: Path
) -> None:
    model_id = model_with_versions(admin)
    spec = tmp_path / "exp.yaml"
    spec.write_text(_experiment_yaml(model_id, "cli-ab"))
    created = as_json(synapse("--json", "exp", "create", "-f", str(spec)))
    experiment_id = created["experiment_id"]
    assert created["status"] == "draft"
    assert [v["traffic_weight"] for v in created["variants"]] == ["0.5", "0.5"]
    assert admin.get_rollback_policy(experiment_id)["error_rate_threshold"] == 0.1
    assert "running" in synapse("exp", "start", experiment_id).stdout
    outcomes = [{"variant_id": v, "request_id": f"{v}-{i}", "success": True, "latency_ms": 20.0,
                 "converted": i % (3 if v == "control" else 2) == 0}
                for v in ("control", "treatment") for i in range(300)]  # fmt: skip
    admin.record_outcomes(experiment_id, outcomes)
    status = synapse("exp", "status", experiment_id).stdout
    assert "control (control)" in status and "300" in status
    watched = synapse("exp", "status", experiment_id, "--watch", "--interval", "0.1",
                      "--limit", "0.3")  # fmt: skip
    assert "samples:" in watched.stderr and watched.stdout.count("cli-ab") >= 2
    analysis = as_json(synapse("--json", "exp", "analyse", experiment_id))
    assert analysis["treatments"][0]["variant_id"] == "treatment"
    assert "recommendation:" in synapse("exp", "analyze", experiment_id).stdout
    assert "cli-ab" in synapse("exp", "ls").stdout
    assert "paused" in synapse("exp", "pause", experiment_id).stdout
    assert "running" in synapse("exp", "resume", experiment_id).stdout
    concluded = synapse("exp", "conclude", experiment_id, "--winner", "treatment").stdout
    assert "winner treatment" in concluded
    final = synapse("exp", "status", experiment_id, "--watch", "--interval", "0.1").stdout
    assert "concluded" in final  # --watch stops by itself at a terminal state
    assert admin.get_model(model_id)["production_version"] == 2
    synapse("exp", "start", experiment_id, code=1)  # 409: already concluded


def test_experiment_rollback_and_yaml_from_stdin(synapse: Any, admin: Client) -> None:
    model_id = model_with_versions(admin)
    spec = _experiment_yaml(model_id, "cli-rb")
    experiment_id = as_json(synapse("--json", "exp", "create", "-f", "-", "--start",
                                    stdin=spec))["experiment_id"]  # fmt: skip
    rolled = synapse("exp", "rollback", experiment_id, "--reason", "bad canary").stdout
    assert "rolled_back" in rolled
    assert "rolled back: bad canary" in synapse("exp", "status", experiment_id).stdout
    bad = synapse("exp", "create", "-f", "-", stdin="- just a list", code=2)
    assert "mapping" in bad.stderr


def test_model_register_promote_and_list(synapse: Any, tmp_path: Path) -> None:
    artifact = tmp_path / "model.skops"
    artifact.write_bytes(base64.b64decode(skops_artifact(1)))
    first = as_json(synapse("--json", "model", "register", "cli-model", str(artifact), "--create",
                            "--task", "classification", "--feature", "a", "--feature", "b",
                            "--feature", "c"))  # fmt: skip
    model_id = first["model_id"]
    assert first["version"] == 1 and first["feature_names"] == ["a", "b", "c"]
    second = synapse("model", "register", model_id, str(artifact), "--task", "classification",
                     "--feature", "a", "--feature", "b", "--feature", "c").stdout  # fmt: skip
    assert "version 2" in second
    assert "is now production" in synapse("model", "promote", model_id, "2").stdout
    assert "cli-model" in synapse("model", "ls").stdout
    unsafe = tmp_path / "model.pkl"
    unsafe.write_bytes(b"\x80\x04K\x01.")
    refused = synapse("model", "register", model_id, str(unsafe), "--task", "classification",
                      code=1)  # fmt: skip
    assert "422" in refused.stderr


def test_model_register_uploads_a_large_artifact(
    synapse: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import synapse_client.cli as cli

    monkeypatch.setattr(cli, "MAX_INLINE_ARTIFACT", 10)  # any real artifact is "large" now
    artifact = tmp_path / "model.skops"
    artifact.write_bytes(base64.b64decode(skops_artifact(2)))
    found = as_json(synapse("--json", "model", "register", "big-model", str(artifact), "--create",
                            "--task", "classification", "--feature", "a", "--feature", "b",
                            "--feature", "c"))  # fmt: skip
    assert found["artifact_size"] == artifact.stat().st_size


def test_explain_one_input_as_a_waterfall_a_batch_and_global_importance(
    synapse: Any, admin: Client, tmp_path: Path
) -> None:
    model_id = model_with_versions(admin, count=1)
    row = {"a": 0.5, "b": -1.0, "c": 2.0}
    refused = synapse("explain", model_id, "--input", json.dumps(row), code=1)
    assert "no production version" in refused.stderr
    admin.set_stage(model_id, 1, "production")
    waterfall = synapse("explain", model_id, "--input", json.dumps(row)).stdout
    assert "base" in waterfall and "prediction" in waterfall and "a " in waterfall
    single = as_json(synapse("--json", "explain", model_id, "--input", json.dumps(row),
                             "--method", "lime", "--seed", "3"))  # fmt: skip
    assert single["explanation_type"] == "lime"
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"a": i / 10, "b": 1 - i / 10, "c": i}) for i in range(5)))
    batch = as_json(synapse("--json", "explain", model_id, "--input-file", str(rows)))
    assert batch["count"] == 5
    assert synapse("explain", model_id, "--input-file", str(rows)).stdout.count("base") == 5
    ranked = synapse("explain", model_id, "--input-file", str(rows), "--global").stdout
    assert ranked.splitlines()[0].split() == ["FEATURE", "IMPORTANCE"]
    synapse("explain", model_id, code=2)  # no input


def test_json_output_is_clean_of_progress(synapse: Any, tmp_path: Path) -> None:
    dataset_id = as_json(synapse("--json", "data", "create", "clean-json"))["dataset_id"]
    path = tmp_path / "d.csv"
    path.write_text("x\n1\n")
    result = synapse("--json", "data", "push", str(path), dataset_id)
    assert json.loads(result.stdout)["version"]["row_count"] == 1
    assert "upload:" in result.stderr
    os.environ.pop("SYNAPSE_TOKEN", None)
