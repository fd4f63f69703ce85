"""Coverage paused in one thread: for a test whose own thread runs only test and third-party
code while the product runs in other threads of the process (a local stack over loopback)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def coverage_paused_in_this_thread() -> Iterator[None]:
    """Stops coverage's tracer in the calling thread for the block and starts it again after.

    The other threads keep theirs, so every product line a request runs in the server's
    threads is still measured. pytest-cov's ``no_cover`` stops every thread's tracer instead,
    and coverage restarts only the current thread's: a server thread already running stays
    unmeasured for the rest of the process. Outside coverage (``-p no:cov``, a debugger's
    Python trace function) this does nothing.
    """
    tracer = sys.gettrace()
    stop, start = getattr(tracer, "stop", None), getattr(tracer, "start", None)
    if stop is None or start is None:
        yield
        return
    stop()
    try:
        yield
    finally:
        start()
