"""Old home of the ``data-collector`` command: an alias of :mod:`data_collector.cli`.

Kept because console scripts installed before the CLI became a package point at
``data_collector._cli:main``, and ``python -m data_collector._cli`` still runs the command.
"""

import sys

from .cli import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_STARTUP, build_parser, main

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STARTUP",
    "build_parser",
    "main",
]

if __name__ == "__main__":
    sys.exit(main())
