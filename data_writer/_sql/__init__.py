"""Private helpers of :mod:`data_writer.sql_data_writer`: URL handling, schema, value codec, store."""
