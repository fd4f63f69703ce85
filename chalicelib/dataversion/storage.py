"""S3 storage of dataset content (the dataversion domain's only S3 code).

Layout of the data bucket:

* ``incoming/<dataset name or id>/<file>``: uploads; each new object triggers an ingest.
* ``cas/sha256/ab/cdef…``: content-addressed version bytes, written once per distinct content,
  copied from ``incoming/`` or ``tmp/``.
* ``cas/sha256/ab/cdef…/<dataset_id>``: a direct upload, PUT there by a client that declared the
  SHA-256 (S3 checks it; ``If-None-Match: *`` means such a PUT can create but never replace). The
  address is the dataset's own, so whether another dataset holds the same content never changes
  the answer. Direct PUTs carry the dataset in their metadata and also trigger an ingest.
* ``tmp/<uuid>``: inline uploads being hashed; copied into ``cas/`` and deleted.
* ``rejected/<path>``: incoming files that could not become a version (reason in DynamoDB).
"""

from __future__ import annotations

import base64
import queue
import re
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chalicelib.core import aws
from chalicelib.core.config import get_settings

CHUNK_BYTES = 8 * 1024 * 1024
PREFETCH_CHUNKS = 2
COPY_PART_BYTES = 512 * 1024 * 1024
SINGLE_COPY_LIMIT = 5 * 1024 * 1024 * 1024
CAS_PREFIX = "cas/sha256/"
TMP_PREFIX = "tmp/"
INCOMING_PREFIX = "incoming/"
REJECTED_PREFIX = "rejected/"


# User metadata of a direct (declared SHA-256) upload, signed into its presigned URL.
META_DATASET = "synapse-dataset"
META_CREATED_BY = "synapse-created-by"
META_FILENAME = "synapse-filename"
_CAS_KEY = re.compile(r"^cas/sha256/([0-9a-f]{2})/([0-9a-f]{62})(?:/([A-Za-z0-9_-]{1,128}))?$")


def cas_key(sha256: str) -> str:
    """The content-addressed key of a digest: ``cas/sha256/ab/cdef…``."""
    return f"{CAS_PREFIX}{sha256[:2]}/{sha256[2:]}"


def direct_key(sha256: str, dataset_id: str) -> str:
    """Where a direct upload of ``sha256`` into ``dataset_id`` goes:
    ``cas/sha256/ab/cdef…/<dataset_id>``, an address no other dataset shares."""
    return f"{cas_key(sha256)}/{dataset_id}"


def digest_of(key: str) -> str | None:
    """The SHA-256 a content-addressed or direct-upload key stands for (``None`` for any other
    key)."""
    found = _CAS_KEY.match(key)
    return None if found is None else found.group(1) + found.group(2)


