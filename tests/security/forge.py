"""Builds forged skops files from real ones, the way an attacker edits ``schema.json``.

Nothing here is committed as opaque bytes: every forged file starts from ``skops.io.dumps`` of a
real fitted model and changes the schema or the members in the open.
"""

from __future__ import annotations

import io
import itertools
import json
import zipfile
from dataclasses import dataclass
from typing import Any

_ids = itertools.count(10**15)


def fitted_model() -> Any:
    """A small real LogisticRegression (3 features, 2 classes)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(60, 3))
    return LogisticRegression().fit(X, (X[:, 0] + X[:, 1] > 0).astype(int))


def dumps(model: Any) -> bytes:
    """A real skops file of ``model``."""
    import skops.io as sio

    return sio.dumps(model)


def unpack(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The schema and the other members of a skops file."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    return json.loads(files.pop("schema.json")), files


def pack(
    schema: dict[str, Any],
    files: dict[str, bytes],
    compression: int = zipfile.ZIP_STORED,
) -> bytes:
    """A skops file from a schema and members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        archive.writestr("schema.json", json.dumps(schema))
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def node(loader: str, name: str, **fields: Any) -> dict[str, Any]:
    """A skops node for ``module.Class`` ``name`` read by ``loader``."""
    module, _, cls = name.rpartition(".")
    return {"__class__": cls, "__module__": module, "__loader__": loader, "__id__": next(_ids)} | (
        fields
    )


def value(python: Any) -> dict[str, Any]:
    """A JsonNode holding ``python``."""
    return node("JsonNode", "builtins.str", content=json.dumps(python), is_json=True)


def type_node(name: str) -> dict[str, Any]:
    """A TypeNode naming ``name``."""
    return node("TypeNode", name)


def tuple_of(*items: dict[str, Any]) -> dict[str, Any]:
    """A TupleNode of nodes."""
    return node("TupleNode", "builtins.tuple", content=list(items))


def list_of(*items: dict[str, Any]) -> dict[str, Any]:
    """A ListNode of nodes."""
    return node("ListNode", "builtins.list", content=list(items))


def dict_of(**items: dict[str, Any]) -> dict[str, Any]:
    """A DictNode with string keys."""
    keys = list_of(*[type_node("builtins.str") for _ in items])
    return node("DictNode", "builtins.dict", content=dict(items), key_types=keys)


def call(name: str, *args: Any, loader: str = "ConstructorFromReduceNode") -> dict[str, Any]:
    """A node that makes skops call ``name(*args)`` (when the name is trusted)."""
    if loader == "ConstructorFromReduceNode":
        return node(loader, name, content=tuple_of(*[value(a) for a in args]))
    if loader == "LossNode":
        return node(
            loader,
            name,
            __reduce__={"args": tuple_of(*[value(a) for a in args])},
            content=dict_of(),
        )
    if loader == "ListNode":
        return node(loader, name, content=[value(a) for a in args])
    raise ValueError(loader)


def with_attribute(
    data: bytes, node_: dict[str, Any], attr: str = "gadget_", files: dict[str, bytes] | None = None
) -> bytes:
    """``data`` with one extra attribute on the top-level estimator (and extra members)."""
    schema, members = unpack(data)
    attrs = schema["content"]
    attrs["content"][attr] = node_
    attrs["key_types"]["content"].append(type_node("builtins.str"))
    return pack(schema, members | (files or {}))


def edit_schema(data: bytes, edit: Any) -> bytes:
    """``data`` with ``edit(schema)`` applied (it changes the dict in place)."""
    schema, members = unpack(data)
    edit(schema)
    return pack(schema, members)


def attribute(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The node of attribute ``name`` of the top-level estimator."""
    return schema["content"]["content"][name]


def skops_types(data: bytes) -> list[str]:
    """What skops itself reports as untrusted in ``data`` (a naive loader would trust these)."""
    import skops.io as sio

    return sio.get_untrusted_types(data=data)


# --- hand-written zips (for declared sizes that lie) ------------------------------------------


def deflate_zeros(prefix: bytes, zeros: int, segment: int = 1 << 20) -> tuple[bytes, int, int]:
    """A raw deflate stream of ``prefix`` then ``zeros`` zero bytes, built without holding them.

    One fully flushed segment of compressed zeros is repeated, so a 1 GiB stream costs one MiB
    of work. Returns the stream, the CRC-32 and the uncompressed size.
    """
    import zlib

    if zeros % segment:
        raise ValueError("zeros must be a multiple of segment")
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH)]
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeated = block.compress(bytes(segment)) + block.flush(zlib.Z_FULL_FLUSH)
    parts.append(repeated * (zeros // segment))
    parts.append(zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH))
    crc = zlib.crc32(prefix)
    chunk = bytes(segment)
    for _ in range(zeros // segment):
        crc = zlib.crc32(chunk, crc)
    return b"".join(parts), crc, len(prefix) + zeros


@dataclass
class Entry:
    """One zip member as it will be written: name, stored bytes and what the headers say."""

    name: str
    data: bytes
    crc: int
    size: int
    method: int = 0


def stored(name: str, data: bytes) -> Entry:
    """A member stored as is (headers tell the truth)."""
    import zlib

    return Entry(name, data, zlib.crc32(data), len(data))


def write_zip(entries: list[Entry], declared_count: int | None = None) -> bytes:
    """A zip with exactly these headers (sizes and CRCs as given, true or not)."""
    import struct

    out = bytearray()
    directory = bytearray()
    for entry in entries:
        name = entry.name.encode()
        offset = len(out)
        out += struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            20,
            0,
            entry.method,
            0,
            0x21,
            entry.crc,
            len(entry.data),
            entry.size,
            len(name),
            0,
        )
        out += name + entry.data
        directory += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            entry.method,
            0,
            0x21,
            entry.crc,
            len(entry.data),
            entry.size,
            len(name),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        directory += name
    count = len(entries) if declared_count is None else declared_count
    end = struct.pack(
        "<IHHHHIIH",
        0x06054B50,
        0,
        0,
        min(count, 0xFFFF),
        min(count, 0xFFFF),
        len(directory),
        len(out),
        0,
    )
    return bytes(out + directory + end)


def npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    """The header np.save writes for an array of ``shape`` and ``descr``."""
    import numpy as np

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def entries_of(data: bytes) -> list[Entry]:
    """The members of a real skops file as stored entries."""
    schema, members = unpack(data)
    return [stored("schema.json", json.dumps(schema).encode())] + [
        stored(name, content) for name, content in members.items()
    ]


def entries_of_zip(data: bytes) -> list[Entry]:
    """The members of any zip (an ``.npz``, say) as stored entries."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [stored(name, archive.read(name)) for name in archive.namelist()]
