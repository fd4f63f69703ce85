"""The base of every request and response schema: pydantic models built on first use.

``import app`` runs at every Lambda cold start and declares some 200 schemas; building each one's
validator and serializer (pydantic's core schema) at class creation took about a third of that
import. With ``defer_build`` a schema is built the first time it validates, serializes or gives
its JSON schema, so a cold start pays only for the schemas its first request uses.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Schema(BaseModel):
    """A pydantic model whose validator is built on first use (``defer_build``); subclasses
    add their own ``model_config``, which pydantic merges with this one."""

    model_config = ConfigDict(defer_build=True)
