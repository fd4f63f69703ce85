"""Leftovers of builds that were killed while writing into the shared build cache.

A build writes each cached artifact under a temporary name and renames it when whole, so a build
killed mid-write (SIGKILL, a closed laptop lid, a CI timeout) leaves its temporary file or
directory behind, and nothing else would ever delete it. Each build sweeps the ones that are
older than any build can take; a build still running keeps its own.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

# No build writes one artifact for a day; anything temporary that old was left by a killed one.
STALE_SECONDS = 24 * 3600.0


def sweep_stale(directory: Path, pattern: str, older_than: float = STALE_SECONDS) -> list[Path]:
    """Deletes the entries of ``directory`` matching ``pattern`` (a glob) last modified more than
    ``older_than`` seconds ago, files and directories alike.

    Args:
        directory: The cache directory (missing is fine: nothing to sweep).
        pattern: A glob matching only temporary names, never a finished artifact's.
        older_than: Minimum age in seconds.

    Returns:
        The paths deleted.
    """
    if not directory.is_dir():
        return []
    cutoff = time.time() - older_than
    swept = []
    for path in directory.glob(pattern):
        try:
            if path.lstat().st_mtime >= cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except FileNotFoundError:  # another build swept it first
            continue
        swept.append(path)
    return swept
