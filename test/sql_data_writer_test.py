"""SqlDataWriter against real databases: SQLite files, the local PostgreSQL and MariaDB servers.

Every test runs on its own table prefix, dropped afterwards (see ``_cases.sql_cases``).
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from _cases.sql_cases import (
    MARIADB_URL,
    POSTGRES_URL,
    boom_trigger,
    drop_tables,
    execute_sql,
    require_database,
    sql_store,
    unique_prefix,
)
from _util import LOG, RecordingWriter, free_port, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_collector import (
    CollectedVariable,
    CollectedVariables,
    ConfigurationError,
    DataCollectionContext,
    DataCollector,
    DataReader,
    Quality,
    Variable,
    WriterError,
)
from data_writer.sql import (
    SCHEMA_VERSION,
    SqlDataWriter,
    read_contexts,
    read_samples,
    read_samples_frame,
)

KINDS = ["sqlite", "postgresql", "mariadb"]
T0 = datetime(2024, 5, 17, 8, 30, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=KINDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    with sql_store(request.param, tmp_path) as store:
        yield store


@pytest.fixture
def writer(db: tuple[str, str]) -> Iterator[SqlDataWriter]:
    url, prefix = db
    w = SqlDataWriter(url, table_prefix=prefix)
    w.open()
    yield w
    w.close()


def _ctx(cid: int, variables: list[Variable], **kw: Any) -> DataCollectionContext:
    return DataCollectionContext(cid, variables, **kw)


def _batch(variables: list[Variable], values: list[Any], t0: datetime = T0, **kw: Any) -> CollectedVariables:
    return CollectedVariables(
        CollectedVariable(v, value, t0 + timedelta(microseconds=i), **kw)
        for i, (v, value) in enumerate(zip(variables, values, strict=True))
    )


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type; floats compared bit for bit (NaN, -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return bool(a == b)


def _count(url: str, prefix: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {prefix}samples").scalar_one())
    finally:
        engine.dispose()


EDGE_VALUES: list[Any] = [
    0.1,
    1 / 3,
    -0.0,
    0.0,
    5e-324,
    1.7976931348623157e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    2**64 - 1,  # uint64 max
    -(2**64),
    10**40,
    True,
    False,
    "",
    "plain",
    " trailing blank ",
    "Grüße, naïve café, Ελληνικά, 日本語, emoji 🚀𝄞",
    "x" * 300_000 + "é",
    "nul\x00inside",
    "lone \ud800 surrogate",
    b"\x00\xffbytes",
    datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    Decimal("1.10"),
    [1, 2.5, "x", None, True, {"k": [1, "ü"]}],
    {"a": 1, "b": [None, False], "c": "ü"},
    None,
]


def test_every_value_round_trips_exactly(writer: SqlDataWriter) -> None:
    variables = [Variable(i, f"v{i}", "str", "r") for i in range(len(EDGE_VALUES))]
    ctx = _ctx(1, variables)
    writer.write(ctx, _batch(variables, EDGE_VALUES))
    rows = writer.read_samples(1)
    assert len(rows) == len(EDGE_VALUES)
    for row, expected in zip(rows, EDGE_VALUES, strict=True):
        assert _same(row.value, expected), (row.variable_id, row.value, expected)
        assert row.quality is Quality.GOOD and row.error is None
    assert [r.read_at for r in rows] == [T0 + timedelta(microseconds=i) for i in range(len(EDGE_VALUES))]
    assert writer.values_refused == 0


def test_each_value_stays_with_its_variable_whatever_the_order_of_the_batches(writer: SqlDataWriter) -> None:
    # The writer reuses the keys of the last batch when the next has the same variables in the
    # same order (a reader's next tick); any other batch must get its own keys.
    variables = [Variable(i, f"v{i}", "int", "r") for i in range(1, 6)]
    orders = [variables, variables, variables[::-1], variables[:2], variables[1:] + variables[:1], variables]
    look_alikes = [Variable(v.id, v.address, v.value_type, v.reader_type) for v in variables]  # new objects
    orders.append(look_alikes)
    ctx = _ctx(12, variables)
    for tick, order in enumerate(orders):
        at = T0 + timedelta(seconds=tick)
        writer.write(ctx, CollectedVariables(CollectedVariable(v, tick * 100 + v.id, at) for v in order))
    rows = writer.read_samples(12)
    expected = sorted(
        (T0 + timedelta(seconds=tick), v.id, tick * 100 + v.id)
        for tick, order in enumerate(orders)
        for v in order
    )
    assert [(r.read_at, r.variable_id, r.value) for r in rows] == expected
    assert all(r.address == f"v{r.variable_id}" for r in rows)


def test_unstorable_values_are_refused_with_an_error_and_the_batch_kept(
    writer: SqlDataWriter, caplog: pytest.LogCaptureFixture
) -> None:
    variables = [Variable(i, f"v{i}", "float", "r") for i in range(4)]
    values: list[Any] = [1.5, (1, 2), object(), [1, (2, 3)]]
    with caplog.at_level(logging.ERROR, logger="data_writer.sql"):
        writer.write(_ctx(2, variables), _batch(variables, values))
    rows = writer.read_samples(2)
    assert [r.value for r in rows] == [1.5, None, None, None]
    assert [r.quality for r in rows] == [Quality.GOOD, Quality.BAD, Quality.BAD, Quality.BAD]
    assert "refused by SqlDataWriter" in (rows[1].error or "") and "tuple" in (rows[1].error or "")
    assert "builtins.object" in (rows[2].error or "")
    assert "JSON" in (rows[3].error or "")
    assert writer.values_refused == 3
    assert sum("refused" in r.getMessage() for r in caplog.records) == 3


def test_float_batches_with_special_values_and_mixed_times(writer: SqlDataWriter) -> None:
    """All-float batches take a column fast path; NaN, infinities and zeros must leave it exactly."""
    variables = [Variable(i, f"f{i}", "float", "r") for i in range(6)]
    ctx = _ctx(15, variables)
    batches = [
        [1.5, 2.5, 3.5, 4.5, 5.5, 6.5],
        [1.5, 0.0, 3.5, -0.0, 5.5, 6.5],
        [1.5, float("nan"), 3.5, 4.5, float("inf"), 6.5],
        [1e308, 1e308, 1e308, -1e308, 1e308, 1e308],  # the sum overflows: every value still finite
    ]
    expected: list[Any] = []
    expected_times: list[datetime] = []
    for b, values in enumerate(batches):
        at = T0 + timedelta(seconds=b)
        items = CollectedVariables.of(variables, at)  # one read time object for the batch, as ticks have
        items.values[:] = values
        writer.write(ctx, items)
        expected += values
        expected_times += [at] * 6
    mixed = _batch(variables, [7.5] * 6, T0 + timedelta(seconds=9))  # a time per item
    writer.write(ctx, mixed)
    expected += [7.5] * 6
    expected_times += list(mixed.read_ats)  # type: ignore[arg-type]
    rows = writer.read_samples(15)
    assert len(rows) == len(expected)
    for row, value in zip(rows, expected, strict=True):
        assert _same(row.value, value), (row, value)
    assert [r.read_at for r in rows] == expected_times


def test_qualities_errors_and_timestamps(writer: SqlDataWriter) -> None:
    v = [Variable(1, "a", "float", "r"), Variable(2, "b", "int", "r"), Variable(3, "c", "str", "r")]
    plus2 = timezone(timedelta(hours=2))
    items = CollectedVariables(
        [
            CollectedVariable(
                v[0], 1.25, datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC), Quality.UNCERTAIN, "stale"
            ),
            CollectedVariable(
                v[1],
                None,
                datetime(2099, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                Quality.BAD,
                "timeout: Zeitüberschreitung",
            ),
            CollectedVariable(v[2], "ok", datetime(2024, 6, 1, 12, 0, 0, 500000, tzinfo=plus2)),
        ]
    )
    writer.write(_ctx(3, v), items)
    rows = writer.read_samples(3)  # in time order
    assert [(r.value, r.quality, r.error) for r in rows] == [
        (1.25, Quality.UNCERTAIN, "stale"),
        ("ok", Quality.GOOD, None),
        (None, Quality.BAD, "timeout: Zeitüberschreitung"),
    ]
    assert [r.read_at for r in rows] == [items[0].read_at, items[2].read_at, items[1].read_at]
    for r in rows:
        assert r.read_at.utcoffset() == timedelta(0)
    assert rows[1].read_at.hour == 10  # stored as the same instant, read back in UTC
    assert [(r.variable_id, r.address, r.value_type, r.reader_type) for r in rows] == [
        (1, "a", "float", "r"),
        (3, "c", "str", "r"),
        (2, "b", "int", "r"),
    ]


def test_schema_tables_index_and_version(writer: SqlDataWriter, db: tuple[str, str]) -> None:
    url, prefix = db
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        for name in ("samples", "variables", "contexts", "schema_version"):
            assert inspector.has_table(prefix + name)
        key = inspector.get_pk_constraint(prefix + "samples")["constrained_columns"]
        assert key == ["context_id", "read_at", "variable_key"]  # the identity of a sample, time first
        assert inspector.get_indexes(prefix + "samples") == []  # no other index to maintain
        with engine.connect() as conn:
            versions = conn.exec_driver_sql(f"SELECT version FROM {prefix}schema_version").scalars().all()
            if engine.dialect.name == "sqlite":  # one B-tree: the key is the table
                ddl = conn.exec_driver_sql(
                    f"SELECT sql FROM sqlite_master WHERE name = '{prefix}samples'"
                ).scalar_one()
                assert "WITHOUT ROWID" in ddl
        assert versions == [SCHEMA_VERSION] == [4]
        # A store written by a later version is refused, naming the version.
        with engine.begin() as conn:
            conn.exec_driver_sql(
                f"INSERT INTO {prefix}schema_version (version, applied_at) VALUES (99, '2030-01-01 00:00:00')"
            )
        later = SqlDataWriter(url, table_prefix=prefix)
        with pytest.raises(ConfigurationError, match="schema version 99"):
            later.open()
        later.close()
    finally:
        engine.dispose()


def test_foreign_table_with_the_prefix_is_refused(db: tuple[str, str]) -> None:
    url, prefix = db
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE {prefix}samples (something INTEGER)")
        w = SqlDataWriter(url, table_prefix=prefix)
        with pytest.raises(ConfigurationError, match=f"{prefix}samples"):
            w.open()
        w.close()
        with engine.connect() as conn:  # left untouched
            assert conn.exec_driver_sql(f"SELECT COUNT(*) FROM {prefix}samples").scalar_one() == 0
    finally:
        engine.dispose()


def test_one_transaction_per_batch(writer: SqlDataWriter, db: tuple[str, str]) -> None:
    url, prefix = db
    cleanup = boom_trigger(url, prefix)
    try:
        variables = [Variable(i, f"v{i}", "str", "r") for i in range(500)]
        ctx = _ctx(4, variables)
        ok = [f"s{i}" for i in range(500)]
        writer.write(ctx, _batch(variables, ok))
        bad = list(ok)
        bad[400] = "boom"  # the 401st row fails: none of the batch may stay
        with pytest.raises(WriterError, match="boom refused"):
            writer.write(ctx, _batch(variables, bad, T0 + timedelta(seconds=1)))
        assert _count(url, prefix) == 500
        writer.write(ctx, _batch(variables, ok, T0 + timedelta(seconds=2)))  # the writer goes on
        rows = writer.read_samples(4)
        assert len(rows) == 1000 and [r.value for r in rows] == ok + ok
    finally:
        execute_sql(url, cleanup)


def test_reopen_appends_runs_and_samples(db: tuple[str, str]) -> None:
    url, prefix = db
    variables = [Variable(1, "a", "float", "r"), Variable(2, "b", "int", "r")]
    for run in range(3):
        w = SqlDataWriter(url, table_prefix=prefix)
        ctx = _ctx(7, variables, metadata={"run": run, "operator": "Zoë"})
        ctx._start_date = T0 + timedelta(minutes=run)  # what the collector sets
        w.context_started(ctx)  # opens on first use
        w.write(ctx, _batch(variables, [run + 0.5, run], T0 + timedelta(minutes=run, seconds=1)))
        ctx._end_date = T0 + timedelta(minutes=run, seconds=30)
        w.context_stopped(ctx)
        w.close()
    rows = read_samples(url, 7, table_prefix=prefix)
    assert [r.value for r in rows] == [0.5, 0, 1.5, 1, 2.5, 2]
    runs = read_contexts(url, 7, table_prefix=prefix)
    assert [(r.start, r.end, r.metadata) for r in runs] == [
        (T0 + timedelta(minutes=i), T0 + timedelta(minutes=i, seconds=30), {"run": i, "operator": "Zoë"})
        for i in range(3)
    ]
    assert read_contexts(url, 8, table_prefix=prefix) == []


def test_context_stopped_after_reopen_closes_the_open_run(db: tuple[str, str]) -> None:
    url, prefix = db
    ctx = _ctx(9, [Variable(1, "a", "float", "r")], metadata={"k": [1, 2]})
    ctx._start_date = T0
    first = SqlDataWriter(url, table_prefix=prefix)
    first.context_started(ctx)
    first.close()
    second = SqlDataWriter(url, table_prefix=prefix)  # another process, say
    ctx._end_date = T0 + timedelta(hours=1)
    second.context_stopped(ctx)
    assert [(r.start, r.end, r.metadata) for r in second.read_contexts(9)] == [
        (T0, ctx.end_date, {"k": [1, 2]})
    ]
    second.close()


def test_variable_redefinition_keeps_both_definitions(writer: SqlDataWriter) -> None:
    old = Variable(5, "40001", "int", "plc")
    new = Variable(5, "40001/u32", "int", "plc", interval_ms=200)
    same_as_new = Variable(5, "40001/u32", "int", "plc", interval_ms=500)
    writer.write(_ctx(10, [old]), _batch([old], [1]))
    writer.write(_ctx(11, [new]), _batch([new], [2], T0 + timedelta(seconds=1)))
    writer.write(_ctx(11, [same_as_new]), _batch([same_as_new], [3], T0 + timedelta(seconds=2)))
    assert [(r.address, r.value) for r in writer.read_samples(10)] == [("40001", 1)]
    assert [(r.address, r.value) for r in writer.read_samples(11)] == [("40001/u32", 2), ("40001/u32", 3)]
    engine = writer.engine
    with engine.connect() as conn:
        n = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {writer.table_prefix}variables").scalar_one()
    assert n == 2


def test_many_threads_share_one_writer(writer: SqlDataWriter) -> None:
    threads_n, batches, size = 4, 25, 40
    errors: list[BaseException] = []

    def work(t: int) -> None:
        variables = [Variable(t * 1000 + i, f"t{t}/{i}", "int", "r") for i in range(size)]
        ctx = _ctx(100 + t % 2, variables)
        try:
            for b in range(batches):
                values = [t * 1_000_000 + b * 1000 + i for i in range(size)]
                writer.write(ctx, _batch(variables, values, T0 + timedelta(seconds=b)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors and not any(th.is_alive() for th in threads)
    rows = writer.read_samples(100) + writer.read_samples(101)
    assert len(rows) == threads_n * batches * size == writer.samples_written
    assert sorted(r.value for r in rows) == sorted(
        t * 1_000_000 + b * 1000 + i for t in range(threads_n) for b in range(batches) for i in range(size)
    )
    for r in rows:  # each value stored with its own variable
        assert r.value // 1_000_000 * 1000 + r.value % 1000 == r.variable_id


def test_read_back_filters_and_frame(writer: SqlDataWriter, db: tuple[str, str]) -> None:
    url, prefix = db
    variables = [Variable(1, "a", "float", "r"), Variable(2, "b", "str", "r"), Variable(3, "c", "bool", "r")]
    ctx = _ctx(12, variables)
    for s in range(10):
        writer.write(ctx, _batch(variables, [s * 1.5, f"s{s}", s % 2 == 0], T0 + timedelta(seconds=s)))
    writer.write(_ctx(13, variables), _batch(variables, [0.0, "other", True]))
    assert len(read_samples(url, 12, table_prefix=prefix)) == 30
    only = read_samples(url, 12, variable_ids=[1, 3], table_prefix=prefix)
    assert {r.variable_id for r in only} == {1, 3} and len(only) == 20
    window = read_samples(
        url,
        12,
        start=T0 + timedelta(seconds=2),
        end=T0 + timedelta(seconds=5),
        variable_ids=[1],
        table_prefix=prefix,
    )
    assert [r.value for r in window] == [3.0, 4.5, 6.0]  # start included, end excluded
    frame = read_samples_frame(url, 12, variable_ids=[2], table_prefix=prefix)
    assert list(frame.columns) == [
        "context_id",
        "variable_id",
        "address",
        "value_type",
        "reader_type",
        "read_at",
        "value",
        "quality",
        "error",
        "name",
        "unit",
        "value_float",
    ]
    assert list(frame["value"]) == [f"s{s}" for s in range(10)]
    assert str(frame["read_at"].dt.tz) == "UTC"
    assert frame["read_at"].iloc[3].to_pydatetime() == T0 + timedelta(seconds=3, microseconds=1)
    assert set(frame["quality"]) == {"GOOD"}
    assert len(writer.read_samples_frame(13)) == 3
    empty = read_samples_frame(url, 99, table_prefix=prefix)
    assert len(empty) == 0 and "read_at" in empty.columns
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        read_samples(url, 12, start=datetime(2024, 1, 1), table_prefix=prefix)
    with pytest.raises(ConfigurationError, match="no data-collector tables"):
        read_samples(url, 12, table_prefix=unique_prefix())


def test_sqlite_runs_in_wal_mode_with_pragmas(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wal.sqlite'}"
    w = SqlDataWriter(url, sqlite_pragmas={"cache_size": -4000})
    w.open()
    try:
        with w.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -4000
        assert w.insert_path == "pysqlite executemany"
    finally:
        w.close()
    assert (tmp_path / "wal.sqlite").exists()


def test_sqlite_in_memory_is_shared_by_writer_and_reads() -> None:
    w = SqlDataWriter("sqlite://")
    v = [Variable(1, "a", "float", "r")]
    done = threading.Event()

    def write() -> None:  # from another thread, as the collector does
        w.write(_ctx(1, v), _batch(v, [2.5]))
        done.set()

    threading.Thread(target=write).start()
    assert done.wait(10)
    assert [r.value for r in w.read_samples(1)] == [2.5]
    w.close()


def test_fast_insert_paths(db: tuple[str, str]) -> None:
    url, prefix = db
    w = SqlDataWriter(url, table_prefix=prefix)
    expected = {
        "sqlite": "pysqlite executemany",
        "postgresql": "psycopg binary COPY",
        "mysql": "pymysql executemany",
    }
    assert w.insert_path == expected[sa.make_url(url).get_backend_name()]
    w.close()


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_reconnects_when_the_server_drops_the_connection(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with sql_store(kind, tmp_path) as (url, prefix):
        w = SqlDataWriter(url, table_prefix=prefix)
        variables = [Variable(1, "a", "int", "r")]
        ctx = _ctx(14, variables)
        w.write(ctx, _batch(variables, [1]))
        conn = w._conn  # white box: the writer's own connection, to kill exactly that one
        assert conn is not None
        if kind == "postgresql":
            backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            conn.rollback()
            execute_sql(url, [f"SELECT pg_terminate_backend({int(backend)})"])
        else:
            backend = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar_one()
            conn.rollback()
            execute_sql(url, [f"KILL CONNECTION {int(backend)}"])
        with caplog.at_level(logging.INFO, logger="data_writer.sql"):
            w.write(ctx, _batch(variables, [2], T0 + timedelta(seconds=1)))  # reconnects by itself
        assert "connection to" in caplog.text and "lost" in caplog.text and "reconnecting" in caplog.text
        assert [r.value for r in w.read_samples(14)] == [1, 2]
        w.close()


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_unreachable_server_error_names_host_not_password(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    scheme = "postgresql+psycopg" if kind == "postgresql" else "mysql+pymysql"
    url = f"{scheme}://plant:s3cr3t-Pw0rd@127.0.0.1:{port}/test"
    w = SqlDataWriter(url, connect_timeout_s=2)
    assert "s3cr3t" not in repr(w) and "s3cr3t" not in w.url
    with pytest.raises(WriterError) as info:
        w.open()
    text = str(info.value)
    assert f"127.0.0.1:{port}" in text and "cannot connect" in text
    assert "s3cr3t" not in text
    chain: BaseException | None = info.value
    while chain is not None:
        assert "s3cr3t" not in str(chain) and "s3cr3t" not in repr(chain.args)
        chain = chain.__cause__ or chain.__context__
    # Through the collector: start() fails naming the host; nothing logged shows the password.
    with caplog.at_level(logging.DEBUG), DataCollector(LOG, [_Reader()], [w]) as c:
        with pytest.raises(WriterError, match=f"127.0.0.1:{port}") as started:
            c.start(_ctx(1, [Variable(1, "a", "float", "t")]))
        assert "s3cr3t" not in str(started.value)
    assert "s3cr3t" not in caplog.text


def test_wrong_password_error_names_host_not_password() -> None:
    require_database(MARIADB_URL)
    url = sa.make_url(MARIADB_URL).set(password="Wr0ng-s3cr3t")
    w = SqlDataWriter(url, connect_timeout_s=5)
    with pytest.raises(WriterError) as info:
        w.open()
    assert "127.0.0.1" in str(info.value) and "Access denied" in str(info.value)
    assert "Wr0ng" not in str(info.value) and "Wr0ng" not in repr(w)


def test_sqlite_unopenable_file_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    path = blocker / "x.sqlite"  # its directory cannot be created: a file stands there
    w = SqlDataWriter(f"sqlite:///{path}")
    with pytest.raises(WriterError, match="cannot create the directory") as info:
        w.open()
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": "not a url"}, "invalid database url 'not a url'"),
        (
            {"url": "postgresql+nosuchdriver://u:hidden-pw@h/db"},
            r"no SQLAlchemy driver for postgresql\+nosuchdriver://u:\*\*\*@h/db",
        ),
        ({"url": "foo://u:hidden-pw@@h/db"}, r"\*\*\*"),
        ({"url": ""}, "url must be"),
        ({"table_prefix": "Bad-Prefix"}, "'Bad-Prefix'"),
        ({"table_prefix": "1abc"}, "'1abc'"),
        ({"table_prefix": "x" * 41}, "at most 40"),
        ({"table_prefix": 5}, "got 5"),
        ({"connect_timeout_s": 0}, "connect_timeout_s must be a number > 0, got 0"),
        ({"sqlite_pragmas": {"journal_mode": "WAL; DROP TABLE x"}}, "invalid SQLite pragma"),
        ({"url": POSTGRES_URL, "sqlite_pragmas": {"cache_size": 1}}, "sqlite_pragmas given for a postgresql"),
        ({"name": ""}, "name must be"),
    ],
)
def test_bad_configuration_is_refused_naming_the_value(
    kwargs: dict[str, Any], match: str, tmp_path: Path
) -> None:
    kwargs.setdefault("url", f"sqlite:///{tmp_path / 'x.sqlite'}")
    with pytest.raises(ConfigurationError, match=match) as info:
        SqlDataWriter(**kwargs)
    assert "hidden-pw" not in str(info.value)


def test_out_of_range_ids_and_missing_read_at_are_refused(writer: SqlDataWriter) -> None:
    # ids a BIGINT cannot hold are refused where they are made (the model checks them) ...
    with pytest.raises(ConfigurationError, match=str(2**63)):
        Variable(2**63, "a", "int", "r")
    v = Variable(1, "a", "int", "r")
    with pytest.raises(ConfigurationError, match="signed 64-bit"):
        _ctx(2**64, [v])
    # ... and a read_at left out is refused by the writer
    with pytest.raises(ConfigurationError, match="no read_at"):
        writer.write(_ctx(1, [v]), CollectedVariables([CollectedVariable(v, 1)]))
    assert writer.read_samples(1) == []


# -- end to end through the collector -----------------------------------------------------------


class _Reader(DataReader):
    reader_type = "t"

    def __init__(self) -> None:
        super().__init__(min_interval_ms=10)
        self.n = 0

    def read(self, variables: CollectedVariables) -> None:
        self.n += 1
        for item in variables:
            if item.variable.value_type == "float":
                item.value = self.n / 8
            elif item.variable.value_type == "int":
                item.value = 2**64 - self.n
            else:
                item.value = f"n={self.n} ✓"


def test_collector_end_to_end_with_restart_of_a_context(db: tuple[str, str]) -> None:
    url, prefix = db
    writer = SqlDataWriter(url, table_prefix=prefix)
    rec = RecordingWriter()
    variables = [
        Variable(1, "f", "float", "t", 20),
        Variable(2, "i", "int", "t", 20),
        Variable(3, "s", "str", "t", 40),
    ]
    with DataCollector(LOG, [_Reader()], [writer, rec]) as collector:
        first = _ctx(50, variables, min_interval_ms=10, metadata={"lot": "L-1"})
        collector.start(first)
        wait_for(lambda: len(rec.of(50)) >= 30, 20, "first run")
        collector.stop(50)
        n_first = len(rec.of(50))
        second = _ctx(50, variables, min_interval_ms=10, metadata={"lot": "L-2"})
        collector.start(second)
        wait_for(lambda: len(rec.of(50)) >= n_first + 30, 20, "second run")
    stored = read_samples(url, 50, table_prefix=prefix)
    delivered = rec.of(50)
    assert len(stored) == len(delivered) == writer.samples_written
    assert [(s.variable_id, s.read_at, s.value, s.quality) for s in stored] == [
        (r.variable_id, r.read_at, r.value, r.quality) for r in delivered
    ]
    runs = read_contexts(url, 50, table_prefix=prefix)
    assert [(r.start, r.end, r.metadata) for r in runs] == [
        (first.start_date, first.end_date, {"lot": "L-1"}),
        (second.start_date, second.end_date, {"lot": "L-2"}),
    ]
    assert all(r.start is not None and r.end is not None and r.start < r.end for r in runs)
    assert {type(s.value) for s in stored} == {float, int, str}


def test_writer_failure_is_retried_and_logs_hide_the_password(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """PostgreSQL here accepts any password (trust): a URL with one must never show it."""
    require_database(POSTGRES_URL)
    url = sa.make_url(POSTGRES_URL).set(password="Hidden-Pw-42")
    prefix = unique_prefix()
    plain = POSTGRES_URL
    try:
        writer = SqlDataWriter(url, table_prefix=prefix)
        writer.open()
        cleanup = boom_trigger(plain, prefix)
        variables = [Variable(1, "boom", "str", "b")]

        class Boom(DataReader):
            reader_type = "b"

            def __init__(self) -> None:
                super().__init__(min_interval_ms=10)
                self.n = 0

            def read(self, items: CollectedVariables) -> None:
                self.n += 1
                for item in items:
                    item.value = "boom" if self.n <= 3 else f"fine {self.n}"

        with caplog.at_level(logging.WARNING), DataCollector(LOG, [Boom()], [writer], write_retry_s=0.2) as c:
            c.start(_ctx(60, variables, min_interval_ms=10))
            wait_for(lambda: _count(plain, prefix) >= 5, 20, "rows after the failing ones")
        assert "boom refused" in caplog.text  # the failure was logged ...
        assert "Hidden-Pw" not in caplog.text  # ... without the password
        values = [r.value for r in read_samples(plain, 60, table_prefix=prefix)]
        assert "boom" not in values and len(values) >= 5
        execute_sql(plain, cleanup)
    finally:
        drop_tables(plain, prefix)


# -- property: any mix of values and times round-trips ---------------------------------------------

_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40),
    st.binary(max_size=20),
    st.none(),
)
_times = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7))]),
)


@pytest.fixture(scope="module", params=KINDS)
def module_writer(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SqlDataWriter]:
    with sql_store(request.param, tmp_path_factory.mktemp("hyp")) as (url, prefix):
        w = SqlDataWriter(url, table_prefix=prefix)
        yield w
        w.close()


_context_ids = iter(range(1000, 10**6))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(st.tuples(_values, _times, st.sampled_from(list(Quality))), min_size=1, max_size=30))
def test_property_any_values_round_trip(
    module_writer: SqlDataWriter, data: list[tuple[Any, datetime, Quality]]
) -> None:
    cid = next(_context_ids)
    variables = [Variable(i, f"p{i}", "str", "hyp") for i in range(len(data))]
    batch = CollectedVariables(
        CollectedVariable(v, value, at, quality)
        for v, (value, at, quality) in zip(variables, data, strict=True)
    )
    module_writer.write(_ctx(cid, variables), batch)
    rows = module_writer.read_samples(cid)
    assert len(rows) == len(data)
    in_time_order = sorted(data, key=lambda d: d[1])  # stable: then by variable, as stored
    for row, (value, at, quality) in zip(rows, in_time_order, strict=True):
        assert _same(row.value, value), (row, value)
        assert row.read_at == at and row.read_at.utcoffset() == timedelta(0)
        assert row.quality is quality


def test_sqlite_file_in_a_new_directory(tmp_path: Path) -> None:
    db = tmp_path / "new" / "deeper" / "plant.sqlite"
    writer = SqlDataWriter(f"sqlite:///{db}")
    writer.open()
    writer.close()
    assert db.exists()


@pytest.mark.parametrize("bits", [0x7FF8000000000001, 0xFFF8000000000000, 0x7FF0000000000123])
def test_nan_payloads_round_trip(bits: int, tmp_path: Path) -> None:
    value = struct.unpack("<d", struct.pack("<Q", bits))[0]
    url = f"sqlite:///{tmp_path / 'nan.sqlite'}"
    v = Variable(1, "n", "float", "hyp")
    writer = SqlDataWriter(url)
    writer.open()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    writer.write(_ctx(1, [v]), CollectedVariables([CollectedVariable(v, value, at)]))
    writer.close()
    (row,) = read_samples(url, 1)
    assert struct.pack("<d", row.value) == struct.pack("<d", value)
