"""Artifact sizes against the AWS Lambda limits.

Lambda counts a zip-packaged function together with all of its layers: at most 250 MB unzipped
(262,144,000 bytes, as the Lambda API reports it). A container image may be up to 10 GB.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

MB = 1024 * 1024
ZIP_UNZIPPED_LIMIT = 262_144_000
"""Function code plus all layers, unzipped (the Lambda quota "250 MB")."""
IMAGE_LIMIT = 10 * 1024 * 1024 * 1024
"""Uncompressed container image size, base image layers included."""


@dataclass(frozen=True)
class Artifact:
    """One measured artifact.

    Attributes:
        name: What it is (``deployment.zip``, ``explainer image site-packages``).
        kind: ``zip`` (a function or layer package) or ``image`` (container contents).
        unzipped_bytes: Size on disk once extracted.
        stored_bytes: Size of the zip file itself (0 for an image directory).
        limit_bytes: The Lambda limit this artifact counts against.
    """

    name: str
    kind: str
    unzipped_bytes: int
    stored_bytes: int
    limit_bytes: int

    @property
    def within_limit(self) -> bool:
        """Whether the artifact fits its limit."""
        return self.unzipped_bytes <= self.limit_bytes

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict (for ``sizes.json``)."""
        return {**asdict(self), "within_limit": self.within_limit}


def zip_unzipped_bytes(path: Path) -> int:
    """Sum of the uncompressed sizes of every member of a zip file."""
    with zipfile.ZipFile(path) as archive:
        return sum(info.file_size for info in archive.infolist())


def tree_bytes(root: Path) -> int:
    """Sum of the sizes of the regular files under ``root`` (symlinks are not followed)."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def measure_zip(path: Path, name: str | None = None) -> Artifact:
    """Measures a function or layer zip against the 250 MB unzipped limit."""
    return Artifact(
        name or path.name, "zip", zip_unzipped_bytes(path), path.stat().st_size, ZIP_UNZIPPED_LIMIT
    )


def measure_tree(root: Path, name: str) -> Artifact:
    """Measures an installed directory (an image's site-packages) against the image limit."""
    return Artifact(name, "image", tree_bytes(root), 0, IMAGE_LIMIT)


def zip_function_total(artifacts: Iterable[Artifact]) -> int:
    """Unzipped bytes of a zip function: its package plus every layer (all ``zip`` artifacts)."""
    return sum(a.unzipped_bytes for a in artifacts if a.kind == "zip")


def largest_entries(path: Path, count: int = 8) -> list[tuple[str, int]]:
    """The biggest top-level entries of a zip by unzipped size (to explain a size problem)."""
    sizes: dict[str, int] = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            top = info.filename.split("/", 1)[0]
            sizes[top] = sizes.get(top, 0) + info.file_size
    return sorted(sizes.items(), key=lambda item: -item[1])[:count]


def format_table(artifacts: Iterable[Artifact]) -> str:
    """A fixed-width table of artifact sizes for the console."""
    rows = [f"{'artifact':<44} {'unzipped':>12} {'zipped':>10} {'limit':>10}  ok"]
    for a in artifacts:
        stored = f"{a.stored_bytes / MB:.1f} MB" if a.stored_bytes else "-"
        rows.append(
            f"{a.name:<44} {a.unzipped_bytes / MB:>9.1f} MB {stored:>10} "
            f"{a.limit_bytes / MB:>7.0f} MB  {'yes' if a.within_limit else 'NO'}"
        )
    return "\n".join(rows)
