"""Checks that a model artifact is a skops file the service can load without touching the host.

A skops file is a zip: ``schema.json`` describes the object tree node by node (each node names a
*loader*, the skops class that rebuilds it, and a ``module.Class``), and ``.npy``/``.npz``
members hold the arrays. skops imports and instantiates whatever a node names once that name is
"trusted", so the check here decides what may be named, where, and how large it may get:

* **Types** come from an enumerated allow-list (``trusted_types.json``, generated from the pinned
  scikit-learn by ``infra/trusted_types.py``): scikit-learn's estimators and their own helper
  types, each by the module that *defines* it, plus plain numpy/scipy/builtin data types. No
  prefix, pattern or re-exporting module is trusted (``sklearn.datasets._rcv1.GzipFile`` is
  ``gzip.GzipFile`` and is refused), nothing from a testing module, and no function except the
  one pure helper scikit-learn's own histogram gradient boosting stores (see
  :meth:`_SchemaChecker.function_transformer`).
* **Loaders and shapes**: every node's loader must be one of the skops loaders real models use,
  with exactly the keys that loader reads; each loader may name only its own kind of type (an
  ``ObjectNode`` an estimator or helper, a ``TypeNode`` a scalar type, ...). Unknown loaders,
  extra keys, aliased object ids that differ, and a root that is not an estimator are refused.
* **Parameters** that would read or write files (``input='filename'`` of the text vectorizers,
  ``memory=`` of pipelines) must hold their harmless value.
* **Sizes**: the zip's declared sizes and every ``.npy`` header (shape × itemsize) must agree, and
  their sum is capped (``SYNAPSE_MAX_MODEL_BYTES``) before anything is decompressed; members are
  read through size-limited readers.

The check uses the standard library and numpy's ``.npy`` header reader only, so the API function
refuses an unsafe upload without importing scikit-learn or skops. The registry runs it at
registration and again on the stored bytes before every load, and passes exactly the types it
accepted to ``skops.io.loads(trusted=...)``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from chalicelib.core.config import get_settings
from chalicelib.registry.errors import UnsafeArtifactError
from chalicelib.registry.structures import check_sparse, check_structures

ALLOW_LIST_PATH = Path(__file__).with_name("trusted_types.json")

# A skops schema describes the object tree, not the arrays: about 20 KB per boosted tree, so a
# 1,000-tree GradientBoosting model has a 21 MB schema. Parsing takes about 2.5 times its size.
MAX_SCHEMA_BYTES = 64 * 1024 * 1024
SCHEMA_PARSE_FACTOR = 3
# Members of the zip (a 1,000-tree forest has a few thousand); the end-of-central-directory record
# is read before the directory is parsed, and the directory's size bounds the entries parsed.
MAX_MEMBERS = 100_000
MAX_DIRECTORY_BYTES = 8 * 1024 * 1024
# Nodes nested inside one another (real pipelines nest a few dozen deep).
MAX_DEPTH = 120
# Members are verified (CRC and size) in chunks of this size, never read whole.
CHUNK = 1024 * 1024
# numpy refuses longer .npy headers when loading without allow_pickle.
MAX_NPY_HEADER = 10_000
# The skops protocol the allow-list was generated for (skops 0.16).
SKOPS_PROTOCOL = 2
# Largest member read whole by the structure check (members were capped before).
CAP_READ = 1 << 40
# Names listed in an error message at most.
MAX_LISTED = 20

PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_NPY_MAGIC = b"\x93NUMPY"
# The header np.save writes for a dtype that is a plain string (not a record): descr, order, shape.
_SIMPLE_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=][a-zA-Z][a-zA-Z0-9]*(?:\[[a-z]+\])?)', "
    rb"'fortran_order': (True|False), 'shape': \(((?:\d+, ?)*\d*)\), \} *\n?$"
)
_TESTING_MODULE = re.compile(r"(^|\.)(tests?|_?testing|conftest)(\.|$)")
_COMMON_KEYS = frozenset({"__class__", "__module__", "__loader__", "__id__"})
_ROOT_KEYS = frozenset({"protocol", "_skops_version"})

# Types the generic loaders may name (their constructors take no arguments or plain data).
_BUILTIN_SCALARS = frozenset(
    {"builtins.str", "builtins.int", "builtins.float", "builtins.bool", "builtins.complex"}
)
_RANDOM_STATE = "numpy.random.mtrand.RandomState"
_GENERATOR = "numpy.random._generator.Generator"
_MASKED = "numpy.ma.MaskedArray"
_NDARRAY = "numpy.ndarray"

# The only function a served model may hold: scikit-learn's HistGradientBoosting* with categorical
# features stores FunctionTransformer(func=partial(check_array, dtype=[...], ensure_all_finite=...))
# in its preprocessor. check_array validates and converts its input (no I/O, no callables).
_FUNCTION_TRANSFORMER = "sklearn.preprocessing._function_transformer.FunctionTransformer"
_CHECK_ARRAY = "sklearn.utils.validation.check_array"
_PARTIAL = "functools.partial"
_CHECK_ARRAY_KWARGS = {"dtype", "ensure_all_finite"}
_FUNCTION_TRANSFORMER_NONE = ("inverse_func", "kw_args", "inv_kw_args")
# Why a restricted parameter may only hold the listed values (default: it touches files).
_RESTRICTED_REASONS = {
    "token_pattern": "it is a regular expression run on every input text, and other patterns "
    "can backtrack for minutes on a short text (nested quantifiers such as (?:a+)+b)",
}


@dataclass(frozen=True)
class AllowList:
    """The enumerated types (see ``infra/trusted_types.py``)."""

    estimators: frozenset[str]
    helpers: frozenset[str]
    dicts: frozenset[str]
    trees: frozenset[str]
    losses: frozenset[str]
    numpy_scalars: frozenset[str]
    sparse: frozenset[str]
    bit_generators: frozenset[str]
    restricted_parameters: dict[str, dict[str, list[Any]]]

    @property
    def objects(self) -> frozenset[str]:
        """Classes an ``ObjectNode`` may instantiate."""
        return self.estimators | self.helpers

    @property
    def scalar_types(self) -> frozenset[str]:
        """Types a ``TypeNode`` may name (and a dict's key types)."""
        return _BUILTIN_SCALARS | self.numpy_scalars

    def all_types(self) -> frozenset[str]:
        """Every type name any loader may use."""
        return (
            self.objects
            | self.trees
            | self.losses
            | self.scalar_types
            | self.sparse
            | self.dicts
            | {"builtins.list", "builtins.tuple", "builtins.set", "builtins.slice"}
            | {_NDARRAY, _MASKED, "numpy.dtype", _RANDOM_STATE, _GENERATOR}
        )


@lru_cache(maxsize=1)
def allow_list() -> AllowList:
    """The committed allow-list (read once per process)."""
    data = json.loads(ALLOW_LIST_PATH.read_text(encoding="utf-8"))
    sets = {
        name: frozenset(data[name])
        for name in (
            "estimators",
            "helpers",
            "dicts",
            "trees",
            "losses",
            "numpy_scalars",
            "sparse",
            "bit_generators",
        )
    }
    return AllowList(**sets, restricted_parameters=data["restricted_parameters"])


def is_trusted(type_name: str) -> bool:
    """Whether a fully qualified type name may appear in an artifact at all.

    Being trusted is necessary, not sufficient: each loader accepts only its own kind of type.
    """
    if _TESTING_MODULE.search(type_name.rpartition(".")[0]):
        return False
    return type_name in allow_list().all_types()


@dataclass(frozen=True)
class ArtifactReport:
    """What the check found in an accepted artifact.

    Attributes:
        types: Every type the file names (what ``skops.io.loads(trusted=...)`` gets), sorted.
        members: Files in the zip.
        expanded_bytes: Sum of the members' uncompressed sizes (nested ``.npz`` included).
        array_bytes: Sum of the arrays' sizes (shape × itemsize from every ``.npy`` header).
        schema_bytes: Size of ``schema.json``.
    """

    types: list[str]
    members: int
    expanded_bytes: int
    array_bytes: int
    schema_bytes: int = 0

    @property
    def load_bytes(self) -> int:
        """Memory a load takes at most: the decompressed members, the arrays built from them and
        the parsed schema."""
        return self.expanded_bytes + self.array_bytes + SCHEMA_PARSE_FACTOR * self.schema_bytes


def max_model_bytes() -> int:
    """The configured cap on a model's declared size (``SYNAPSE_MAX_MODEL_BYTES``)."""
    return get_settings().max_model_bytes


def check_artifact(data: bytes) -> list[str]:
    """Validates an artifact and returns its (all trusted) type names, sorted.

    Raises:
        UnsafeArtifactError: Pickle, not skops, a type, loader or shape outside the allow-list,
            a parameter that touches the host, or declared sizes that lie or exceed the cap.
    """
    return inspect_artifact(data).types


def inspect_artifact(data: bytes, max_bytes: int | None = None) -> ArtifactReport:
    """Validates an artifact (see the module docstring) and reports its types and sizes.

    Args:
        data: The artifact bytes.
        max_bytes: Cap on the declared sizes (default: ``SYNAPSE_MAX_MODEL_BYTES``).

    Raises:
        UnsafeArtifactError: The artifact is refused; the message says why.
    """
    limit = max_model_bytes() if max_bytes is None else max_bytes
    if data[:2] in PICKLE_MAGIC:
        raise UnsafeArtifactError(
            "this artifact is a pickle; pickle and joblib files execute code when loaded and are "
            "refused. Save scikit-learn models with skops: skops.io.dump(model, 'model.skops')"
        )
    _check_directory(data)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = _member_infos(archive, limit)
            schema = _read_schema(archive, infos)
            checker = _SchemaChecker(allow_list())
            checker.check(schema)
            sizes = _ArraySizes(archive, infos, limit)
            sizes.measure(checker.files)
            contents = {name: _verify_member(archive, info) for name, info in infos.items()}
            checker.check_shared_ids(contents)
            _check_compiled(schema, archive, infos)
    except RecursionError:
        raise UnsafeArtifactError("the artifact nests objects too deeply") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, struct.error) as exc:
        raise UnsafeArtifactError(f"not a skops archive ({_clip(str(exc))})") from None
    return ArtifactReport(
        types=sorted(checker.types),
        members=len(infos),
        expanded_bytes=sizes.expanded,
        array_bytes=sizes.arrays,
        schema_bytes=infos["schema.json"].file_size,
    )


