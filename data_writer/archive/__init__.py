"""Archive plugin: the ``archive`` writer, files named by Jinja2 templates, and their readers.

Serves setups that want every value, waveform or batch as a file of its own, named from the
run's metadata (the herostools archivers' job, run on the collector's writer task with its
queue, bounded retries and spool): one file per sample, per variable or per batch, as NumPy
``.npy``, JSON or CSV, at ``root/<template>``; e.g.
``{{ metadata.sample | slug }}/{{ read_at.strftime('%Y%m%d') }}/wave-{{ '%06d' % seq }}.npy``.
Templates render in a sandboxed Jinja2 environment; a path that is absolute, holds ``..`` or
leads out of the root (symbolic links included) is refused; an existing file is never
overwritten (``name-1.ext``, ``name-2.ext``, ... instead); files are fsync-ed with their folder
before ``write()`` returns; a retried or replayed batch does not write a committed file twice.
Extra ``archive`` (Jinja2, NumPy). Options, fields, formats and guarantees:
``data_writer/archive/README.md``.

Example::

    import logging, time
    from pathlib import Path
    from data_collector import DataCollector, DataCollectionContext, Variable
    from data_reader.random import RandomDataReader
    from data_writer.archive import ArchiveDataWriter, load_npy

    writer = ArchiveDataWriter("archive", "{{ sample }}/v{{ variable.id }}/{{ '%06d' % seq }}.npy")
    with DataCollector(logging.getLogger("lab"), [RandomDataReader()], [writer]) as c:
        c.start(DataCollectionContext(7, [Variable(1, "sine", "float", "random", 100)],
                                      duration_s=1, metadata={"sample": "S-12"}))
        time.sleep(1.5)
    first = sorted(Path("archive/S-12/v1").glob("*.npy"))[0]
    print(first, load_npy(first))
"""

from ._errors import ArchiveWriteError
from ._formats import CSV_COLUMNS, FORMATS, ArchivedSample, load_npy, read_samples
from ._store import MAX_SUFFIX, PERMANENT_ERRNOS, SEQ_BLOCK
from ._template import DEFAULT_TEMPLATES, STATE_DIR, UnsafePathError, slug
from ._writer import PER, REPLAY_KEY, ArchiveDataWriter

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_TEMPLATES",
    "FORMATS",
    "MAX_SUFFIX",
    "PER",
    "PERMANENT_ERRNOS",
    "REPLAY_KEY",
    "SEQ_BLOCK",
    "STATE_DIR",
    "ArchiveDataWriter",
    "ArchiveWriteError",
    "ArchivedSample",
    "UnsafePathError",
    "load_npy",
    "read_samples",
    "slug",
]
