"""Old import path, kept so existing code keeps working: a re-export of the package named below.

New code imports from :mod:`data_writer.sql` (moved there with the one-folder-per-plugin layout:
the writer is in :mod:`data_writer.sql.writer`, the read-back API in :mod:`data_writer.sql.read`).
"""

from typing import Any

import data_writer.sql as _new
import data_writer.sql.read as _read
import data_writer.sql.writer as _writer
from data_writer.sql import *  # noqa: F403

__all__ = list(_new.__all__)


def __getattr__(name: str) -> Any:  # the module's other names (e.g. private helpers tests use)
    for module in (_new, _writer, _read):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
