"""Where the client finds the API: ``synapse login``'s config file, overridden by the environment.

The file is ``$SYNAPSE_CONFIG`` or ``~/.config/synapse/config.json`` (``$XDG_CONFIG_HOME`` is
honoured), written with permissions 0600 (it holds a token) in a directory created 0700.
``SYNAPSE_URL`` and ``SYNAPSE_TOKEN`` override what the file says. The file's token is used
only with the file's URL: pointed at another API (``SYNAPSE_URL``, ``--url``), the client sends
no token unless one is given too (``SYNAPSE_TOKEN``, ``--token``), so a production token saved
by ``synapse login`` never reaches a staging, local or mistyped URL.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Settings:
    """The API to talk to.

    Attributes:
        url: Base URL.
        token: Bearer token (``None``: public routes only).
        source: Where the values came from (for ``synapse login --show``).
    """

    url: str
    token: str | None
    source: str


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The config file's path."""
    if path is not None:
        return Path(path)
    if os.environ.get("SYNAPSE_CONFIG"):
        return Path(os.environ["SYNAPSE_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "synapse" / "config.json"


def read_file(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The config file's values (empty when there is none).

    Raises:
        ValueError: The file is not a JSON object (the message names the file).
    """
    target = config_path(path)
    if not target.exists():
        return {}
    try:
        data = json.loads(target.read_text(encoding="utf-8") or "{}")
    except ValueError as exc:
        raise ValueError(f"{target} is not valid JSON ({exc}); run synapse login again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{target} is not a JSON object")
    return {k: str(v) for k, v in data.items() if v is not None}


def save(url: str, token: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Writes the config file atomically with permissions 0600; returns its path."""
    target = config_path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".config-", suffix=".tmp")
    try:
        os.fchmod(handle, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump({"url": url.rstrip("/"), "token": token}, out, indent=2)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def load_settings(path: str | os.PathLike[str] | None = None, url: str | None = None) -> Settings:
    """The file's values overridden by ``url`` (a ``--url`` flag), ``SYNAPSE_URL`` and
    ``SYNAPSE_TOKEN``; the file's token only goes with the file's URL."""
    found = read_file(path)
    url = (url or os.environ.get("SYNAPSE_URL") or found.get("url") or DEFAULT_URL).rstrip("/")
    saved = found.get("token") if found.get("url", "").rstrip("/") == url else None
    token = os.environ.get("SYNAPSE_TOKEN") or saved or None
    if os.environ.get("SYNAPSE_URL") or os.environ.get("SYNAPSE_TOKEN"):
        source = "environment"
    elif found:
        source = str(config_path(path))
    else:
        source = "defaults"
    return Settings(url, token, source)
