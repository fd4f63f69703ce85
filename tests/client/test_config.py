"""Where the client finds its API and token: ``synapse login``'s file, overridden by the
environment and flags, and a token saved for one URL is never sent to another."""

from __future__ import annotations

from pathlib import Path

import pytest

from synapse_client import Client
from synapse_client.cli import Context
from synapse_client.config import load_settings, save

SAVED = "snk_saved_for_production_0000000000"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("SYNAPSE_URL", "SYNAPSE_TOKEN", "SYNAPSE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return save("https://prod.example/api/", SAVED)


def test_the_saved_token_goes_with_the_saved_url_and_the_environment_overrides_both(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings() == load_settings(url="https://prod.example/api/")
    assert load_settings().token == SAVED and load_settings().url == "https://prod.example/api"
    monkeypatch.setenv("SYNAPSE_TOKEN", "snk_from_the_environment_000000000")
    monkeypatch.setenv("SYNAPSE_URL", "http://127.0.0.1:8000")
    found = load_settings()
    assert found.url == "http://127.0.0.1:8000"
    assert found.token == "snk_from_the_environment_000000000"


def test_a_saved_token_is_not_sent_to_another_url_from_the_environment_or_a_flag(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Context("https://elsewhere.example", None, False, True).client.transport.token is None
    assert Context(None, None, False, True).client.transport.token == SAVED
    monkeypatch.setenv("SYNAPSE_URL", "https://elsewhere.example")
    assert load_settings().token is None
    assert Client.from_config().transport.token is None
    assert Context(None, None, False, True).client.transport.token is None
    assert Context(None, "snk_given_on_the_command_line_00000", False, True).client.transport.token
