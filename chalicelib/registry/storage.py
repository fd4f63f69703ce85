"""S3 storage of model artifacts and background samples (the registry's only S3 code)."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.core import aws
from chalicelib.core.config import get_settings
from chalicelib.core.errors import NotFound, PayloadTooLarge


class ArtifactStore:
    """Reads and writes artifacts in the models bucket.

    Args:
        bucket: Bucket name (default: ``MODELS_BUCKET``).
        max_artifact_bytes: Largest accepted artifact.
    """

    def __init__(self, bucket: str | None = None, max_artifact_bytes: int = 512 * 1024 * 1024):
        self.bucket = bucket or get_settings().models_bucket
        self.max_artifact_bytes = max_artifact_bytes

    @property
    def s3(self) -> Any:
        return aws.client("s3")

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Stores bytes at ``key``."""
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        """The bytes at ``key``.

        Raises:
            NotFound: No object there.
            PayloadTooLarge: The object is over the artifact limit.
        """
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except self.s3.exceptions.ClientError as exc:
            raise NotFound(f"no uploaded object at {key}") from exc
        if head["ContentLength"] > self.max_artifact_bytes:
            raise PayloadTooLarge(
                f"artifact is {head['ContentLength']} bytes; limit {self.max_artifact_bytes}"
            )
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except self.s3.exceptions.ClientError:
            return False
        return True

    def delete(self, key: str) -> None:
        """Removes ``key`` (no error if absent)."""
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    def put_json(self, key: str, value: Any) -> None:
        """Stores a JSON document."""
        self.put(key, json.dumps(value).encode("utf-8"), "application/json")

    def get_json(self, key: str) -> Any:
        """Reads a JSON document."""
        return json.loads(self.get(key))

    def presign_upload(self, key: str, expires: int | None = None) -> str:
        """A presigned PUT URL for exactly ``key``."""
        return self.s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=expires or get_settings().presign_seconds,
        )
