"""``GET /console``: the web console, static HTML/JS/CSS served by the app (no build step).

The shell is public (it holds no data); every data call the page makes goes to the
authenticated public API with the token the user types once, kept in the tab's
``sessionStorage`` and sent as ``Authorization: Bearer``. The files live in
``chalicelib/system/console/`` (so the Lambda package carries them) and are served from memory
with a strict Content-Security-Policy: scripts, styles and API calls from this origin only. The
routes are plain Chalice routes, not API routes, so they are not in ``/openapi.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from chalice import Blueprint, Response

STATIC = Path(__file__).resolve().parent / "console"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

blueprint = Blueprint(__name__)
_files: dict[str, tuple[str, str]] = {}


def assets() -> dict[str, tuple[str, str]]:
    """``name -> (content type, text)`` of every console file (read once)."""
    if not _files:
        for path in sorted(STATIC.iterdir()):
            if path.suffix in TYPES and path.is_file():
                _files[path.name] = (TYPES[path.suffix], path.read_text(encoding="utf-8"))
    return _files


def _serve(name: str) -> Response:
    found = assets().get(name)
    if found is None:
        body = {"error": "not_found", "message": "no such console file"}
        return Response(json.dumps(body), status_code=404,
                        headers={"Content-Type": "application/json"})  # fmt: skip
    content_type, text = found
    return Response(text, status_code=200, headers={"Content-Type": content_type, **HEADERS})


@blueprint.route("/console", methods=["GET"])
def console_page() -> Response:
    """The console's HTML shell."""
    return _serve("index.html")


@blueprint.route("/console/{asset}", methods=["GET"])
def console_asset(asset: str) -> Response:
    """One of the console's scripts or stylesheets."""
    return _serve(asset)
