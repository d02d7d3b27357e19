"""Writers: the :class:`DataWriter` base class and the shipped writers.

Shipped writers live in their own modules:

- :mod:`data_writer.noop_data_writer` — ``NoopDataWriter``: logs batches at DEBUG.
- :mod:`data_writer.csv_file_data_writer` — ``CsvFileDataWriter(path)``: appends CSV rows.
- :mod:`data_writer.sql_data_writer` — ``SqlDataWriter(url)`` (SQLAlchemy, extra ``sql``).
"""

from data_collector._writer import DataWriter

__all__ = ["DataWriter"]
