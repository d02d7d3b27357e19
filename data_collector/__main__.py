"""``python -m data_collector``: the ``data-collector`` command."""

from .cli import main

raise SystemExit(main())
