"""SQL writer throughput: SqlDataWriter vs. the raw driver's best bulk insert, same schema, same run.

For each database (SQLite file, the local PostgreSQL and MariaDB servers; a server that does not
answer is reported and skipped) and for two workloads (1,000 float samples per batch; 1,000
mixed float/int/bool/str samples per batch), one transaction per batch:

- ``ours``: ``SqlDataWriter.write(context, batch)`` from ``CollectedVariables`` (values encoded,
  times converted, variables looked up: everything the writer does in production);
- ``raw``: the driver alone inserting the same rows, already built as tuples, with a plain
  ``INSERT`` / ``COPY`` that does not check for samples stored already (the strictest baseline):
  ``sqlite3`` ``executemany`` of one-row and of 100-row ``INSERT`` statements, psycopg
  ``executemany`` and binary ``COPY`` (the best method counts; the others are shown too);
  PyMySQL ``executemany``;
- ``raw+conv``: the raw driver plus the minimal tuple building a hand-written writer would do.

Every insert gets fresh samples (ours, raw and raw+conv write to three contexts, each round to
new read times), into the writer's own schema (version 4: primary key (context, read time,
variable)); ours also skips samples already stored, which costs it nothing on SQLite (``ON
CONFLICT DO NOTHING``) and nothing until a duplicate shows up on PostgreSQL/MariaDB (optimistic
insert). Rounds alternate ours / raw / raw+conv so that table growth and machine load hit all
alike; the median rows/s of the rounds is reported. Bounded in time (about 20 s per database). Prints a
table, then one JSON line. Runs with ``python bench/sql_bench.py``; URLs from
``DC_TEST_POSTGRES_URL`` / ``DC_TEST_MARIADB_URL``.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _shared import connect_psycopg, connect_pymysql, reachable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_collector import CollectedVariable, CollectedVariables, DataCollectionContext, Variable
from data_writer.sql import SCHEMA_VERSION, SqlDataWriter
from data_writer.sql._schema import epoch_us

BATCH = 1000
N_VARIABLES = 100  # 10 ticks of 100 variables per batch
SECONDS_PER_DB = 20.0
MAX_ROUNDS = 25
POSTGRES_URL = os.environ.get("DC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("DC_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
COLUMNS = (
    "context_id",
    "variable_key",
    "read_at",
    "value_kind",
    "value_num",
    "value_int",
    "value_text",
    "quality",
    "error",
)
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def make_batches(
    workload: str, n: int, first_tick: int = 0
) -> tuple[list[Variable], list[CollectedVariables]]:
    if workload == "float":
        types = ["float"] * N_VARIABLES
    else:
        types = [("float", "int", "bool", "str")[i % 4] for i in range(N_VARIABLES)]
    variables = [Variable(i + 1, f"plc1/{t}/{i}", t, "bench", 100) for i, t in enumerate(types)]
    batches = []
    tick = first_tick
    for _ in range(n):
        items = []
        for _ in range(BATCH // N_VARIABLES):
            at = T0 + timedelta(milliseconds=100 * tick)
            for v in variables:
                x = tick * 0.37 + v.id
                value: Any
                if v.value_type == "float":
                    value = x
                elif v.value_type == "int":
                    value = tick * 1000 + v.id
                elif v.value_type == "bool":
                    value = tick % 2 == 0
                else:
                    value = f"state-{tick % 7}"
                items.append(CollectedVariable(v, value, at))
            tick += 1
        batches.append(CollectedVariables(items))
    return variables, batches


def encode_minimal(
    batch: CollectedVariables, keys: dict[int, int], ts: Callable[[datetime], Any], context_id: int
) -> list[tuple[Any, ...]]:
    """What a hand-written writer would do: one tuple per sample from the batch's columns."""
    rows = []
    for var, value, at, quality in zip(
        batch.variables, batch.values, batch.read_ats, batch.qualities, strict=True
    ):
        t = type(value)
        num = value if t is float else None
        ival = int(value) if t is int or t is bool else None
        text = value if t is str else None
        rows.append((context_id, keys[var.id], ts(at), t.__name__, num, ival, text, quality.value, None))  # type: ignore[arg-type]
    return rows