def _check_compiled(
    schema: dict[str, Any], archive: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo]
) -> None:
    """The compiled structures (:mod:`chalicelib.registry.structures`) of an accepted tree."""
    try:
        check_structures(schema, lambda name: _read_limited(archive, infos[name], CAP_READ))
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise UnsafeArtifactError(
            f"the model holds a compiled structure of unexpected shape ({_clip(str(exc))})"
        ) from None


# --- the zip container -----------------------------------------------------------------------


def _zip_directory(data: bytes) -> tuple[int, int]:
    """The entry count and directory size the end-of-central-directory record declares."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if end < 0 or len(data) < end + 22:
        raise UnsafeArtifactError("not a skops archive (no zip directory)")
    count, size = struct.unpack("<HI", data[end + 10 : end + 16])
    locator = end - 20
    if locator >= 0 and data[locator : locator + 4] == b"PK\x06\x07":
        offset = struct.unpack("<Q", data[locator + 8 : locator + 16])[0]
        if data[offset : offset + 4] == b"PK\x06\x06" and len(data) >= offset + 48:
            return struct.unpack("<QQ", data[offset + 32 : offset + 48])
    if count == 0xFFFF:
        # A 16-bit count that overflowed (or lies): zipfile reads entries until the directory's
        # size is used up, so bound the count by what that size can hold (46 bytes per entry).
        count = max(count, size // 46)
    return count, size


def _check_directory(data: bytes, max_members: int = MAX_MEMBERS) -> None:
    # zipfile builds one object per entry of the directory; bound both before it parses.
    count, size = _zip_directory(data)
    if count > max_members or size > MAX_DIRECTORY_BYTES:
        raise UnsafeArtifactError(
            f"the artifact has {count} files ({size} bytes of directory); the limit is "
            f"{max_members} files"
        )


def _member_infos(archive: zipfile.ZipFile, limit: int) -> dict[str, zipfile.ZipInfo]:
    infos: dict[str, zipfile.ZipInfo] = {}
    if len(archive.infolist()) > MAX_MEMBERS:
        raise UnsafeArtifactError(f"the artifact has more than {MAX_MEMBERS} files")
    for info in archive.infolist():
        if info.filename in infos:
            raise UnsafeArtifactError(f"the artifact holds '{_clip(info.filename)}' twice")
        if info.is_dir() or info.flag_bits & 0x1:
            raise UnsafeArtifactError(f"'{_clip(info.filename)}' is a directory or encrypted")
        if info.compress_type not in ZIP_METHODS:
            raise UnsafeArtifactError(
                f"'{_clip(info.filename)}' uses an unsupported compression method"
            )
        if info.file_size > limit:
            raise UnsafeArtifactError(
                f"'{_clip(info.filename)}' expands to {info.file_size} bytes; the limit for a "
                f"model is {limit} bytes (SYNAPSE_MAX_MODEL_BYTES)"
            )
        infos[info.filename] = info
    return infos


def _verify_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """Reads a member in chunks (CRC checked by zipfile), checks its size; returns its hash."""
    seen = 0
    digest = hashlib.sha256()
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(CHUNK):
                seen += len(chunk)
                digest.update(chunk)
    except (NotImplementedError, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise UnsafeArtifactError(f"'{_clip(info.filename)}' cannot be read ({exc})") from None
    if seen != info.file_size:
        raise UnsafeArtifactError(
            f"'{_clip(info.filename)}' holds {seen} bytes but declares {info.file_size}"
        )
    return digest.digest()


def _read_limited(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """A member's bytes, never more than ``limit`` (whatever its header claims)."""
    try:
        with archive.open(info) as stream:
            data = stream.read(limit + 1)
    except (NotImplementedError, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise UnsafeArtifactError(f"'{_clip(info.filename)}' cannot be read ({exc})") from None
    if len(data) > limit:
        raise UnsafeArtifactError(f"'{_clip(info.filename)}' is larger than {limit} bytes")
    return data


def _read_schema(archive: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo]) -> Any:
    info = infos.get("schema.json")
    if info is None:
        raise UnsafeArtifactError("not a skops archive (no schema.json)")
    if info.file_size > MAX_SCHEMA_BYTES:
        raise UnsafeArtifactError(
            f"the artifact's schema.json is larger than {MAX_SCHEMA_BYTES} bytes"
        )
    text = _read_limited(archive, info, MAX_SCHEMA_BYTES)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UnsafeArtifactError(f"not a skops archive (schema.json: {_clip(str(exc))})") from None


