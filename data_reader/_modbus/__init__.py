"""Old home of the Modbus reader's private helpers, now in :mod:`data_reader.modbus` (kept as re-exports)."""
