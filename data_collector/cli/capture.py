"""``data-collector capture CONFIG -- COMMAND ARGS...``: collect exactly while a command runs.

Serves lab and test-bench users whose experiment is a script: the file's contexts (or those
given with ``--context``) start when the command's process has started and stop when it has
exited, however it exits; the run's deduced metadata says what ran (command line, working
directory, the script with its absolute path, SHA-256 and arguments) and how it ended
(``exit_status``, ``ended``). ``data-collector capture`` exits with the command's exit status.

Order of events: the configuration is loaded and checked, the writers and the readers the
contexts need are opened (and a spool of an earlier run is replayed), the command is started
(no shell: ``COMMAND`` is looked up on ``PATH``), then the contexts start; when the command has
exited they stop, every value read is written, and the summary goes to standard error (the
command keeps standard input, output and error to itself).

Signals (the library handles none; this command does, while the command runs): SIGTERM is
forwarded to the command, and so is SIGINT unless the command shares data-collector's process
group and that group is its terminal's foreground group (then a Ctrl-C at that terminal has
reached the command already, and a second copy would interrupt its clean-up). data-collector
then waits for the command, whatever it does with the signal. Before the command started, a
signal cancels the capture (exit 130); after it exited, a second signal stops waiting for the
writers (what is not written stays in the spool).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from .._collector import DataCollector
from .._config import Configuration, load_config
from .._errors import ConfigurationError, DataCollectionError
from .._model import DataCollectionContext
from ._common import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_STARTUP, _log
from ._session import MetricsServer, _Session, _spool_dir, lock_spool, metrics_server

#: The description of ``data-collector capture --help``.
CAPTURE_HELP = """\
Collect exactly while COMMAND runs: the writers and readers are opened, COMMAND is started (no
shell), the contexts start (all of the file's, or those given with --context; start_at is
ignored, duration_s still ends a context early), and when COMMAND has exited, normally, with an
error or by a signal, they stop and every value read is written. Then data-collector exits.

Exit status: COMMAND's exit status (128+N when signal N killed it), so scripts and CI see the
experiment's outcome. Problems of the collection itself (samples BAD, missed, lost, dropped or
unwritten) do not change it: the summary on stderr lists them, and samples that did not reach
the store are reported in a WARNING line even with -q; --strict turns a 0 into 1 then. When
COMMAND did not run at all: 2 configuration or usage error, 3 startup error (a reader or writer
failed to open; or a context failed to start, then COMMAND is stopped with SIGTERM), 126 COMMAND
not executable, 127 not found, 130 cancelled by a signal before COMMAND started.

Signals: SIGTERM is forwarded to COMMAND, and so is SIGINT unless a Ctrl-C at the terminal reached
COMMAND already (it shares the terminal's foreground process group with data-collector);
data-collector waits for COMMAND whatever it does with them. After COMMAND exited, a second
SIGINT/SIGTERM stops waiting for the writers (unwritten values stay in the spool).

Metadata: --metadata goes into each run's user metadata (a key the file's context metadata has
with another value is an error); the deduced metadata records the command line, working
directory and pid (command), the script (script: absolute path, sha256, arguments; for
`python [options] FILE`, a file run directly that starts with #!, or else the first argument
that is an existing file; `python -m MOD` records the module), exit_status, signal (when one
killed it), interrupted_by, and ended: completed (status 0), failed, or interrupted (SIGINT or
SIGTERM arrived while it ran). The spool is that of `run` (--spool-dir, --no-spool).
data-collector's own messages go to stderr; COMMAND keeps stdin, stdout and stderr.

Example:
  data-collector capture bench.toml --metadata operator=ana --metadata setpoint:=21.5 \\
      -- python sweep.py --steps 20
