"""``python -m antiphon``: the ``antiphon`` command (:func:`antiphon.cli.main`).

It imports :mod:`antiphon.cli` as a module and calls its ``main``, so the process holds one
copy of the CLI module whichever way it is started (entry point, ``-m antiphon`` or
``-m antiphon.cli``).
"""

from __future__ import annotations

import sys

from antiphon.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
