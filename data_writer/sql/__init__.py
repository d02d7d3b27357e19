"""SQL plugin: the ``sql`` writer (SQLite, PostgreSQL, MariaDB/MySQL through SQLAlchemy 2) and its
read-back API.

- :class:`SqlDataWriter` (:mod:`data_writer.sql.writer`): one transaction per batch on the driver's
  fastest bulk path, every sample stored exactly once (retries and spool replays are skipped),
  runs of a context with user and deduced metadata.
- :func:`read_samples`, :func:`read_samples_frame`, :func:`read_wide_frame`, :func:`read_contexts`,
  :func:`migrate_store`, :func:`stored_schema_version` (:mod:`data_writer.sql.read`): reading a
  store back (long or wide) and migrating an older one (``data-collector migrate SOURCE`` does it
  from the command line). The view ``<prefix>samples_view`` shows the samples with their
  variable's id, name and unit to any SQL client.

Install the extra for your database: ``data-collector[sql]`` (SQLite), ``[postgresql]`` or
``[mariadb]``. URL syntax per database, option table, table layout and an example in this
folder's ``README.md``; ``sample.toml`` is a configuration that validates. Registered as writer
type ``sql`` through the entry point in the project's ``pyproject.toml``.
"""

from ._errors import SqlWriterError
from ._schema import SCHEMA_VERSION
from ._store import ContextRun, MigrationResult, SampleRow
from .read import (
    FRAME_COLUMNS,
    has_context,
    migrate_store,
    read_contexts,
    read_samples,
    read_samples_frame,
    read_wide_frame,
    stored_schema_version,
)
from .writer import SqlDataWriter

# Their public home is this package.
SampleRow.__module__ = ContextRun.__module__ = MigrationResult.__module__ = __name__

__all__ = [
    "FRAME_COLUMNS",
    "SCHEMA_VERSION",
    "ContextRun",
    "MigrationResult",
    "SampleRow",
    "SqlDataWriter",
    "SqlWriterError",
    "has_context",
    "migrate_store",
    "read_contexts",
    "read_samples",
    "read_samples_frame",
    "read_wide_frame",
    "stored_schema_version",
]
