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
        parts: Bytes per installed distribution, largest first (an image's libraries).
    """

    name: str
    kind: str
    unzipped_bytes: int
    stored_bytes: int
    limit_bytes: int
    parts: tuple[tuple[str, int], ...] = ()

    @property
    def within_limit(self) -> bool:
        """Whether the artifact fits its limit."""
        return self.unzipped_bytes <= self.limit_bytes

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict (for ``sizes.json``; ``parts`` as name → bytes)."""
        data = {**asdict(self), "within_limit": self.within_limit}
        data["parts"] = dict(self.parts)
        return data


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
    """Measures an installed directory (an image's site-packages) against the image limit, with
    the bytes of each installed distribution (:func:`distribution_sizes`)."""
    parts = tuple(sorted(distribution_sizes(root).items(), key=lambda item: (-item[1], item[0])))
    return Artifact(name, "image", tree_bytes(root), 0, IMAGE_LIMIT, parts)


def distribution_sizes(site: Path) -> dict[str, int]:
    """Bytes on disk per distribution installed in a ``site-packages`` directory.

    Each ``*.dist-info/RECORD`` names the distribution's files; every top-level entry they sit
    under (``sklearn/``, ``scikit_learn.libs/``, the ``.dist-info`` itself) is counted whole,
    so bytecode compiled after installation is counted with its package. Entries no RECORD
    names are reported as ``(other)``.
    """
    owners: dict[str, str] = {}
    for record in sorted(site.glob("*.dist-info/RECORD")):
        name = _distribution_name(record.parent.name)
        owners.setdefault(record.parent.name, name)
        for line in record.read_text(errors="replace").splitlines():
            top = line.split(",", 1)[0].split("/", 1)[0]
            if top and top not in ("..", "."):
                owners.setdefault(top, name)
    sizes: dict[str, int] = {}
    for entry in site.iterdir():
        size = tree_bytes(entry) if entry.is_dir() else entry.lstat().st_size
        owner = owners.get(entry.name, "(other)")
        sizes[owner] = sizes.get(owner, 0) + size
    return sizes


def _distribution_name(dist_info: str) -> str:
    """``scikit_learn-1.9.1.dist-info`` → ``scikit-learn`` (PEP 503 normalized)."""
    name = dist_info.removesuffix(".dist-info").split("-", 1)[0]
    return name.lower().replace("_", "-").replace(".", "-")


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


def format_parts(artifact: Artifact, count: int = 12) -> str:
    """The largest distributions of an artifact as one line of ``name MB`` pairs."""
    shown = ", ".join(f"{name} {size / MB:.1f}" for name, size in artifact.parts[:count])
    rest = sum(size for _, size in artifact.parts[count:])
    more = f", {len(artifact.parts) - count} others {rest / MB:.1f}" if rest else ""
    return f"{artifact.name} by library (MB): {shown}{more}"


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
