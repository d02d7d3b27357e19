"""Writers: the :class:`DataWriter` base class and the shipped writer plugins.

- :mod:`data_writer.noop` — ``NoopDataWriter``: logs batches at DEBUG.
- :mod:`data_writer.csv` — ``CsvFileDataWriter(path)``: appends CSV rows; ``read_samples`` reads them.
- :mod:`data_writer.sql` — ``SqlDataWriter(url)`` (SQLite, PostgreSQL, MariaDB/MySQL through
  SQLAlchemy, extra ``sql``); ``read_samples``, ``read_contexts``, ``migrate_store`` read it back.
- :mod:`data_writer.hdf5` — ``Hdf5DataWriter(path)`` (PyTables, extra ``hdf5``): runs as groups
  with their metadata, samples in chunked, compressed tables; ``read_frame`` reads them.
- :mod:`data_writer.mqtt` — ``MqttDataWriter`` (paho-mqtt, extra ``mqtt``): publishes to an MQTT
  broker as JSON or Sparkplug B, acknowledged before a batch counts as written.

Plugin folders (``noop/``, ``csv/``, ``sql/``, ``hdf5/``, ``redis/``, ``mqtt/``) hold their code, a
``README.md`` and a ``sample.toml`` that ``data-collector validate`` accepts. The old module paths
(``data_writer.csv_file_data_writer``, ``data_writer.noop_data_writer``,
``data_writer.sql_data_writer``, ``data_writer._sql.*``) re-export the new ones.
"""

from data_collector import DataWriter

__all__ = ["DataWriter"]
