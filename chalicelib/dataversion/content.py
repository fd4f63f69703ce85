"""What a new version is made of: the one pass over its bytes, and the request that names it.

Content is streamed once: every chunk updates the sha256, the row counter, the schema sampler
and the column profile (:class:`ContentObserver`). Both ways in, inline data
(:meth:`~chalicelib.dataversion.versioning.DatasetVersioningEngine.store_version`) and uploaded
objects (:mod:`chalicelib.dataversion.ingest`), observe their bytes with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from chalicelib.core.errors import ValidationError
from chalicelib.dataversion.models import (
    DatasetFormat,
    DatasetSchema,
    DatasetVersion,
    TransformationRecord,
)
from chalicelib.dataversion.schema import ContentInspector
from chalicelib.dataversion.storage import CHUNK_BYTES

DataSource = bytes | bytearray | memoryview | str | BinaryIO | Iterable[bytes]


@dataclass
class VersionOutcome:
    """The result of storing content.

    Attributes:
        version: The new version, or the existing one with identical content.
        created: Whether a new version was written.
    """

    version: DatasetVersion
    created: bool


@dataclass
class VersionRequest:
    """Everything about a new version except its bytes.

    Attributes:
        schema: A schema the content must match (else the dataset's declared one, else inferred).
        parent_version_ids: Versions it derives from.
        transformation: The transformation that produced it.
        tags: Labels.
        created_by: Principal.
        format: Content format (default: the dataset's).
        source_key: The incoming key for S3 ingests.
    """

    schema: DatasetSchema | None = None
    parent_version_ids: list[str] = field(default_factory=list)
    transformation: TransformationRecord | None = None
    tags: dict[str, str] = field(default_factory=dict)
    created_by: str = ""
    format: DatasetFormat | None = None
    source_key: str | None = None


@dataclass
class ScannedContent:
    """What one pass over the bytes learned."""

    sha256: str
    size: int
    row_count: int | None
    schema: DatasetSchema | None
    sampled_rows: int | None
    profile: bytes | None = None
    sample: Any = None  # the records profiled (a reader.RecordSample), for the drift limits
    csv_head: tuple[list[str], list[list[str]]] | None = None  # a CSV's header, typed rows


def iter_chunks(data: Any, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Yields ``data`` in chunks: bytes-like, text, a binary file object or an iterable of bytes.

    Raises:
        ValidationError: Something that is not bytes.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
        for start in range(0, len(view), chunk_bytes):
            yield bytes(view[start : start + chunk_bytes])
        return
    if hasattr(data, "read"):
        while True:
            chunk = data.read(chunk_bytes)
            if not chunk:
                return
            if not isinstance(chunk, bytes | bytearray):
                raise ValidationError("file objects must be opened in binary mode")
            yield bytes(chunk)
    for chunk in data:
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise ValidationError("data chunks must be bytes")
        yield bytes(chunk)


class ContentObserver:
    """Hashes and inspects chunks as they pass (and draws the records profiled).

    Args:
        fmt: The content's format.
        sample_rows: Rows used for schema inference.
        profile_rows: Records drawn for the column profile (0: no profile).
    """

    def __init__(self, fmt: DatasetFormat, sample_rows: int, profile_rows: int = 0) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self.format = fmt
        self.inspector = ContentInspector(fmt, sample_rows, uniform_rows=profile_rows)
        self.profiled = profile_rows > 0

    def watch(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Yields ``chunks`` unchanged, observing each on the way."""
        for chunk in chunks:
            self.see(chunk)
            yield chunk

    def see(self, chunk: bytes) -> None:
        """Observes one chunk."""
        self.digest.update(chunk)
        self.size += len(chunk)
        self.inspector.feed(chunk)

    def result(self) -> ScannedContent:
        """What the pass learned (call once, after the last chunk)."""
        rows, schema, sampled = self.inspector.finish()
        profile, sample = None, None
        if self.inspector.uniform is not None and self.inspector.active:
            from chalicelib.dataversion.profile import encode_profile, profile_of_scan

            found, sample = profile_of_scan(
                self.inspector.uniform, self.inspector.records, self.format
            )
            profile = encode_profile(found)
        elif self.profiled and self.inspector.parquet is not None:
            from chalicelib.dataversion.profile import encode_profile, footer_profile

            profile = encode_profile(footer_profile(self.inspector.parquet))
        digest = self.digest.hexdigest()
        head = self.inspector.csv_head
        return ScannedContent(digest, self.size, rows, schema, sampled, profile, sample, head)