def dataset_of(key: str) -> str | None:
    """The dataset a direct-upload key belongs to (``None`` for any other key)."""
    found = _CAS_KEY.match(key)
    return None if found is None else found.group(3)


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD tells about an object.

    Attributes:
        key: The key.
        size: Content length.
        etag: ETag without quotes.
        version_id: S3 version id when the bucket is versioned.
        metadata: User metadata (``x-amz-meta-*`` without the prefix).
    """

    key: str
    size: int
    etag: str
    version_id: str | None
    metadata: dict[str, str] = field(default_factory=dict)


class DataStore:
    """Reads and writes dataset objects in the data bucket.

    Args:
        bucket: Bucket name (default: ``DATA_BUCKET``).
        chunk_bytes: Size of streamed reads and multipart parts (at least 5 MiB).
    """

    def __init__(self, bucket: str | None = None, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.bucket = bucket or get_settings().data_bucket
        self.chunk_bytes = max(chunk_bytes, 5 * 1024 * 1024)

    @property
    def s3(self) -> Any:
        return aws.client("s3")

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        """Size and ETag of ``key`` (``None`` when absent)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            found = self.s3.head_object(**kwargs)
        except self.s3.exceptions.ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        return ObjectInfo(
            key=key,
            size=int(found["ContentLength"]),
            etag=str(found.get("ETag", "")).strip('"'),
            version_id=found.get("VersionId") if version_id else None,
            metadata=dict(found.get("Metadata") or {}),
        )

    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""
        return self.head(key) is not None

    def iter_object(self, key: str, version_id: str | None = None) -> Iterator[bytes]:
        """Streams an object in ``chunk_bytes`` chunks (never the whole object in memory).

        A reader thread fetches the next chunks while the caller processes the current one
        (socket reads and sha256 both release the GIL), with at most ``PREFETCH_CHUNKS`` chunks
        waiting, so memory stays bounded whatever the object's size.
        """
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        body = self.s3.get_object(**kwargs)["Body"]
        chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=PREFETCH_CHUNKS)
        stop = threading.Event()
        reader = threading.Thread(
            target=_read_ahead, args=(body, self.chunk_bytes, chunks, stop), daemon=True
        )
        reader.start()
        try:
            while True:
                item = chunks.get()
                if isinstance(item, BaseException):
                    raise item
                if not item:
                    return
                yield item
        finally:
            stop.set()
            reader.join()
            body.close()

    def read(self, key: str) -> bytes:
        """The whole object (callers check the size first)."""
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Stores bytes at ``key``."""
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def upload_stream(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Streams chunks to a new temporary key (multipart above one chunk).

        Returns:
            The temporary key and the number of bytes written.
        """
        key = f"{TMP_PREFIX}{uuid.uuid4().hex}"
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        total = 0
        try:
            for chunk in chunks:
                total += len(chunk)
                buffer += chunk
                while len(buffer) >= self.chunk_bytes:
                    upload_id = upload_id or self._start_multipart(key)
                    parts.append(self._upload_part(key, upload_id, len(parts) + 1, buffer))
                    del buffer[: self.chunk_bytes]
            if upload_id is None:
                self.put(key, bytes(buffer))
                return key, total
            if buffer or not parts:
                parts.append(self._upload_part(key, upload_id, len(parts) + 1, buffer))
            self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            if upload_id is not None:
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return key, total

    def _start_multipart(self, key: str) -> str:
        return self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]

    def _upload_part(self, key: str, upload_id: str, number: int, buffer: bytearray) -> dict:
        body = bytes(buffer[: self.chunk_bytes])
        found = self.s3.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        return {"ETag": found["ETag"], "PartNumber": number}

    def copy(
        self, source_key: str, target_key: str, size: int, source_version: str | None = None
    ) -> None:
        """Server-side copy (no bytes pass through this process); multipart above 5 GiB."""
        source: dict[str, Any] = {"Bucket": self.bucket, "Key": source_key}
        if source_version:
            source["VersionId"] = source_version
        if size <= SINGLE_COPY_LIMIT:
            self.s3.copy_object(Bucket=self.bucket, Key=target_key, CopySource=source)
            return
        upload_id = self._start_multipart(target_key)
        parts = []
        for number, start in enumerate(range(0, size, COPY_PART_BYTES), start=1):
            end = min(start + COPY_PART_BYTES, size) - 1
            found = self.s3.upload_part_copy(
                Bucket=self.bucket,
                Key=target_key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource=source,
                CopySourceRange=f"bytes={start}-{end}",
            )
            parts.append({"ETag": found["CopyPartResult"]["ETag"], "PartNumber": number})
        self.s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=target_key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )

    def list_objects(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """(key, last modified) of every object under ``prefix`` (paginated)."""
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"], item["LastModified"]

    def delete(self, key: str) -> None:
        """Removes ``key`` (no error if absent)."""
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    def delete_if_unchanged(self, key: str, etag: str) -> bool:
        """Removes ``key`` only while it still holds the object with ``etag`` (a conditional
        DELETE, ``If-Match``): an object uploaded again to the same key meanwhile stays.

        Returns:
            Whether the object was deleted (``False``: replaced or already gone).
        """
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key, IfMatch=f'"{etag}"')
        except self.s3.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "PreconditionFailed" or _is_missing(exc):
                return False
            if code not in _CONDITION_UNSUPPORTED:
                raise
            current = self.head(key)  # an endpoint without conditional deletes
            if current is None or current.etag != etag:
                return False
            self.delete(key)
        return True

    def presign_put(self, key: str, expires: int | None = None) -> str:
        """A presigned PUT URL for exactly ``key``."""
        return self.s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=expires or get_settings().presign_seconds,
        )

    def presign_verified_put(
        self, key: str, sha256: str, metadata: dict[str, str], expires: int | None = None
    ) -> tuple[str, dict[str, str]]:
        """A presigned PUT that only creates ``key`` and only with content of digest ``sha256``.

        The checksum, ``If-None-Match: *`` and the metadata are signed into the URL, so the
        client must send exactly the returned headers: S3 refuses a body whose SHA-256 differs
        (``BadDigest``) and any PUT once the key exists (``412 PreconditionFailed``).

        Returns:
            The URL and the headers the PUT must carry.
        """
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        url = self.s3.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ChecksumSHA256": checksum,
                "IfNoneMatch": "*",
                "Metadata": metadata,
            },
            ExpiresIn=expires or get_settings().presign_seconds,
        )
        headers = {"x-amz-checksum-sha256": checksum, "If-None-Match": "*"}
        headers.update({f"x-amz-meta-{name}": value for name, value in metadata.items()})
        return url, headers

    def start_presigned_multipart(
        self, key: str, parts: int, expires: int | None = None
    ) -> tuple[str, list[str]]:
        """Starts a multipart upload of ``key`` and presigns a PUT URL for each part.

        Returns:
            The upload id and the part URLs (part numbers 1…``parts``).
        """
        upload_id = self._start_multipart(key)
        urls = [
            self.s3.generate_presigned_url(
                "upload_part",
                Params={
                    "Bucket": self.bucket,
                    "Key": key,
                    "UploadId": upload_id,
                    "PartNumber": number,
                },
                ExpiresIn=expires or get_settings().presign_seconds,
            )
            for number in range(1, parts + 1)
        ]
        return upload_id, urls

    def complete_multipart(self, key: str, upload_id: str, etags: list[tuple[int, str]]) -> None:
        """Completes a multipart upload from (part number, ETag) pairs.

        Raises:
            UnprocessableEntity: S3 refused the parts (unknown upload, wrong ETags, part too small).
        """
        from chalicelib.core.errors import UnprocessableEntity

        parts = [{"PartNumber": number, "ETag": etag} for number, etag in sorted(etags)]
        try:
            self.s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except self.s3.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise UnprocessableEntity(f"S3 refused to complete the upload: {code}") from None

    def presign_get(self, key: str, expires: int | None = None) -> str:
        """A presigned GET URL for ``key``."""
        return self.s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=expires or get_settings().presign_seconds,
        )


def _read_ahead(
    body: Any, size: int, chunks: queue.Queue[bytes | BaseException], stop: threading.Event
) -> None:
    """Reads ``body`` into ``chunks`` until the end (an empty chunk), an error, or ``stop``."""
    try:
        while not stop.is_set():
            chunk = body.read(size)
            while not stop.is_set():
                try:
                    chunks.put(chunk, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not chunk:
                return
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
        chunks.put(exc)


_CONDITION_UNSUPPORTED = frozenset({"NotImplemented", "InvalidArgument", "InvalidRequest"})


def _is_missing(exc: Any) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}
