"""``python -m data_collector``: the ``data-collector`` command."""

from ._cli import main

raise SystemExit(main())
