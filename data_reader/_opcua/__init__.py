"""Old home of the OPC UA reader's private helpers, now in :mod:`data_reader.opcua` (kept as re-exports)."""
