"""Independent oracles shared by test modules, called the same way everywhere."""

from __future__ import annotations

import gc
from typing import Any
from unittest import mock


def multipletests(p_values: Any, alpha: float = 0.05, method: str = "hs") -> Any:
    """``statsmodels.stats.multitest.multipletests`` (same arguments and result), without the
    ``gc.collect()`` its Holm branch runs on every call to free one temporary array: a full
    collection of the test process, 0.07-0.15 s once the suite holds many objects, nearly all
    of each Holm comparison's time. The oracle's result does not depend on it."""
    from statsmodels.stats import multitest

    with mock.patch.object(gc, "collect", lambda *args: 0):
        return multitest.multipletests(p_values, alpha=alpha, method=method)
