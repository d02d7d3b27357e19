"""No-op plugin: the ``noop`` writer, which logs batches at DEBUG and keeps nothing.

Code in :mod:`data_writer.noop.writer`; options in this folder's ``README.md``; ``sample.toml`` is a
configuration that validates. Registered as writer type ``noop`` through the entry point in the
project's ``pyproject.toml``.
"""

from .writer import NoopDataWriter

__all__ = ["NoopDataWriter"]
