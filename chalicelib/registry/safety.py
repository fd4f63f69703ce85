"""Checks that a model artifact is a skops file whose types are all on the allow-list.

The check reads the skops archive's ``schema.json`` with the standard library only, so the API
function can refuse an unsafe upload without importing scikit-learn or skops. Loading (on the
explanation path) passes exactly the allow-listed types to ``skops.io.loads(trusted=...)``.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

from chalicelib.core.errors import UnprocessableEntity

# Module prefixes whose types may be instantiated when loading a model.
TRUSTED_MODULE_PREFIXES = (
    "sklearn.",
    "numpy",
    "scipy.sparse",
    "collections.",
)

# Builtins that only hold data.
TRUSTED_BUILTINS = {
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.set",
    "builtins.frozenset",
    "builtins.int",
    "builtins.float",
    "builtins.complex",
    "builtins.str",
    "builtins.bytes",
    "builtins.bool",
    "builtins.slice",
    "builtins.NoneType",
    "builtins.type",
    "builtins.object",
}

# Never trusted even under a trusted prefix: they wrap arbitrary callables.
UNTRUSTED_TYPES = {
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "numpy.load",
    "numpy.loadtxt",
    "numpy.fromfile",
}

PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


class UnsafeArtifactError(UnprocessableEntity):
    """The artifact is not a safe skops file."""

    code = "unsafe_artifact"


def is_trusted(type_name: str) -> bool:
    """Whether a fully qualified type or function name may be loaded."""
    if type_name in UNTRUSTED_TYPES:
        return False
    if type_name in TRUSTED_BUILTINS:
        return True
    return type_name.startswith(TRUSTED_MODULE_PREFIXES)


def _walk(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        module, cls = node.get("__module__"), node.get("__class__")
        if isinstance(module, str) and isinstance(cls, str):
            yield f"{module}.{cls}"
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def artifact_types(data: bytes) -> set[str]:
    """Every type named in a skops archive.

    Raises:
        UnsafeArtifactError: The bytes are a pickle or not a skops archive.
    """
    if data[:2] in PICKLE_MAGIC:
        raise UnsafeArtifactError(
            "this artifact is a pickle; pickle and joblib files execute code when loaded and are "
            "refused. Save scikit-learn models with skops: skops.io.dump(model, 'model.skops')"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise UnsafeArtifactError(f"not a skops archive ({exc})") from None
    return set(_walk(schema))


def check_artifact(data: bytes) -> list[str]:
    """Validates an artifact and returns its (all trusted) type names, sorted.

    Raises:
        UnsafeArtifactError: Pickle, not skops, or a type outside the allow-list.
    """
    types = artifact_types(data)
    untrusted = sorted(name for name in types if not is_trusted(name))
    if untrusted:
        raise UnsafeArtifactError(
            f"the artifact contains types that are not on the allow-list: {', '.join(untrusted)}",
            details={"untrusted_types": untrusted},
        )
    return sorted(types)
