"""``python -m demo.serve``: ``python -m chalicelib.local`` with :mod:`demo.motofix` installed."""

from __future__ import annotations

import sys

from demo.motofix import install

if __name__ == "__main__":
    install()
    from chalicelib.local.__main__ import main

    sys.exit(main())
