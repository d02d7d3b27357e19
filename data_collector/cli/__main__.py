"""``python -m data_collector.cli``: the ``data-collector`` command."""

from . import main

raise SystemExit(main())
