"""A flush of an HDF5 file that reports failure: PyTables ignores what ``H5Fflush`` returns.

PyTables' ``File.flush()`` and ``File.close()`` call ``H5Fflush`` / ``H5Fclose`` without looking
at the result, so a write that fails at that point (disk full, quota, I/O error) goes unnoticed
and the file is silently damaged (PyTables issue #695). This module finds the HDF5 library that
PyTables uses (the one loaded in this process) and calls ``H5Fflush`` on the open file's id
itself, which returns a negative value when something could not be written; HDF5 keeps what it
could not write dirty, so a later flush writes it once the cause is gone.

When that library cannot be found or does not know the file's id (an unusual PyTables build),
:func:`flush_checked` returns ``None`` and failures of the flush itself stay undetected (the
writer still checks the free disk space before each flush).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from pathlib import Path
from typing import Any

import tables

__all__ = ["flush_checked"]

_H5I_FILE = 1
_H5F_SCOPE_LOCAL = 0

_lock = threading.Lock()
_lib: Any = None
_searched = False


def _candidates() -> list[str]:
    found: list[str] = []
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/maps") as maps:
                for line in maps:
                    path = line.rsplit(None, 1)[-1] if "/" in line else ""
                    name = Path(path).name
                    if name.startswith("libhdf5") and "_hl" not in name and path not in found:
                        found.append(path)
        except OSError:
            pass
    base = Path(tables.__file__).resolve().parent
    for folder in (base, base.parent / "tables.libs", base.parent / "tables" / ".dylibs"):
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if p.name.startswith(("libhdf5", "hdf5")) and "_hl" not in p.name and str(p) not in found:
                    found.append(str(p))
    system = ctypes.util.find_library("hdf5")
    if system and system not in found:
        found.append(system)
    return found


def _library(file_id: int) -> Any:
    """The HDF5 library (ctypes) in which ``file_id`` is a valid file id, or ``None``."""
    global _lib, _searched
    with _lock:
        if _lib is not None or _searched:
            return _lib
        _searched = True
        for path in _candidates():
            try:
                lib = ctypes.CDLL(path)
                lib.H5Iis_valid.argtypes = [ctypes.c_int64]
                lib.H5Iis_valid.restype = ctypes.c_int
                lib.H5Iget_type.argtypes = [ctypes.c_int64]
                lib.H5Iget_type.restype = ctypes.c_int
                lib.H5Fflush.argtypes = [ctypes.c_int64, ctypes.c_int]
                lib.H5Fflush.restype = ctypes.c_int
                if lib.H5Iis_valid(file_id) > 0 and lib.H5Iget_type(file_id) == _H5I_FILE:
                    _lib = lib
                    break
            except (OSError, AttributeError):
                continue
        return _lib


def flush_checked(h5: Any) -> bool | None:
    """Flush the PyTables file ``h5``: True when everything was written, False when HDF5 reports a
    failure, None when this cannot be checked (PyTables' own flush is done either way).

    The bulk of a flush (compressing and writing the chunks in HDF5's cache) runs in our
    ``H5Fflush`` call, which ctypes makes without holding the GIL, so other threads (the readers)
    run meanwhile; PyTables' flush, which holds the GIL, then finds little left to do.
    """
    file_id = int(h5._v_objectid)
    lib = _library(file_id)
    if lib is None:
        h5.flush()
        return None
    first = lib.H5Fflush(file_id, _H5F_SCOPE_LOCAL) >= 0
    h5.flush()  # PyTables' own bookkeeping (leaf buffers), then its unchecked H5Fflush
    again = lib.H5Fflush(file_id, _H5F_SCOPE_LOCAL) >= 0
    return bool(first and again)
