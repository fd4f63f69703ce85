"""Checks that a model artifact is a skops file whose types are all on the allow-list.

The check reads the skops archive's ``schema.json`` with the standard library only, so the API
function can refuse an unsafe upload without importing scikit-learn or skops. Loading (on the
explanation path) passes exactly the allow-listed types to ``skops.io.loads(trusted=...)``.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from chalicelib.registry.errors import UnsafeArtifactError

# scikit-learn classes (never functions): ``sklearn.<modules>.<Class>`` with a capitalised,
# optionally underscore-prefixed class name. Functions are refused because a forged schema can
# name any importable callable; classes are instantiated without running their constructor.
_SKLEARN_CLASS = re.compile(r"^sklearn(\.[a-z_][a-z0-9_]*)+\.(_?[A-Z][A-Za-z0-9_]*)$")

# Modules of scikit-learn that run code by design (test helpers) or vendor third-party code.
_SKLEARN_REFUSED_MODULES = re.compile(r"(^|\.)(_?testing|externals|_build_utils|conftest)(\.|$)")

# Classes that wrap arbitrary callables, refused under every import path (re-exports included).
_REFUSED_CLASS_NAMES = {"FunctionTransformer"}

_NUMPY_SCALARS = {
    f"numpy.{name}"
    for name in [
        "ndarray",
        "dtype",
        "bool_",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "longdouble",
        "complex64",
        "complex128",
        "str_",
        "bytes_",
        "datetime64",
        "timedelta64",
        "intc",
        "uintc",
    ]
}

# Pure data types outside scikit-learn.
TRUSTED_TYPES = (
    _NUMPY_SCALARS
    | {
        "numpy.random.mtrand.RandomState",
        "numpy.random._generator.Generator",
        "numpy.random._mt19937.MT19937",
        "numpy.random._pcg64.PCG64",
        "numpy.random.bit_generator.SeedSequence",
        "numpy.ma.core.MaskedArray",
        "collections.OrderedDict",
        "collections.defaultdict",
        "collections.Counter",
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
    }
    | {
        f"scipy.sparse._{fmt}.{fmt}_{kind}"
        for fmt in ("csr", "csc", "coo", "bsr", "dia", "dok", "lil")
        for kind in ("matrix", "array")
    }
)

# A skops schema describes the object tree, not the arrays; real ones are kilobytes. The limit
# keeps a small, highly compressed archive from expanding into the function's memory.
MAX_SCHEMA_BYTES = 16 * 1024 * 1024

PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def is_trusted(type_name: str) -> bool:
    """Whether a fully qualified type name may be loaded (an explicit allow-list, no prefixes)."""
    if type_name.rsplit(".", 1)[-1] in _REFUSED_CLASS_NAMES:
        return False
    if type_name in TRUSTED_TYPES:
        return True
    match = _SKLEARN_CLASS.match(type_name)
    if match is None:
        return False
    module = type_name.rsplit(".", 1)[0]
    return _SKLEARN_REFUSED_MODULES.search(module) is None


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
            if archive.getinfo("schema.json").file_size > MAX_SCHEMA_BYTES:
                raise UnsafeArtifactError(
                    f"the artifact's schema.json is larger than {MAX_SCHEMA_BYTES} bytes"
                )
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
