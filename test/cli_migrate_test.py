"""``data-collector migrate``, driven as a user would (subprocesses), on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from _cases.sql_cases import make_v1_store, make_v2_store, sql_store
from cli_demo_export_test import cli

from data_writer.sql import SCHEMA_VERSION, read_contexts, read_samples, stored_schema_version

T0 = datetime(2024, 9, 1, 6, 0, 0, 125000, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    with sql_store(request.param, tmp_path) as s:
        yield s


def _source(url: str) -> str:
    """What a user types: the file for SQLite, the URL for a server."""
    parsed = sa.make_url(url)
    return str(parsed.database) if parsed.get_backend_name() == "sqlite" else url


def test_migrate_a_version_2_store(store: tuple[str, str], tmp_path: Path) -> None:
    url, prefix = store
    make_v2_store(url, prefix, T0)
    source = _source(url)
    check = cli(["migrate", source, "--check", "--table-prefix", prefix], tmp_path)
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"schema version 2; this data-collector writes {SCHEMA_VERSION}: run data-collector migrate" in (
        check.stdout
    )
    assert stored_schema_version(url, table_prefix=prefix) == 2  # --check changes nothing

    done = cli(["migrate", source, "--table-prefix", prefix], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"migrated from schema version 2 to {SCHEMA_VERSION}: 2 samples, 0 repeated samples dropped" in (
        done.stdout
    )
    assert stored_schema_version(url, table_prefix=prefix) == SCHEMA_VERSION
    (run,) = read_contexts(url, 3, table_prefix=prefix)
    assert run.metadata == {"lot": 7} and run.deduced_metadata == {}
    assert [r.value for r in read_samples(url, 3, table_prefix=prefix)] == [0, 1]

    again = cli(["migrate", source, "--table-prefix", prefix], tmp_path)
    assert again.returncode == 0 and "nothing to do (2 samples)" in again.stdout, again.stdout + again.stderr
    current = cli(["migrate", source, "--check", "--table-prefix", prefix], tmp_path)
    assert current.returncode == 0 and f"schema version {SCHEMA_VERSION}, current" in current.stdout


def test_migrate_a_version_1_store_named_by_its_configuration_file(tmp_path: Path) -> None:
    db = tmp_path / "plant.sqlite"
    url = f"sqlite:///{db}"
    expected = make_v1_store(url, "plant_", T0)
    (tmp_path / "plant.toml").write_text(
        '[[readers]]\ntype = "random"\n'
        f'[[writers]]\ntype = "sql"\nurl = "{url}"\ntable_prefix = "plant_"\nio_timeout_s = 5\n'
        '[[contexts]]\nid = 1\nvariables = [{ id = 1, address = "sine", value_type = "float" }]\n',
        encoding="utf-8",
    )
    done = cli(["migrate", "plant.toml"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"tables plant_* in {url}: migrated from schema version 1 to {SCHEMA_VERSION}: 5 samples, 1 " in (
        done.stdout
    )
    rows = read_samples(url, 3, table_prefix="plant_")
    assert sorted((r.variable_id, r.read_at) for r in rows) == sorted((e[0], e[1]) for e in expected)


def test_migrate_says_what_is_wrong(tmp_path: Path) -> None:
    missing = cli(["migrate", "nothing.sqlite"], tmp_path)
    assert missing.returncode == 2 and "no such file: 'nothing.sqlite'" in missing.stderr
    empty = tmp_path / "empty.sqlite"
    sa.create_engine(f"sqlite:///{empty}").connect().close()
    none = cli(["migrate", "empty.sqlite", "--check"], tmp_path)
    assert none.returncode == 2 and "no data-collector tables with prefix 'dc_'" in none.stderr, none.stderr
    newer = tmp_path / "newer.sqlite"
    make_v2_store(f"sqlite:///{newer}", "dc_", T0)
    engine = sa.create_engine(f"sqlite:///{newer}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO dc_schema_version (version, applied_at) VALUES (99, ?)",
            ((T0 + timedelta(days=1)).isoformat(" "),),
        )
    engine.dispose()
    check = cli(["migrate", "newer.sqlite", "--check"], tmp_path)
    assert check.returncode == 2 and "schema version 99, newer than this data-collector's" in check.stdout
    refused = cli(["migrate", "newer.sqlite"], tmp_path)
    assert refused.returncode == 2 and "upgrade data-collector" in refused.stderr, refused.stderr