"""

#: Exit statuses of a command that could not be started (those of POSIX shells).
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
#: Each argument kept in the metadata is cut to this many characters.
MAX_ARG_CHARS = 1000
_PYTHON = re.compile(r"^(python|pypy)(\d+(\.\d+)*)?t?(\.exe)?$", re.IGNORECASE)
_PYTHON_VALUE_OPTIONS = ("--check-hash-based-pycs",)


# -- what runs -----------------------------------------------------------------------------------
def parse_metadata(items: Sequence[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` (a string) and ``KEY:=JSON`` (a number, true, a list...) as a mapping."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key or key == ":":
            raise ConfigurationError(f"--metadata {item!r}: write KEY=VALUE (a string) or KEY:=JSON")
        if key.endswith(":"):
            key = key[:-1]
            try:
                out[key] = json.loads(value)
            except ValueError as exc:
                raise ConfigurationError(f"--metadata {item!r}: the value is not JSON ({exc})") from None
        else:
            out[key] = value
    return out


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ARG_CHARS else text[: MAX_ARG_CHARS - 3] + "..."


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _python_target(argv: Sequence[str]) -> dict[str, Any] | None:
    """What a Python interpreter runs: ``{"script": path, "args": [...]}``, ``{"module": name,
    "args": [...]}``, or None (``-c``, standard input, nothing)."""
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a == "-" or not a.startswith("-"):
            break
        if a.startswith("--"):
            i += 2 if a in _PYTHON_VALUE_OPTIONS else 1
            continue
        flags = a[1:]
        for j, ch in enumerate(flags):
            if ch in "cmWX":
                attached = flags[j + 1 :]
                value = attached or (argv[i + 1] if i + 1 < len(argv) else "")
                rest = list(argv[i + (1 if attached else 2) :])
                if ch == "c":
                    return None
                if ch == "m":
                    return {"module": value, "args": rest}
                i += 1 if attached else 2
                break
        else:
            i += 1
    if i >= len(argv) or argv[i] == "-":
        return None
    return {"script": argv[i], "args": list(argv[i + 1 :])}


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte: not a file
        return False


def _has_shebang(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"#!"
    except OSError:
        return False


def describe_command(argv: Sequence[str], cwd: Path) -> dict[str, Any]:
    """The deduced metadata of a command about to run: ``command`` (``argv``, ``cwd``,
    ``executable``) and, when one is found, ``script`` (``path`` made absolute, ``sha256``,
    ``args``) or, for ``python -m``, ``module`` and ``args``.

    The script: for a Python interpreter (``python``, ``python3.11``, ``pypy3``...) the file it
    runs (after its options); for a script run directly (``./measure.sh``: a file starting with
    ``#!``) that file; else the first argument that is an existing file (``bash measure.sh``).
    """
    executable = shutil.which(argv[0]) or argv[0]
    found: dict[str, Any] = {
        "command": {"argv": [_cut(a) for a in argv], "cwd": str(cwd), "executable": executable}
    }
    target: dict[str, Any] | None = None
    if _PYTHON.match(Path(argv[0]).name) or os.path.realpath(executable) == os.path.realpath(sys.executable):
        target = _python_target(argv)
    else:
        exe = Path(executable)
        if _is_file(exe) and _has_shebang(exe):
            target = {"script": str(exe), "args": list(argv[1:])}
        else:
            for i, a in enumerate(argv[1:], start=1):
                if not a.startswith("-") and _is_file(cwd / a):
                    target = {"script": a, "args": list(argv[i + 1 :])}
                    break
    if target is None:
        return found
    args = [_cut(a) for a in target["args"]]
    if "module" in target:
        found["script"] = {"module": target["module"], "args": args}
        return found
    path = (cwd / target["script"]).absolute()
    found["script"] = {"path": str(path), "sha256": _sha256(path), "args": args}
    return found


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it: its exit status, or 128 + N when signal N killed it."""
    return returncode if returncode >= 0 else 128 - returncode


# -- signals -----------------------------------------------------------------------------------------
class _Forwarder:
    """SIGINT/SIGTERM while capturing: before the command starts they cancel (a second one exits at
    once), while it runs they go to the command, after it exited a second one exits at once."""

    def __init__(self, err: IO[str]) -> None:
        self._err = err
        self._old: dict[int, Any] = {}
        self.phase = "starting"  # starting, spawning, running, draining
        self.child: subprocess.Popen[bytes] | None = None
        self.cancelled = ""  # the signal that cancelled the capture before the command started
        self.interrupted = ""  # the first signal received while the command ran
        self.pending: list[int] = []  # received while the command was being started
        self._drain_signals = 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.phase == "starting":
            if self.cancelled:
                self._exit(f"{name} again: exiting at once")
            self.cancelled = name
            self._say(f"{name}: the command is not started; closing")
        elif self.phase == "spawning":
            self.interrupted = self.interrupted or name
            self.pending.append(signum)
        elif self.phase == "running":
            self.interrupted = self.interrupted or name
            self.forward(signum)
        else:
            self._drain_signals += 1
            if self._drain_signals > 1:
                self._exit(f"{name} again: exiting without waiting for the writers")
            self._say(f"{name}: still writing what was read; {name} again exits without waiting")

    def forward(self, signum: int) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        if signum == signal.SIGINT and _terminal_reaches(child.pid):
            return  # the terminal's Ctrl-C went to the command's process group already
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    def _say(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._err.write(f"\n{text}\n")
            self._err.flush()

    def _exit(self, text: str) -> None:
        self._say(text)
        os._exit(EXIT_INTERRUPTED)

    def __enter__(self) -> _Forwarder:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):  # not the main thread: no handlers
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, old)
        self._old.clear()