class Raw:
    """A raw driver connection inserting prebuilt tuples into the writer's samples table."""

    name = ""
    ts: Callable[[datetime], Any] = staticmethod(lambda d: d)

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def iso(d: datetime) -> str:
    return d.isoformat(" ", "microseconds")[:26]


class RawSqlite(Raw):
    name = "sqlite3 executemany"
    ts = staticmethod(epoch_us)

    def __init__(self, path: str, table: str) -> None:
        self.con = sqlite3.connect(path)
        self.con.execute("PRAGMA journal_mode = WAL")
        self.con.execute("PRAGMA synchronous = NORMAL")
        self.sql = f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        with self.con:
            self.con.executemany(self.sql, rows)

    def close(self) -> None:
        self.con.close()


class RawSqliteMulti(RawSqlite):
    """100-row INSERT statements (what SqlDataWriter sends): the faster raw way on SQLite."""

    name = "sqlite3 100-row executemany"

    def __init__(self, path: str, table: str) -> None:
        super().__init__(path, table)
        one = f"({', '.join('?' * len(COLUMNS))})"
        self.head = f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES "
        self.one = one
        self.full = self.head + ", ".join([one] * 100)

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        flat = tuple(itertools.chain.from_iterable(rows))
        width = len(COLUMNS)
        whole = len(rows) - len(rows) % 100
        with self.con:
            self.con.executemany(
                self.full, [flat[i : i + 100 * width] for i in range(0, whole * width, 100 * width)]
            )
            if whole < len(rows):
                rest = self.head + ", ".join([self.one] * (len(rows) - whole))
                self.con.execute(rest, flat[whole * width :])


class RawPsycopgCopy(Raw):
    name = "psycopg binary COPY"

    def __init__(self, url: sa.URL, table: str) -> None:
        self.con = connect_psycopg(url)
        self.sql = f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        with self.con.cursor() as cur, cur.copy(self.sql) as copy:
            copy.set_types(
                ["int8", "int4", "timestamptz", "varchar", "float8", "int8", "text", "varchar", "text"]
            )
            for row in rows:
                copy.write_row(row)
        self.con.commit()

    def close(self) -> None:
        self.con.close()


class RawPsycopgMany(RawPsycopgCopy):
    name = "psycopg executemany"

    def __init__(self, url: sa.URL, table: str) -> None:
        super().__init__(url, table)
        self.sql = f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        with self.con.cursor() as cur:
            cur.executemany(self.sql, rows)
        self.con.commit()


class RawPyMySQL(Raw):
    name = "pymysql executemany"
    ts = staticmethod(iso)

    def __init__(self, url: sa.URL, table: str) -> None:
        self.con = connect_pymysql(url)
        self.sql = f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"

    def insert(self, rows: list[tuple[Any, ...]]) -> None:
        with self.con.cursor() as cur:
            cur.executemany(self.sql, rows)
        self.con.commit()

    def close(self) -> None:
        self.con.close()


def convert_and_insert(raw: Raw, batch: CollectedVariables, keys: dict[int, int], context_id: int) -> None:
    """The raw+conversion method: encode the batch as a hand-written writer would, then insert it."""
    raw.insert(encode_minimal(batch, keys, raw.ts, context_id))


def timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_db(label: str, url: str, results: dict[str, Any], rows_out: list[list[str]]) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    parsed = sa.make_url(url)
    writer = SqlDataWriter(url, table_prefix=prefix)
    engine = sa.create_engine(url)
    try:
        writer.open()
        table = f"{prefix}samples"
        for w_index, workload in enumerate(("float", "mixed")):
            base = 1 + 10 * w_index  # each workload writes its own contexts
            # One fresh batch per insert: ours (context base), each raw method, raw+conv (the next ones).
            n = MAX_ROUNDS + 1
            variables, batches = make_batches(workload, n)
            _, fresh = make_batches(workload, n * 4, first_tick=n * 10)
            ctx = DataCollectionContext(base, variables)
            writer.write(ctx, batches[0])  # registers the variables; warms up
            with engine.connect() as conn:
                keys = {
                    int(vid): int(key)
                    for key, vid in conn.exec_driver_sql(
                        f"SELECT id, variable_id FROM {prefix}variables"
                    ).all()
                }
            if parsed.get_backend_name() == "sqlite":
                raws: list[Raw] = [
                    RawSqliteMulti(str(parsed.database), table),
                    RawSqlite(str(parsed.database), table),
                ]
            elif parsed.get_backend_name() == "postgresql":
                raws = [RawPsycopgCopy(parsed, table), RawPsycopgMany(parsed, table)]
            else:
                raws = [RawPyMySQL(parsed, table)]
            prebuilt = {
                id(r): [encode_minimal(b, keys, r.ts, base + 1 + i) for b in fresh[:n]]
                for i, r in enumerate(raws)
            }
            conv_ctx = base + 1 + len(raws)
            ours: list[float] = []
            raw: dict[str, list[float]] = {r.name: [] for r in raws}
            conv: list[float] = []
            deadline = time.monotonic() + SECONDS_PER_DB / 2
            rounds = 0
            while rounds < MAX_ROUNDS and (rounds < 3 or time.monotonic() < deadline):
                rounds += 1
                b = rounds
                ours.append(BATCH / timed(functools.partial(writer.write, ctx, batches[b])))
                for r in raws:
                    raw[r.name].append(BATCH / timed(functools.partial(r.insert, prebuilt[id(r)][b])))
                conv.append(
                    BATCH
                    / timed(functools.partial(convert_and_insert, raws[0], fresh[n + b], keys, conv_ctx))
                )
            assert writer.duplicates_skipped == 0
            for r in raws:
                r.close()
            med_ours = statistics.median(ours)
            med_raw = {name: statistics.median(v) for name, v in raw.items()}
            best_name = max(med_raw, key=lambda n: med_raw[n])
            med_conv = statistics.median(conv)
            ratio = med_ours / med_raw[best_name]
            results[f"{label}/{workload}"] = {
                "ours_rows_s": round(med_ours),
                "ours_path": writer.insert_path,
                "raw_rows_s": round(med_raw[best_name]),
                "raw_method": best_name,
                "raw_all": {k: round(v) for k, v in med_raw.items()},
                "raw_conv_rows_s": round(med_conv),
                "ratio_vs_raw": round(ratio, 3),
                "ratio_vs_raw_conv": round(med_ours / med_conv, 3),
                "rounds": rounds,
            }
            rows_out.append(
                [
                    f"{label}/{workload}",
                    f"{med_ours:,.0f}",
                    f"{med_raw[best_name]:,.0f} ({best_name})",
                    f"{med_conv:,.0f}",
                    f"{ratio:.2f}",
                    f"{med_ours / med_conv:.2f}",
                ]
            )
            for name, v in med_raw.items():
                if name != best_name:
                    rows_out.append([f"  (also {name})", "", f"{v:,.0f}", "", "", ""])
    finally:
        writer.close()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP VIEW IF EXISTS {prefix}samples_view")  # first: it reads the tables
            for t in ("samples", "variables", "contexts", "schema_version"):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {prefix}{t}")
        engine.dispose()


def main() -> None:
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    table: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, url in (
            ("sqlite", f"sqlite:///{Path(tmp) / 'bench.sqlite'}"),
            ("postgresql", POSTGRES_URL),
            ("mariadb", MARIADB_URL),
        ):
            if not reachable(url):
                skipped[label] = f"unreachable: {sa.make_url(url).render_as_string(hide_password=True)}"
                continue
            bench_db(label, url, results, table)
    header = [
        "database/workload",
        "ours rows/s",
        "raw rows/s (method)",
        "raw+conv rows/s",
        "ours/raw",
        "ours/raw+conv",
    ]
    widths = [max(len(str(r[i])) for r in [header, *table]) for i in range(len(header))]
    print(
        f"SqlDataWriter vs raw driver, batches of {BATCH} rows, one transaction per batch (median of rounds)"
    )
    for row in [header, ["-" * w for w in widths], *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    for label, why in skipped.items():
        print(f"{label}: skipped ({why})")
    print(
        json.dumps(
            {
                "bench": "sql",
                "schema_version": SCHEMA_VERSION,
                "batch": BATCH,
                "results": results,
                "skipped": skipped,
            }
        )
    )


if __name__ == "__main__":
    main()
