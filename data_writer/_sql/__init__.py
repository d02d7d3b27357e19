"""Old home of the SQL writer's private helpers, now in :mod:`data_writer.sql` (kept as re-exports)."""
