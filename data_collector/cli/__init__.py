"""The ``data-collector`` command: run, validate and commission collections from a TOML file.

One module per command (:mod:`.run`, :mod:`.capture`, :mod:`.validate`, :mod:`.read`, :mod:`.demo`,
:mod:`.export`, :mod:`.migrate`, :mod:`.spool`, :mod:`.tail`, :mod:`.plugins`, :mod:`.simulator`);
:mod:`._session` holds the
collecting session and live view of ``run`` and ``demo``, :mod:`._common` the shared output helpers
and exit statuses, :mod:`._main` the parser and :func:`main`. ``data_collector._cli`` is an alias of
this package's :func:`main` (installs made before the package existed point their console script
there).

Serves plant engineers at a terminal: everything the library does, driven by a configuration file
(format: :mod:`data_collector._config`), with no Python to write. Subcommands::

    data-collector run CONFIG [--duration S] [--quiet] [--spool-dir DIR | --no-spool]
                       [--metrics-port PORT [--metrics-addr ADDR]] [--status-every S]
        collect until every context ends, or Ctrl-C / SIGTERM (both stop gracefully: every value
        already read is written before the command exits; a second Ctrl-C exits at once). On a
        terminal a live table shows, per context, samples, rate, bad values and time left, and per
        reader and writer the missed, lost and unwritten samples and what the writer's spool holds;
        without one (a service, a log file), one status line every ``--status-every`` seconds
        (60; 0: none). ``--metrics-port`` serves ``stats()`` for Prometheus at
        ``http://ADDR:PORT/metrics`` while it runs (:mod:`data_collector.metrics`, extra ``metrics``).
        Store-and-forward: every value read goes to a spool on disk first and leaves it once its
        writer stored it. The spool folder is ``--spool-dir DIR`` if given, else the file's
        ``[collector] spool_dir``, else ``<config stem>.spool/`` beside the configuration file
        (``plant.toml`` -> ``plant.spool/``); ``--no-spool`` keeps values in memory only.
        With a spool, a store that is down at start does not stop the run (a writer whose
        ``open()`` fails with a transient error is retried in the background while its data
        spools); what was not written when the command ends (a crash, kill -9, a store still down
        at Ctrl-C) stays in the spool and the next run on that spool writes it first ("replayed").
        One run at a time per spool (a lock file in it; a second run exits 3).
    data-collector capture CONFIG [--context ID] [--metadata KEY=VALUE] [--strict] [--metrics-port PORT]
                           -- COMMAND ARGS...
        collect exactly while COMMAND runs (a child process, no shell): the contexts start when it
        has started and stop when it has exited; its command line, script (absolute path,
        SHA-256, arguments), exit status and how it ended go into the runs' deduced metadata.
        Exits with COMMAND's status (collection problems are reported, and turn a 0 into 1 with
        ``--strict``); SIGTERM, and SIGINT not already sent by the terminal, are forwarded to it.
    data-collector validate CONFIG [--spool-dir DIR | --no-spool]
        check everything that can be checked without connecting; list every problem with its key
        path (with a spool, also writers that share a name: each needs a spool folder of its own).
    data-collector spool DIR|CONFIG [--retry-quarantine | --drop [--yes]]
        per writer, what a spool holds (samples not written yet, records, bytes, the oldest) and
        what it quarantined (batches a writer refused for good, with the reasons); a configuration
        file stands for its spool folder. ``--retry-quarantine`` puts the quarantined batches back
        into the spool (the next run writes them first); ``--drop --yes`` deletes everything
        spooled and quarantined (``--drop`` alone says what it would delete). Both refuse while a
        run uses the spool.
    data-collector read CONFIG [--context ID] [--timeout S]
        connect, read every variable once, print value, quality and error: the commissioning tool.
    data-collector demo [--seconds 20] [--out ./data-collector-demo] [--modbus-port 0] [--opcua-port 0]
        start the embedded Modbus and OPC UA simulators, collect into SQLite and CSV, show live
        values, then say where the data is and how to look at it.
    data-collector export SOURCE [--context ID] [--run N] [--list] [-o FILE.csv|FILE.parquet]
        samples of a SQL store (a SQLAlchemy URL, an SQLite file, or a configuration file with a
        ``sql`` writer) or of an HDF5 file of the ``hdf5`` writer (``.h5``/``.hdf5`` or the HDF5
        signature; ``--run`` picks runs) to CSV (standard output by default) or Parquet (needs
        pyarrow), with the same columns for both.
    data-collector tail REDIS_URL [--prefix dc] [--context ID] [--variable ID] [--from-start]
                        [--count N] [--seconds S]
        follow the streams of the ``redis`` writer live (XREAD BLOCK), one plain line per sample;
        Ctrl-C ends it with exit status 0 (needs the extra ``redis``).
    data-collector migrate SOURCE [--check] [--table-prefix dc_] [--writer N]
        bring the tables of an older SQL writer to this version's schema, in place (once, with no
        writer running on the store); ``--check`` only says which version the store has.
    data-collector plugins [--verbose] [TYPE ...]
        the reader and writer types available to configuration files, and where they come from;
        with ``--verbose`` (or for the TYPEs given) every option of each: default, type, meaning.
    data-collector simulator {modbus,opcua} [options]
        run a simulator (``--help`` after the name lists its options).

Exit status: 0 success; 1 the command ran but values were read BAD (``read``), or (``run``) a
sample was BAD, missed, lost, dropped or left unwritten (the summary's last line says which;
samples an earlier run left in the spool and this one wrote are fine), or (``spool``) batches
are quarantined, or (``migrate --check``) the store has an older schema (``capture`` exits
with its command's status, see its ``--help``); 2
configuration or usage error (a bad ``--port`` of ``simulator`` included; ``spool --drop``
without ``--yes``); 3 startup error (a reader or writer failed to open for good,
a simulator could not listen, the spool is in use by another run).

Example::

    data-collector simulator modbus --port 5020 &
    data-collector simulator opcua --port 4840 &
    data-collector validate examples/plant.toml && data-collector run examples/plant.toml
    data-collector spool examples/plant.toml      # what examples/plant.spool/ holds
"""

from ._common import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_STARTUP
from ._main import build_parser, main

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STARTUP",
    "build_parser",
    "main",
]