def _terminal_reaches(pid: int) -> bool:
    """Whether a Ctrl-C at our controlling terminal reaches process ``pid``: it is in our process
    group and that group is the terminal's foreground group."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False  # no controlling terminal: the signal came from a process (kill, a supervisor)
    try:
        group = os.getpgrp()
        return os.tcgetpgrp(fd) == group and os.getpgid(pid) == group
    except OSError:
        return False
    finally:
        os.close(fd)


# -- the command -------------------------------------------------------------------------------------
def _cmd_capture(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        err.write("error: capture needs a command to run: data-collector capture CONFIG -- COMMAND ARGS...\n")
        return EXIT_CONFIG
    metadata = parse_metadata(args.metadata)
    config = load_config(args.config)
    ids = list(dict.fromkeys(args.context or [c.id for c in config.contexts]))
    contexts = [config.context(cid) for cid in ids]
    if not contexts:
        err.write(f"error: {config.source} has no contexts to capture\n")
        return EXIT_CONFIG
    spool_dir = _spool_dir(args, config)
    lock, status = lock_spool(spool_dir, err)
    if status != EXIT_OK:
        return status
    try:
        metrics = metrics_server(args)
        try:
            return _capture(args, argv, metadata, config, contexts, spool_dir, err, metrics)
        finally:
            if metrics is not None:
                metrics.close()
    finally:
        if lock is not None:
            lock.release()


def _capture(
    args: argparse.Namespace,
    argv: list[str],
    metadata: dict[str, Any],
    config: Configuration,
    contexts: list[DataCollectionContext],
    spool_dir: Path | None,
    err: IO[str],
    metrics: MetricsServer | None = None,
) -> int:
    quiet: bool = args.quiet
    session = _Session(config, err, err, live=False, spool_dir=spool_dir)
    session.metrics = metrics
    cwd = Path.cwd()

    def prepare(collector: DataCollector) -> None:
        for context in contexts:
            collector._add_metadata(context, metadata)
        collector._prepare(contexts)

    with _Forwarder(err) as fwd:
        try:
            status = session.start(prepare)
            if status != EXIT_OK:
                return status
            collector = session.collector
            assert collector is not None
            facts = describe_command(argv, cwd)
            if not quiet:
                spool = f"spooling to {spool_dir}" if spool_dir is not None else "no spool (--no-spool)"
                names = ", ".join(str(c.id) for c in contexts)
                lines = [
                    f"capturing context{'s' if len(contexts) > 1 else ''} {names} of {args.config} while "
                    f"{_shown(argv)} runs; {spool}",
                    *session.replay_lines(),
                ]
                if metrics is not None:
                    lines.append(f"metrics: {metrics.url}")
                err.write("\n".join(lines) + "\n")
                err.flush()
            fwd.phase = "spawning"  # from now on a signal is for the command
            if fwd.cancelled:
                session.stop()
                err.write(f"capture cancelled by {fwd.cancelled} before the command started\n")
                return EXIT_INTERRUPTED
            try:
                child = subprocess.Popen(argv)  # no shell: argv as given
            except OSError as exc:
                fwd.phase = "draining"
                session.stop()
                code = EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_NOT_EXECUTABLE
                err.write(f"error: cannot run {argv[0]!r}: {exc.strerror or exc}; nothing was collected\n")
                return code
            fwd.child = child
            fwd.phase = "running"
            for signum in fwd.pending:
                fwd.forward(signum)
            deduced = {**facts, "command": {**facts["command"], "pid": child.pid}}
            failed = _start(collector, contexts, deduced)
            if failed is not None:
                err.write(f"error: collection did not start: {failed}; stopping the command (SIGTERM)\n")
                err.flush()
                fwd.forward(signal.SIGTERM)
            returncode = child.wait()
            fwd.phase = "draining"
            code = exit_status(returncode)
            ended = "interrupted" if fwd.interrupted else "completed" if code == 0 else "failed"
            more: dict[str, Any] = {"exit_status": code}
            if returncode < 0:
                more["signal"] = _signal_name(-returncode)
            if fwd.interrupted:
                more["interrupted_by"] = fwd.interrupted
            _finish(collector, contexts, ended, more)
            session.stop()
        except BaseException:
            _end_child(fwd.child, err)  # never leave the command running behind an error of ours
            session.stop()
            raise
    if failed is not None:
        return EXIT_STARTUP
    how = f"was killed by {more['signal']}" if "signal" in more else f"exited with status {code}"
    if fwd.interrupted:
        how += f" (after {fwd.interrupted})"
    lines, problems, losses = session.report(f"the command {how}")
    if problems:
        passed = code
        if args.strict and code == EXIT_OK:
            passed = EXIT_FAILED
        lines.append(
            f"collection: samples {', '.join(problems)}; exit status {passed}"
            + (" (--strict)" if passed != code else " (the command's)")
        )
        code = passed
    else:
        lines.append(f"exit status {code} (the command's)")
    if not quiet:
        err.write("\n".join(lines) + "\n")
    elif problems:
        err.write(lines[-1] + "\n")
    if losses:
        err.write(
            f"WARNING: {losses} samples read while the command ran are NOT in the store (lost, dropped "
            f"or unwritten: see the writer lines of the summary); exit status {code}\n"
        )
    err.flush()
    return code


def _end_child(child: subprocess.Popen[bytes] | None, err: IO[str], grace_s: float = 10.0) -> None:
    """An error of data-collector's own while the command runs: stop the command (SIGTERM, then
    SIGKILL after ``grace_s``) and wait for it, saying so, rather than leave it running unwatched."""
    if child is None or child.poll() is not None:
        return
    err.write(f"error: data-collector failed while the command ran; stopping it (pid {child.pid}, SIGTERM)\n")
    err.flush()
    try:
        child.terminate()
        child.wait(grace_s)
    except subprocess.TimeoutExpired:
        err.write(f"error: the command did not end within {grace_s:g} s of SIGTERM; killing it (SIGKILL)\n")
        child.kill()
        child.wait()
    except OSError:
        pass  # it ended meanwhile


def _shown(argv: Sequence[str]) -> str:
    text = " ".join(argv)
    return f"`{text if len(text) <= 80 else text[:77] + '...'}`"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _start(
    collector: DataCollector, contexts: list[DataCollectionContext], deduced: dict[str, Any]
) -> str | None:
    """Start every context (the command runs); the error that stopped that, else None."""
    for context in contexts:
        try:
            collector._begin_capture(context, None, deduced)
        except DataCollectionError as exc:
            return str(exc)
    return None


def _finish(
    collector: DataCollector, contexts: list[DataCollectionContext], ended: str, more: dict[str, Any]
) -> None:
    """Stop the contexts at once (side by side: one's drain does not delay another's stop)."""
    errors: list[BaseException] = []

    def stop(context: DataCollectionContext) -> None:
        try:
            collector._finish(context, ended, more)
        except BaseException as exc:  # reported below; the others still stop
            errors.append(exc)

    threads = [threading.Thread(target=stop, args=(c,), name=f"dc-capture-stop-{c.id}") for c in contexts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for exc in errors:
        _log.error("stopping a captured context failed: %s", exc, exc_info=exc)
