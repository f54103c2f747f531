"""``python -m aociauth``: the command line (see :mod:`aociauth.cli`)."""

from aociauth.cli import main

raise SystemExit(main())
