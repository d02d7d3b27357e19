"""Old import path, kept so existing code keeps working: a re-export of the module named below.

New code imports from :mod:`data_writer.sql._url` (moved there with the one-folder-per-plugin layout).
"""

from typing import Any

import data_writer.sql._url as _new
from data_writer.sql._url import *  # noqa: F403

__all__ = list(_new.__all__)


def __getattr__(name: str) -> Any:  # the module's other names (e.g. private helpers tests use)
    return getattr(_new, name)
