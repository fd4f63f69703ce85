"""Dataset files: ``push`` (hashed, direct upload, multipart fallback, resumable) and ``pull``
(sha256-verified, resumable).

``push(client, path, dataset_id)``:

1. Hashes the file while reading it (sha256, 1 MiB reads) unless a resume record already holds
   the digest of this exact file (same path, size and modification time).
2. Asks ``POST /datasets/{id}/uploads`` with the digest and size. ``exists``: the dataset has
   this content, nothing is sent. ``direct``: one PUT straight to the content address with the
   signed headers (S3 verifies the checksum). Otherwise the server answers a staged upload: one
   PUT, or a multipart upload (files over 64 MiB, and direct uploads over 5 GiB), whose parts
   are sent in order, each recorded in the resume record as S3 acknowledges it.
3. Waits until the S3 trigger has made the version and returns it.

``mode="multipart"`` skips the digest (the bytes are hashed while the parts are read instead, in
one pass) and always stages. A push interrupted (Ctrl-C, a lost connection) resumes when run
again: the digest is not recomputed, a multipart upload sends only the parts S3 has not
acknowledged (while its presigned part URLs are valid: ``SYNAPSE_PRESIGN_SECONDS``, 900 s by
default; after that it starts over), and a direct PUT, which S3 takes whole or not at all, is
sent again. A resumed multipart upload first re-reads each acknowledged part and compares it
with the sha256 recorded when it was sent; a file that changed meanwhile (even with the same
name, size and modification time) starts the push over instead of completing an upload of two
files' parts, and in ``auto`` mode the whole file must still have the digest it was announced
with. Resume records live in ``$SYNAPSE_STATE_DIR`` or ``~/.cache/synapse/uploads``.

``pull(client, dataset_id, version, path)`` downloads to ``path.part`` (continuing a partial one
with an HTTP Range request when ``path.part.sha256`` names the same version's digest: a partial
download of another version is started over), checks the sha256 the API states for the
version, and only then renames it to ``path``; a mismatch deletes the partial file and raises
:class:`~synapse_client.errors.IntegrityError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import requests

from synapse_client.errors import (
    ApiError,
    IntegrityError,
    MissingCapability,
    SynapseClientError,
    TransportError,
)

CHUNK = 1024 * 1024
Progress = Callable[[str, int, int], None]  # (phase, bytes done, bytes in total)
TAG_CAPABILITY = "dataset tags (named versions: issue 15)"


def _silent(phase: str, done: int, total: int) -> None:
    return None


def sha256_file(path: str | os.PathLike[str], progress: Progress = _silent) -> str:
    """The file's sha256 (hex), read in 1 MiB chunks, reporting ``("hash", done, total)``."""
    digest = hashlib.sha256()
    total = os.path.getsize(path)
    done = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            progress("hash", done, total)
    return digest.hexdigest()


