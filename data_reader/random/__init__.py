"""Random plugin: the ``random`` reader, live-looking signals with no device (no extra needed).

Code in :mod:`data_reader.random.reader`; address grammar and options in this folder's
``README.md``; ``sample.toml`` is a configuration that validates. Registered as reader type
``random`` through the entry point in the project's ``pyproject.toml``.
"""

from .reader import RandomDataReader

__all__ = ["RandomDataReader"]
