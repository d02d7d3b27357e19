"""HDF5 writer: samples of every run in chunked, compressed PyTables tables, metadata as attributes.

Serves experiments and long runs that want one established, self-describing file format: one
file for everything, per context or per run (``path`` may hold ``{context_id}`` and
``{start:%Y%m%d-%H%M%S}``), a group ``/context_<id>/run_<n>`` per run holding the user's and the
collector's metadata (JSON attributes ``user_metadata`` / ``deduced_metadata``, plus flat
``user__<key>`` / ``deduced__<key>`` attributes), a ``variables`` table, and one table per value
kind (``float``, ``int``, ``uint``, ``bool``, ``str``, ``other``, ``novalue``; error texts in
``errors``) with the columns ``time_us`` (int64 µs since 1970 UTC), ``variable_id``, ``value`` and
``quality``. ``pandas.read_hdf(path, "/context_7/run_1/float")`` reads a table; h5py, silx and
HDFView browse the file (zlib compression by default, which every HDF5 tool reads).
:func:`read_frame` and :func:`read_samples` read samples back typed as collected,
:func:`read_wide_frame` as one column per variable, :func:`list_runs` lists the runs. A
:class:`~data_collector.Scan` gets its merged table at ``/scans/<name>`` (:func:`scan_key`): one row
per read time and point with the point's configuration beside the measured values. Extra ``hdf5``
(PyTables, pandas). Full layout, guarantees and option table: ``data_writer/hdf5/README.md``.

Options of ``Hdf5DataWriter(path, *, ...)``: ``flush_s=2.0`` (its ``flush_interval_s``: the
collector flushes buffered rows to the file at least this often and confirms them to its spool
only then; 0 = at every write), ``complib="zlib"``, ``complevel=1``, ``shuffle=True``,
``chunk_rows=8192``, ``max_buffer_rows=2_000_000``, ``replay_tail_rows=1_000_000``, ``name``.

Example::

    import logging, time
    from data_collector import DataCollector, DataCollectionContext, Variable
    from data_reader.random import RandomDataReader
    from data_writer.hdf5 import Hdf5DataWriter, list_runs, read_frame

    writer = Hdf5DataWriter("runs/experiment-{start:%Y%m%d-%H%M%S}.h5")
    variables = [Variable(1, "sine", "float", "random", 100), Variable(2, "counter", "int", "random", 500)]
    with DataCollector(logging.getLogger("lab"), [RandomDataReader()], [writer]) as collector:
        context = DataCollectionContext(7, variables, metadata={"operator": "CG", "sample": "S-12"})
        collector.start(context)
        time.sleep(2)
        collector.stop(7)
    path = writer.path_for(7, context.start_date)
    print(list_runs(path)[0].metadata)          # {'operator': 'CG', 'sample': 'S-12'}
    print(read_frame(path).head())              # context_id, run, time, variable_id, address, ...
"""

from ._layout import FORMAT, FORMAT_VERSION, run_key
from ._read import (
    FRAME_COLUMNS,
    RunInfo,
    StoredSample,
    list_runs,
    read_frame,
    read_samples,
    read_wide_frame,
    table_keys,
)
from ._scan import scan_key
from ._writer import REPLAY_KEY, Hdf5DataWriter, Hdf5WriteError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FRAME_COLUMNS",
    "REPLAY_KEY",
    "Hdf5DataWriter",
    "Hdf5WriteError",
    "RunInfo",
    "StoredSample",
    "list_runs",
    "read_frame",
    "read_samples",
    "read_wide_frame",
    "run_key",
    "scan_key",
    "table_keys",
]