# --- the object tree -------------------------------------------------------------------------


class _SchemaChecker:
    """Walks ``schema.json`` the way skops' ``get_tree`` does and refuses anything unknown.

    Attributes:
        types: The type names accepted (passed to skops as ``trusted``).
        files: Members the tree reads, with their kind (``npy``, ``npz``).
    """

    def __init__(self, allow: AllowList) -> None:
        self.allow = allow
        self.types: set[str] = set()
        self.files: dict[str, str] = {}
        self.untrusted: set[str] = set()
        self._ids: dict[int, list[dict[str, Any]]] = {}
        self._readers: dict[str, Any] = {}
        self._loaders: dict[str, Callable[[dict[str, Any], str, int], None]] = {
            "ObjectNode": self._object,
            "DictNode": self._dict,
            "ListNode": self._sequence,
            "TupleNode": self._sequence,
            "SetNode": self._sequence,
            "JsonNode": self._json,
            "TypeNode": self._type,
            "NdArrayNode": self._ndarray,
            "MaskedArrayNode": self._masked,
            "DTypeNode": self._dtype,
            "SparseMatrixNode": self._sparse,
            "RandomStateNode": self._random_state,
            "RandomGeneratorNode": self._generator,
            "TreeNode": self._reduce,
            "LossNode": self._reduce,
            "SliceNode": self._slice,
        }

    def check(self, schema: Any) -> None:
        """Checks the whole tree.

        Raises:
            UnsafeArtifactError: The first structural problem, or every untrusted type.
        """
        if not isinstance(schema, dict):
            raise UnsafeArtifactError("not a skops archive (schema.json is not an object)")
        protocol = schema.get("protocol")
        if type(protocol) is not int or protocol != SKOPS_PROTOCOL:
            raise UnsafeArtifactError(
                f"the artifact was written with skops protocol {_clip(repr(protocol))}; only "
                f"protocol {SKOPS_PROTOCOL} (skops 0.16) is accepted: re-save it with skops 0.16"
            )
        if schema.get("__loader__") != "ObjectNode":
            raise UnsafeArtifactError("the artifact's top-level object is not a model")
        self.node(schema, 0, root=True)
        if self.untrusted:
            listed = sorted(self.untrusted)
            shown = ", ".join(_clip(n) for n in listed[:MAX_LISTED])
            more = f" and {len(listed) - MAX_LISTED} more" if len(listed) > MAX_LISTED else ""
            raise UnsafeArtifactError(
                f"the artifact contains types that are not on the allow-list: {shown}{more}",
                details={"untrusted_types": [_clip(n) for n in listed[:MAX_LISTED]]},
            )
        root = f"{schema['__module__']}.{schema['__class__']}"
        if root not in self.allow.estimators:
            raise UnsafeArtifactError(
                f"the artifact's top-level object is {_clip(root)}, not a scikit-learn estimator"
            )

    def node(self, state: Any, depth: int, *, root: bool = False) -> str:
        """Checks one node and its children; returns its loader."""
        if depth > MAX_DEPTH:
            raise UnsafeArtifactError(f"the artifact nests objects more than {MAX_DEPTH} deep")
        if not isinstance(state, dict) or not isinstance(state.get("__loader__"), str):
            raise UnsafeArtifactError("malformed skops node (no loader)")
        loader = state["__loader__"]
        module, cls = state.get("__module__"), state.get("__class__")
        if not isinstance(module, str) or not isinstance(cls, str):
            raise UnsafeArtifactError(f"malformed skops node ({_clip(loader)} without a type)")
        if (state.keys() >= _ROOT_KEYS) != root or (not root and _ROOT_KEYS & state.keys()):
            raise UnsafeArtifactError("malformed skops node (protocol keys out of place)")
        self._same_object_same_content(state)
        handler = self._loaders.get(loader)
        if handler is None:
            raise UnsafeArtifactError(
                f"the artifact uses the skops loader {_clip(loader)} (for {_clip(module)}."
                f"{_clip(cls)}), which is not accepted (only loaders of plain data and of "
                "scikit-learn objects are; the others call functions or methods)"
            )
        handler(state, f"{module}.{cls}", depth + 1)
        return loader

    def _same_object_same_content(self, state: dict[str, Any]) -> None:
        # skops builds a node once per ``__id__`` and reuses it wherever the id recurs, whatever
        # the other occurrences hold. Every occurrence is checked where it stands, and
        # :meth:`check_shared_ids` then requires them all to be the same object (identical once
        # the ids of their parts, which differ between two dumps of one object, are set aside),
        # so no checked value can stand where a different one is loaded.
        if "__id__" not in state:
            return
        saved = state["__id__"]
        if type(saved) is not int:
            raise UnsafeArtifactError("malformed skops node (an object id is not an integer)")
        self._ids.setdefault(saved, []).append(state)

    def check_shared_ids(self, contents: dict[str, bytes]) -> None:
        """Refuses an id shared by nodes that are not the same object.

        Args:
            contents: Each member's content hash (a member stands for its content: two dumps
                of one array are two members with the same bytes).

        Raises:
            UnsafeArtifactError: Two nodes with one id differ.
        """
        digests: dict[int, bytes] = {}
        for states in self._ids.values():
            # Most repeats are equal outright (ids included); every occurrence was checked, so
            # equality's 1 == True cannot hide a difference (those fields are type-checked).
            first = states[0]
            differing = [s for s in states[1:] if s != first]
            if differing and len({_digest(s, digests, contents) for s in [first, *differing]}) > 1:
                raise UnsafeArtifactError("the artifact reuses an object id for different contents")

    def _keys(self, state: dict[str, Any], name: str, allowed: Iterable[str]) -> None:
        extra = set(state) - _COMMON_KEYS - _ROOT_KEYS - set(allowed)  # root keys: see node()
        if extra:
            raise UnsafeArtifactError(
                f"malformed skops node for {_clip(name)} (unexpected {_clip(sorted(extra)[0])})"
            )

    def _trust(self, name: str, allowed: frozenset[str] | set[str]) -> None:
        if name in allowed and not _TESTING_MODULE.search(name.rpartition(".")[0]):
            self.types.add(name)
        else:
            self.untrusted.add(name)

    def _child(self, state: dict[str, Any], key: str, depth: int) -> str:
        if key not in state:
            raise UnsafeArtifactError(f"malformed skops node (no {key})")
        return self.node(state[key], depth)

    def _content(self, state: dict[str, Any]) -> dict[str, Any]:
        content = state.get("content")
        if not isinstance(content, dict):
            raise UnsafeArtifactError("malformed skops node (content is not an object)")
        return content

    # Loaders ----------------------------------------------------------------------------------

    def _object(self, state: dict[str, Any], name: str, depth: int) -> None:
        self._keys(state, name, ["content"])
        if name == _FUNCTION_TRANSFORMER:
            self.function_transformer(state, depth)
            return
        self._trust(name, self.allow.objects)
        if "content" in state:
            self.node(state["content"], depth)
        for parameter, values in self.allow.restricted_parameters.get(name, {}).items():
            self._restricted(state, name, parameter, values)

    def _restricted(
        self, state: dict[str, Any], name: str, parameter: str, values: list[Any]
    ) -> None:
        attrs = state.get("content")
        found = None
        if isinstance(attrs, dict) and attrs.get("__loader__") == "DictNode":
            value = self._content(attrs).get(parameter)
            if isinstance(value, dict) and value.get("__loader__") == "JsonNode":
                found = (json.loads(value["content"]),)
        if found is None or found[0] not in values:
            shown = ", ".join(json.dumps(v) for v in values)
            why = _RESTRICTED_REASONS.get(
                parameter, "other values read or write files on the server"
            )
            raise UnsafeArtifactError(
                f"{_clip(name.rpartition('.')[2])}.{parameter} must be {shown} in a served model: "
                f"{why}"
            )

    def function_transformer(self, state: dict[str, Any], depth: int) -> None:
        """Accepts a FunctionTransformer only as scikit-learn's HistGradientBoosting stores it.

        Its ``func`` must be ``functools.partial(check_array, ...)`` with only ``dtype`` (a list
        of numpy scalar types) and ``ensure_all_finite`` (a boolean) bound, and it may hold no
        inverse function or extra arguments. Any other function is refused.
        """
        refusal = UnsafeArtifactError(
            "FunctionTransformer runs a function named by the file and is refused (the only "
            "accepted one is the check_array step scikit-learn's HistGradientBoosting stores)",
            details={"untrusted_types": [_FUNCTION_TRANSFORMER]},
        )
        attrs = state.get("content")
        if not isinstance(attrs, dict) or attrs.get("__loader__") != "DictNode":
            raise refusal
        values = self._content(attrs)
        for key in _FUNCTION_TRANSFORMER_NONE:
            if not _is_json(values.get(key), None):
                raise refusal
        func = values.get("func")
        if not isinstance(func, dict) or func.get("__loader__") != "PartialNode":
            raise refusal
        self._check_array_partial(func, depth, refusal)
        self.types.add(_FUNCTION_TRANSFORMER)
        self._dict(attrs, "builtins.dict", depth, skip={"func"})

    def _check_array_partial(
        self, func: dict[str, Any], depth: int, refusal: UnsafeArtifactError
    ) -> None:
        self._same_object_same_content(func)
        parts = func.get("content")
        if (
            f"{func.get('__module__')}.{func.get('__class__')}" != _PARTIAL
            or set(func) - _COMMON_KEYS != {"content"}
            or not isinstance(parts, dict)
            or set(parts) != {"func", "args", "kwds", "namespace"}
        ):
            raise refusal
        target = parts["func"]
        if (
            not isinstance(target, dict)
            or target.get("__loader__") != "FunctionNode"
            or f"{target.get('__module__')}.{target.get('__class__')}" != _CHECK_ARRAY
            or set(target) - _COMMON_KEYS
        ):
            raise refusal
        self._same_object_same_content(target)
        args, kwds = parts["args"], parts["kwds"]
        if (
            not isinstance(args, dict)
            or args.get("__loader__") != "TupleNode"
            or args.get("content") != []
            or not _is_json(parts["namespace"], None)
        ):
            raise refusal
        if not isinstance(kwds, dict) or kwds.get("__loader__") != "DictNode":
            raise refusal
        bound = self._content(kwds)
        if not set(bound) <= _CHECK_ARRAY_KWARGS:
            raise refusal
        if "ensure_all_finite" in bound and not (
            _is_json(bound["ensure_all_finite"], True)
            or _is_json(bound["ensure_all_finite"], False)
        ):
            raise refusal
        dtype = bound.get("dtype")
        if dtype is not None and not self._is_list_of_scalar_types(dtype):
            raise refusal
        self.node(args, depth)
        self.node(kwds, depth)
        self.types |= {_PARTIAL, _CHECK_ARRAY}

    def _is_list_of_scalar_types(self, state: Any) -> bool:
        if not isinstance(state, dict) or state.get("__loader__") != "ListNode":
            return False
        items = state.get("content")
        return isinstance(items, list) and all(
            isinstance(item, dict)
            and item.get("__loader__") == "TypeNode"
            and f"{item.get('__module__')}.{item.get('__class__')}" in self.allow.numpy_scalars
            for item in items
        )

    def _dict(
        self,
        state: dict[str, Any],
        name: str,
        depth: int,
        skip: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        self._keys(state, name, ["content", "key_types"])
        self._trust(name, self.allow.dicts)
        content = self._content(state)
        key_types = state.get("key_types")
        if not isinstance(key_types, dict) or key_types.get("__loader__") != "ListNode":
            raise UnsafeArtifactError("malformed skops dict (key types are not a list)")
        keys = key_types.get("content")
        if not isinstance(keys, list) or len(keys) != len(content):
            raise UnsafeArtifactError("malformed skops dict (one key type per key)")
        for item in keys:
            if not isinstance(item, dict) or item.get("__loader__") != "TypeNode":
                raise UnsafeArtifactError("malformed skops dict (a key type is not a type)")
        self.node(key_types, depth)
        for key, value in content.items():
            if key not in skip:
                self.node(value, depth)

    def _sequence(self, state: dict[str, Any], name: str, depth: int) -> None:
        self._keys(state, name, ["content"])
        kind = {
            "ListNode": "builtins.list",
            "TupleNode": "builtins.tuple",
            "SetNode": "builtins.set",
        }
        self._trust(name, {kind[state["__loader__"]]})
        items = state.get("content")
        if not isinstance(items, list):
            raise UnsafeArtifactError("malformed skops sequence (content is not a list)")
        for item in items:
            self.node(item, depth)

    def _json(self, state: dict[str, Any], name: str, depth: int) -> None:
        self._keys(state, name, ["content", "is_json"])
        self._trust(name, {"builtins.str"})
        text = state.get("content")
        if not isinstance(text, str) or state.get("is_json") is not True:
            raise UnsafeArtifactError("malformed skops value (not JSON text)")
        try:
            json.loads(text)
        except (ValueError, RecursionError):
            raise UnsafeArtifactError("malformed skops value (invalid JSON)") from None

    def _type(self, state: dict[str, Any], name: str, depth: int) -> None:
        self._keys(state, name, [])
        self._trust(name, self.allow.scalar_types)

    def _ndarray(self, state: dict[str, Any], name: str, depth: int) -> None:
        kind = state.get("type")
        if kind == "numpy":
            self._keys(state, name, ["type", "file"])
            self._trust(name, {_NDARRAY} | self.allow.numpy_scalars)
            self._file(state, "npy")
        elif kind == "json":
            self._keys(state, name, ["type", "content", "shape"])
            self._trust(name, {_NDARRAY})
            self._sequence_content(state, depth)
            self._child(state, "shape", depth)
        else:
            raise UnsafeArtifactError("malformed skops array (unknown storage type)")

    def _sequence_content(self, state: dict[str, Any], depth: int) -> None:
        items = state.get("content")
        if not isinstance(items, list):
            raise UnsafeArtifactError("malformed skops array (content is not a list)")
        for item in items:
            self.node(item, depth)

    def _masked(self, state: dict[str, Any], name: str, depth: int) -> None:
        self._keys(state, name, ["content"])
        self._trust(name, {_MASKED})
        content = self._content(state)
        if set(content) != {"data", "mask"}:
            raise UnsafeArtifactError("malformed skops masked array")
        self.node(content["data"], depth)
        self.node(content["mask"], depth)

    def _dtype(self, state: dict[str, Any], name: str, depth: int) -> None:
        self._keys(state, name, ["content"])
        self._trust(name, {"numpy.dtype"})
        if self._child(state, "content", depth) != "NdArrayNode":
            raise UnsafeArtifactError("malformed skops dtype")

    def _sparse(self, state: dict[str, Any], name: str, depth: int) -> None:
        self._keys(state, name, ["type", "file"])
        self._trust(name, self.allow.sparse)
        if state.get("type") != "scipy":
            raise UnsafeArtifactError("malformed skops sparse matrix")
        self._file(state, "npz")

    def _random_state(self, state: dict[str, Any], name: str, depth: int) -> None:
        self._keys(state, name, ["content"])
        self._trust(name, {_RANDOM_STATE})
        self._child(state, "content", depth)

    def _generator(self, state: dict[str, Any], name: str, depth: int) -> None:
        # skops calls numpy.random.<name> with the name stored as plain data in the state.
        self._keys(state, name, ["content"])
        self._trust(name, {_GENERATOR})
        content = self._content(state)
        if set(content) != {"bit_generator", "seed_seq"}:
            raise UnsafeArtifactError("malformed skops random generator")
        try:
            holder = content["bit_generator"]["content"]["bit_generator"]
            bit_generator = json.loads(holder["content"]) if _is_json_node(holder) else None
        except (KeyError, TypeError, ValueError):
            bit_generator = None
        if not isinstance(bit_generator, str) or bit_generator not in self.allow.bit_generators:
            self.untrusted.add(f"numpy.random.{_clip(str(bit_generator))}")
        self.node(content["bit_generator"], depth)
        self.node(content["seed_seq"], depth)

    def _reduce(self, state: dict[str, Any], name: str, depth: int) -> None:
        # TreeNode and LossNode call the named class with the stored arguments.
        self._keys(state, name, ["__reduce__", "content"])
        allowed = self.allow.trees if state["__loader__"] == "TreeNode" else self.allow.losses
        self._trust(name, allowed)
        reduce = state.get("__reduce__")
        if not isinstance(reduce, dict) or set(reduce) != {"args"}:
            raise UnsafeArtifactError("malformed skops reduce node")
        self.node(reduce["args"], depth)
        self._child(state, "content", depth)

    def _slice(self, state: dict[str, Any], name: str, depth: int) -> None:
        self._keys(state, name, ["content"])
        self._trust(name, {"builtins.slice"})
        content = self._content(state)
        if set(content) != {"start", "stop", "step"} or not all(
            value is None or type(value) is int for value in content.values()
        ):
            raise UnsafeArtifactError("malformed skops slice")

    def _file(self, state: dict[str, Any], kind: str) -> None:
        member = state.get("file")
        if (
            not isinstance(member, str)
            or not member.endswith(f".{kind}")
            or member == "schema.json"
        ):
            raise UnsafeArtifactError(f"malformed skops node (not a .{kind} member)")
        if self.files.setdefault(member, kind) != kind:
            raise UnsafeArtifactError(f"'{_clip(member)}' is read as two kinds of data")
        # skops builds a member once per object id that reads it: a member read by two objects
        # would be expanded twice (or thousands of times) while its size is counted once.
        reader = state.get("__id__")
        if member in self._readers and (type(reader) is not int or self._readers[member] != reader):
            raise UnsafeArtifactError(
                f"'{_clip(member)}' is read by more than one object of the schema; each array "
                "file may belong to one object (loading would build it once per reader, past "
                "its declared size)"
            )
        self._readers[member] = reader


def _digest(value: Any, memo: dict[int, bytes], contents: dict[str, bytes]) -> bytes:
    """A hash of a node without its ``__id__`` keys, members by content (each object once)."""
    if isinstance(value, dict | list):
        found = memo.get(id(value))
        if found is None:
            if isinstance(value, dict):
                digest = hashlib.sha256(b"{")
                for key in sorted(value):
                    if key != "__id__":
                        item = value[key]
                        digest.update(_scalar(key))
                        digest.update(
                            contents[item] if key == "file" else _digest(item, memo, contents)
                        )
            else:
                digest = hashlib.sha256(b"[")
                for item in value:
                    digest.update(_digest(item, memo, contents))
            found = memo[id(value)] = b"h" + digest.digest()
        return found
    return _scalar(value)


def _scalar(value: Any) -> bytes:
    """An unambiguous encoding of a JSON scalar (type tag, length, text)."""
    text = value.encode() if isinstance(value, str) else json.dumps(value).encode()
    tag = b"s" if isinstance(value, str) else b"j"
    return tag + str(len(text)).encode() + b":" + text


def _is_json_node(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("__loader__") == "JsonNode"
        and isinstance(value.get("content"), str)
    )


def _is_json(value: Any, expected: Any) -> bool:
    """Whether ``value`` is a JsonNode holding exactly ``expected`` (None, True, False)."""
    if not _is_json_node(value):
        return False
    try:
        return json.loads(value["content"]) is expected
    except ValueError:
        return False


# --- declared sizes --------------------------------------------------------------------------


class _ArraySizes:
    """Adds up what the members declare, checking each ``.npy`` header against the zip.

    Attributes:
        expanded: Uncompressed bytes of every member (nested ``.npz`` members included).
        arrays: Bytes of every array (shape × itemsize).
    """

    def __init__(
        self, archive: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], limit: int
    ) -> None:
        self.archive = archive
        self.infos = infos
        self.limit = limit
        self.expanded = 0
        self.arrays = 0

    def measure(self, files: dict[str, str]) -> None:
        """Checks every member the tree reads and that no other member is present.

        Raises:
            UnsafeArtifactError: A missing or extra member, a lying header, or over the cap.
        """
        extra = set(self.infos) - set(files) - {"schema.json"}
        if extra:
            raise UnsafeArtifactError(
                f"the artifact holds files its schema does not use: {_clip(sorted(extra)[0])}"
            )
        missing = set(files) - set(self.infos)
        if missing:
            raise UnsafeArtifactError(
                f"the artifact's schema reads a missing file: {_clip(sorted(missing)[0])}"
            )
        self._add(self.infos["schema.json"].file_size, 0)
        for name in sorted(files):
            info = self.infos[name]
            if files[name] == "npy":
                self._npy(self.archive, info)
            else:
                self._npz(info)

    def _add(self, expanded: int, arrays: int) -> None:
        self.expanded += expanded
        self.arrays += arrays
        if max(self.expanded, self.arrays) > self.limit:
            raise UnsafeArtifactError(
                f"the artifact declares more than {self.limit} bytes of data once expanded "
                "(SYNAPSE_MAX_MODEL_BYTES); it is refused before anything is decompressed"
            )

    def _npy(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        prefix = _read_prefix(archive, info, 12 + MAX_NPY_HEADER)
        offset, nbytes = npy_data_size(prefix, info.filename)
        if offset + nbytes != info.file_size:
            raise UnsafeArtifactError(
                f"'{_clip(info.filename)}' declares an array of {nbytes} bytes but the file "
                f"holds {max(0, info.file_size - offset)}"
            )
        self._add(info.file_size, nbytes)

    def _npz(self, info: zipfile.ZipInfo) -> None:
        # A sparse matrix: a zip inside the zip. Its own declared sizes count too.
        self._add(info.file_size, 0)
        inner_bytes = _read_limited(self.archive, info, info.file_size)
        _check_directory(inner_bytes, max_members=8)
        with zipfile.ZipFile(io.BytesIO(inner_bytes)) as inner:
            inner_infos = _member_infos(inner, self.limit)
            for name, member in inner_infos.items():
                if not name.endswith(".npy"):
                    raise UnsafeArtifactError(f"'{_clip(info.filename)}' is not a sparse matrix")
                self._npy(inner, member)
                _verify_member(inner, member)  # CRC and size; its hash is its npz's
        check_sparse(inner_bytes, _clip(info.filename))


def _read_prefix(archive: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> bytes:
    try:
        with archive.open(info) as stream:
            return stream.read(min(size, info.file_size))
    except (NotImplementedError, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise UnsafeArtifactError(f"'{_clip(info.filename)}' cannot be read ({exc})") from None


def npy_data_size(prefix: bytes, name: str = "array") -> tuple[int, int]:
    """The data offset and byte size an ``.npy`` header declares (numpy's own header reader).

    Args:
        prefix: The first bytes of the ``.npy`` file (at least magic and header).
        name: The member name, for messages.

    Raises:
        UnsafeArtifactError: Not an ``.npy``, an oversized or unreadable header, object dtype.
    """
    if not prefix.startswith(_NPY_MAGIC) or len(prefix) < 12:
        raise UnsafeArtifactError(f"'{_clip(name)}' is not a numpy array file")
    major = prefix[6]
    if major == 1:
        offset = 10 + struct.unpack("<H", prefix[8:10])[0]
    elif major == 2:
        offset = 12 + struct.unpack("<I", prefix[8:12])[0]
    else:
        raise UnsafeArtifactError(f"'{_clip(name)}' uses numpy file format {major}")
    if offset > len(prefix) or offset > 12 + MAX_NPY_HEADER:
        raise UnsafeArtifactError(f"'{_clip(name)}' has an oversized or truncated header")
    import numpy as np
    import numpy.lib.format as npy_format

    simple = _SIMPLE_NPY_HEADER.match(prefix[10 if major == 1 else 12 : offset])
    if simple is not None:  # what np.save writes for a plain dtype: read without ast
        try:
            dtype = np.dtype(simple.group(1).decode("latin1"))
        except TypeError as exc:
            raise UnsafeArtifactError(f"'{_clip(name)}' has an unreadable header ({exc})") from None
        shape = tuple(int(dim) for dim in re.findall(rb"\d+", simple.group(3)))
        return offset, _array_nbytes(name, shape, dtype)
    stream = io.BytesIO(prefix[:offset])
    try:
        version = npy_format.read_magic(stream)
        reader = (
            npy_format.read_array_header_1_0
            if version == (1, 0)
            else npy_format.read_array_header_2_0
        )
        shape, _, dtype = reader(stream, max_header_size=MAX_NPY_HEADER)
    except (ValueError, TypeError, SyntaxError, struct.error) as exc:
        raise UnsafeArtifactError(f"'{_clip(name)}' has an unreadable header ({exc})") from None
    return offset, _array_nbytes(name, shape, dtype)


def _array_nbytes(name: str, shape: tuple[int, ...], dtype: Any) -> int:
    if dtype.hasobject:
        raise UnsafeArtifactError(f"'{_clip(name)}' holds Python objects (pickled data)")
    count = 1
    for dim in shape:
        count *= dim
    return count * dtype.itemsize


def _clip(text: str, size: int = 120) -> str:
    """Text from the file, shortened and stripped of control characters for messages."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return cleaned if len(cleaned) <= size else cleaned[: size - 1] + "…"