def state_dir() -> Path:
    """Where resume records are kept."""
    configured = os.environ.get("SYNAPSE_STATE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "synapse" / "uploads"


class ResumeRecord:
    """What a push has done so far for one (file, dataset), kept on disk as JSON.

    Args:
        path: The file being pushed.
        dataset_id: The dataset.
        url: The API's base URL (records of different APIs never mix).
        directory: Where records are kept (default :func:`state_dir`).
    """

    def __init__(self, path: Path, dataset_id: str, url: str, directory: Path | None = None):
        stat = path.stat()
        identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{dataset_id}|{url}"
        self.file = (directory or state_dir()) / (
            hashlib.sha256(identity.encode()).hexdigest()[:32] + ".json"
        )
        self.data: dict[str, Any] = {}
        if self.file.exists():
            try:
                self.data = json.loads(self.file.read_text(encoding="utf-8"))
            except ValueError:
                self.data = {}

    def save(self, **changes: Any) -> None:
        """Merges ``changes`` and writes the record atomically (0600)."""
        self.data.update(changes)
        self.file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.file.with_suffix(".tmp")
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            json.dump(self.data, out)
        os.replace(temporary, self.file)

    def clear(self) -> None:
        """Forgets the record (the push is complete)."""
        self.file.unlink(missing_ok=True)
        self.data = {}


class _Reader:
    """A file window that requests streams from (``read`` + ``__len__``), hashing and reporting
    progress as it goes."""

    def __init__(
        self, handle: BinaryIO, offset: int, length: int, on_read: Callable[[bytes], None]
    ):
        self.handle = handle
        self.remaining = length
        self.length = length
        self.on_read = on_read
        handle.seek(offset)

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        wanted = self.remaining if size is None or size < 0 else min(size, self.remaining)
        chunk = self.handle.read(min(wanted, CHUNK))
        self.remaining -= len(chunk)
        if chunk:
            self.on_read(chunk)
        return chunk


class Pusher:
    """One push of one file (see the module docstring).

    Args:
        client: A :class:`~synapse_client.client.Client`.
        path: The file.
        dataset_id: The dataset.
        progress: ``(phase, done, total)`` callback; phases ``hash``, ``upload``, ``ingest``.
        mode: ``"auto"`` (digest first: direct when possible) or ``"multipart"``.
        filename: Name the version's file gets (default: the file's name).
        wait: Wait for the version (else return when the bytes are uploaded).
        timeout: Seconds to wait for the ingest.
        directory: Where resume records are kept.
    """

    def __init__(
        self,
        client: Any,
        path: str | os.PathLike[str],
        dataset_id: str,
        progress: Progress = _silent,
        mode: str = "auto",
        filename: str | None = None,
        wait: bool = True,
        timeout: float = 600.0,
        directory: Path | None = None,
    ) -> None:
        if mode not in ("auto", "multipart"):
            raise ValueError("mode must be 'auto' or 'multipart'")
        self.client = client
        self.path = Path(path)
        self.dataset_id = dataset_id
        self.progress = progress
        self.mode = mode
        self.filename = filename or self.path.name
        self.wait = wait
        self.timeout = timeout
        self.size = self.path.stat().st_size
        self.record = ResumeRecord(self.path, dataset_id, client.url, directory)
        self.session = requests.Session()  # presigned S3 URLs: no API token is ever sent there
        self.sent_bytes = 0
        self.sent_parts = 0
        self._last_etag = ""

    def run(self) -> dict[str, Any]:
        """Pushes; returns ``{"version": ..., "mode", "sha256", "sent_bytes", "resumed"}``."""
        resumed = bool(self.record.data)
        outcome = self._multipart_only() if self.mode == "multipart" else self._auto()
        outcome.update(sent_bytes=self.sent_bytes, sent_parts=self.sent_parts, resumed=resumed)
        if self.wait and outcome.get("version") is None:
            outcome["version"] = self._wait_for(outcome["sha256"])
        self.record.clear()
        return outcome

    # ---------------------------------------------------------------- the two paths

    def _auto(self) -> dict[str, Any]:
        digest = self.record.data.get("sha256")
        if digest is None:
            digest = sha256_file(self.path, self.progress)
            self.record.save(sha256=digest)
        upload = self.record.data.get("upload")
        if upload is None or _expired(self.record.data):
            upload = self.client.create_upload(
                self.dataset_id, filename=self.filename, size_bytes=self.size, sha256=digest
            )
            self.record.save(upload=upload, issued_at=time.time(), parts={})
        if upload["status"] == "exists":
            version = self.client.get_version(self.dataset_id, upload["version_id"])
            return {"mode": "exists", "sha256": digest, "version": version}
        if upload.get("part_urls"):
            self._send_parts(upload, None)
        else:
            self._put_whole(upload)
        return {"mode": upload["mode"], "sha256": digest, "version": None}

    def _multipart_only(self) -> dict[str, Any]:
        upload = self.record.data.get("upload")
        if upload is None or _expired(self.record.data):
            upload = self.client.create_upload(
                self.dataset_id, filename=self.filename, size_bytes=self.size
            )
            self.record.save(upload=upload, issued_at=time.time(), parts={})
        digest = hashlib.sha256()
        if upload.get("part_urls"):
            self._send_parts(upload, digest)
        else:
            self._put_whole(upload, digest)
        mode = "multipart" if upload.get("part_urls") else "staged"
        return {"mode": mode, "sha256": digest.hexdigest(), "version": None}

    # ---------------------------------------------------------------- sending bytes

    def _put_whole(self, upload: dict[str, Any], digest: Any = None) -> None:
        done = [0]

        def on_read(chunk: bytes) -> None:
            if digest is not None:
                digest.update(chunk)
            done[0] += len(chunk)
            self.progress("upload", done[0], self.size)

        with open(self.path, "rb") as handle:
            body = _Reader(handle, 0, self.size, on_read)
            answer = self._put(upload["url"], body, upload.get("headers") or {})
        if answer.status_code == 412:  # the same content arrived meanwhile: ask again
            self.record.save(upload=None)
            self.record.data.pop("upload", None)
            raise _AskAgain()
        _check(answer, "upload")
        self.sent_bytes += self.size

    def _send_parts(self, upload: dict[str, Any], digest: Any) -> None:
        part_size = int(upload["part_size"])
        done_parts: dict[str, str] = dict(self.record.data.get("parts") or {})
        part_digests: dict[str, str] = dict(self.record.data.get("part_sha256") or {})
        whole = digest if digest is not None else hashlib.sha256()
        uploaded = sum(min(part_size, self.size - (int(n) - 1) * part_size) for n in done_parts)
        self.progress("upload", uploaded, self.size)
        with open(self.path, "rb") as handle:
            for number, url in enumerate(upload["part_urls"], start=1):
                offset = (number - 1) * part_size
                length = min(part_size, self.size - offset)
                part = hashlib.sha256()
                if str(number) in done_parts:  # hash the acknowledged part without sending it
                    _hash_window(handle, offset, length, whole, part)
                    if part_digests.get(str(number)) != part.hexdigest():
                        self._start_over("a part S3 acknowledged is not in the file any more")
                    continue
                uploaded = self._send_part(handle, url, offset, length, (whole, part), uploaded)
                done_parts[str(number)] = self._last_etag
                part_digests[str(number)] = part.hexdigest()
                self.record.save(parts=done_parts, part_sha256=part_digests)
        if digest is None and whole.hexdigest() != self.record.data.get("sha256"):
            self._start_over("the file changed after it was hashed")
        numbers = sorted(int(n) for n in done_parts)
        parts = [{"part_number": n, "etag": done_parts[str(n)]} for n in numbers]
        self.client.complete_upload(
            self.dataset_id, key=upload["key"], upload_id=upload["upload_id"], parts=parts
        )

    def _send_part(
        self, handle: BinaryIO, url: str, offset: int, length: int, digests: Any, uploaded: int
    ) -> int:
        start = uploaded

        def on_read(chunk: bytes) -> None:
            nonlocal uploaded
            for digest in digests:
                digest.update(chunk)
            uploaded += len(chunk)
            self.progress("upload", uploaded, self.size)

        answer = self._put(url, _Reader(handle, offset, length, on_read), {})
        _check(answer, "part upload")
        self._last_etag = answer.headers.get("ETag", "")
        self.sent_bytes += uploaded - start
        self.sent_parts += 1
        return uploaded

    def _start_over(self, why: str) -> None:
        """Forgets the resume record and raises :class:`_StartOver` (nothing is completed)."""
        self.record.clear()
        raise _StartOver(f"{self.path}: {why}; the push starts over")

    def _put(self, url: str, body: _Reader, headers: dict[str, str]) -> requests.Response:
        try:
            return self.session.put(url, data=body, headers=headers, timeout=600)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransportError(
                f"upload to storage failed: {exc}; run the push again to resume"
            ) from exc

    # ---------------------------------------------------------------- the version

    def _wait_for(self, digest: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            found = _version_with(self.client, self.dataset_id, digest)
            if found is not None:
                self.progress("ingest", 1, 1)
                return found
            if time.monotonic() > deadline:
                raise SynapseClientError(
                    f"no version of {self.dataset_id} with sha256 {digest} after "
                    f"{self.timeout:.0f} s: the ingest may have refused the file (an admin sees "
                    "why in GET /dataset-rejections)"
                )
            self.progress("ingest", 0, 1)
            time.sleep(0.25)


class _AskAgain(Exception):
    """A direct PUT found its content address taken: request the upload again."""


class _StartOver(_AskAgain):
    """The file is not the one whose parts were sent: push it again from the start."""


def _expired(record: dict[str, Any]) -> bool:
    upload = record.get("upload")
    if not upload:
        return True
    lifetime = float(upload.get("expires_in") or 0)
    return time.time() > float(record.get("issued_at", 0)) + lifetime - 30


def _hash_window(handle: BinaryIO, offset: int, length: int, *digests: Any) -> None:
    handle.seek(offset)
    while length > 0:
        chunk = handle.read(min(CHUNK, length))
        if not chunk:
            break
        for digest in digests:
            digest.update(chunk)
        length -= len(chunk)


def _check(answer: requests.Response, what: str) -> None:
    if answer.status_code >= 300:
        code = re.search(r"<Code>([^<]+)</Code>", answer.text or "")
        raise ApiError(
            answer.status_code,
            code.group(1) if code else f"http_{answer.status_code}",
            f"storage refused the {what}: {(answer.text or '')[:300]}",
        )


def _version_with(client: Any, dataset_id: str, digest: str) -> dict[str, Any] | None:
    """The dataset's newest version with this sha256 (the last 500 versions are searched)."""
    first = client.list_versions(dataset_id, limit=1)
    total = int(first["total"])
    page = client.list_versions(dataset_id, limit=500, offset=max(0, total - 500))
    matches = [v for v in page["versions"] if v["sha256"] == digest]
    return matches[-1] if matches else None


def push(client: Any, path: str | os.PathLike[str], dataset_id: str, **options: Any) -> dict:
    """Pushes a file as a new version of a dataset (see the module docstring).

    Returns:
        ``{"version": <the version>, "mode": "direct" | "staged" | "multipart" | "exists",
        "sha256", "sent_bytes", "sent_parts", "resumed"}``.
    """
    for _ in range(3):
        try:
            return Pusher(client, path, dataset_id, **options).run()
        except _AskAgain:
            continue
    raise SynapseClientError("the content address kept changing under the push; try again")


def resolve_version(client: Any, version: int | str) -> str:
    """A version number or ``dv-`` id as given; a tag when the server knows tags.

    Raises:
        MissingCapability: ``version`` is a tag name and the server has no tag routes.
    """
    text = str(version)
    if text.isdigit() or text.startswith("dv-"):
        return text
    if not any("/tags/" in path for _, path in client.routes()):
        raise MissingCapability("PUT /datasets/{dataset_id}/tags/{tag}", TAG_CAPABILITY)
    return text


def pull(
    client: Any,
    dataset_id: str,
    version: int | str,
    path: str | os.PathLike[str],
    progress: Progress = _silent,
) -> dict[str, Any]:
    """Downloads a version to ``path`` after checking its sha256 (see the module docstring).

    Returns:
        ``{"version_id", "sha256", "size_bytes", "path", "resumed_from"}``.

    Raises:
        IntegrityError: The bytes do not match the version's sha256 (nothing is left at
            ``path``).
    """
    ref = resolve_version(client, version)
    content = client.content_url(dataset_id, ref)
    target = Path(path)
    partial = target.with_name(target.name + ".part")
    marker = target.with_name(target.name + ".part.sha256")  # whose bytes ``partial`` holds
    digest = hashlib.sha256()
    have = 0
    if _resumable(partial, marker, content):
        with open(partial, "rb") as existing:
            for chunk in iter(lambda: existing.read(CHUNK), b""):
                digest.update(chunk)
                have += len(chunk)
    else:
        partial.unlink(missing_ok=True)
    total = int(content["size_bytes"])
    resumed_from = have
    if have < total:
        marker.write_text(content["sha256"], encoding="utf-8")
        digest, have = _download(content["url"], partial, have, total, digest, progress)
    marker.unlink(missing_ok=True)
    if digest.hexdigest() != content["sha256"]:
        partial.unlink(missing_ok=True)
        raise IntegrityError(
            f"downloaded bytes have sha256 {digest.hexdigest()}, the version states "
            f"{content['sha256']}; nothing was written to {target}"
        )
    os.replace(partial, target)
    return {
        "version_id": content["version_id"],
        "sha256": content["sha256"],
        "size_bytes": total,
        "path": str(target),
        "resumed_from": resumed_from,
    }


def _resumable(partial: Path, marker: Path, content: dict[str, Any]) -> bool:
    """Whether ``partial`` holds the start of this version (not longer, not another's)."""
    if not partial.exists() or partial.stat().st_size > int(content["size_bytes"]):
        return False
    return not marker.exists() or marker.read_text(encoding="utf-8").strip() == content["sha256"]


def _download(
    url: str, partial: Path, have: int, total: int, digest: Any, progress: Progress
) -> tuple[Any, int]:
    """Appends the missing bytes to ``partial``; returns the digest and the bytes held."""
    resumed = have
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        answer = requests.get(url, headers=headers, stream=True, timeout=600)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise TransportError(f"download failed: {exc}; run the pull again to resume") from exc
    with answer:
        if resumed and answer.status_code == 200:  # the server ignored the range: start over
            digest, have = hashlib.sha256(), 0
            partial.unlink(missing_ok=True)
        _check(answer, "download")
        with open(partial, "ab") as out:
            for chunk in _chunks(answer):
                if have + len(chunk) > total:  # more than the version holds: stop reading
                    out.close()
                    partial.unlink(missing_ok=True)
                    raise IntegrityError(
                        f"the storage sent more bytes than the version's {total}; "
                        "nothing was written"
                    )
                digest.update(chunk)
                out.write(chunk)
                have += len(chunk)
                progress("download", have, total)
    return digest, have


def _chunks(answer: requests.Response) -> Iterator[bytes]:
    try:
        yield from answer.iter_content(CHUNK)
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        raise TransportError(f"download interrupted: {exc}; run the pull again to resume") from exc
