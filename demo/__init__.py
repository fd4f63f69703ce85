"""``make demo``: the SynapseNet story played through the HTTP API (see ``demo/__main__.py``)."""

from __future__ import annotations

from demo.main import run_demo

__all__ = ["run_demo"]
