"""``/console`` serves a static shell (public, strict CSP) whose data comes only from the
authenticated API; every console file is served and nothing else."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from chalicelib.system.console import STATIC
from tests.conftest import Http


def test_the_shell_is_public_html_with_a_strict_content_security_policy(client: Any) -> None:
    page = client.http.get("/console")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    assert b'src="console/app.js"' in page.body  # relative: works under a stage prefix too


def test_every_console_file_is_served_with_its_type_and_nothing_else(client: Any) -> None:
    names = sorted(p.name for p in STATIC.iterdir())
    assert {"index.html", "app.js", "api.js", "style.css"} <= set(names)
    for name in names:
        found = client.http.get(f"/console/{name}")
        assert found.status_code == 200, name
        expected = {"js": "text/javascript", "css": "text/css", "html": "text/html"}
        assert found.headers["Content-Type"].startswith(expected[name.rsplit(".", 1)[1]])
    for missing in ("nope.js", "..%2Fconsole.py", "console.py"):
        answer = client.http.get(f"/console/{missing}")
        assert answer.status_code == 404 and b'"not_found"' in answer.body


def test_the_console_reads_only_public_api_routes_with_the_bearer_token(http: Http) -> None:
    """Every path the scripts call is a route of /openapi.json (no private shortcut)."""
    document = http.call("GET", "/openapi.json").data
    routes = [re.sub(r"\{[^}]+\}", "[^/?]+", p) for p in document["paths"]]
    called, guarded = set(), []
    for script in Path(STATIC).glob("*.js"):
        text = script.read_text()
        called |= set(re.findall(r"(?:get|post)\(\s*[`\"](/[^`\"?]*)", text))
        # calls to routes other issues add are made only once has() found them in openapi.json
        guarded += [re.sub(r"\{[^}]+\}", "[^/?]+", t)
                    for t in re.findall(r"has\(\"GET\", \"([^\"]+)\"\)", text)]  # fmt: skip
    assert called, "no API call found in the console's scripts"
    for path in called:
        concrete = re.sub(r"\$\{[^}]+\}", "x", path)
        assert any(re.fullmatch(r, concrete) for r in routes + guarded), path
    api = (STATIC / "api.js").read_text()
    assert "sessionStorage" in api and "Authorization = `Bearer" in api
    assert "localStorage" not in "".join(p.read_text() for p in STATIC.glob("*.js"))


def test_console_files_contain_no_inner_html(client: Any) -> None:
    for script in STATIC.glob("*.js"):
        assert "innerHTML" not in script.read_text(), script.name
