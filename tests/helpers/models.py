"""Small real models as the registry accepts them, trained once per process."""

from __future__ import annotations

import base64
import functools
from typing import Any


@functools.cache
def skops_bytes(seed: int = 0) -> bytes:
    """A LogisticRegression on three standard-normal features (60 rows of ``seed``, label
    ``x0 + x1 > 0``), saved with skops. Cached: the bytes depend only on ``seed``."""
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(seed).normal(size=(60, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    return sio.dumps(LogisticRegression().fit(X, y))


def skops_artifact(seed: int = 0) -> str:
    """:func:`skops_bytes` in base64, as ``artifact_base64`` of a version registration."""
    return base64.b64encode(skops_bytes(seed)).decode()


def version_body(
    feature_names: tuple[str, ...] = ("f0", "f1", "f2"), seed: int = 0, **extra: Any
) -> dict[str, Any]:
    """A ``POST /models/{model_id}/versions`` body for :func:`skops_bytes` (a classifier with
    classes ``no`` and ``yes``)."""
    return {
        "artifact_base64": skops_artifact(seed),
        "format": "skops",
        "task": "classification",
        "feature_names": list(feature_names),
        "class_names": ["no", "yes"],
        **extra,
    }
