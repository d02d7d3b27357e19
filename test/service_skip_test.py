"""The skip rule of the server tests (issue 14), against the real local servers.

A test that needs PostgreSQL, MariaDB, Redis or an MQTT broker skips with a clear reason when the
server is unreachable or refuses the test's login (wrong credentials, no such database), and
fails instead under ``DC_REQUIRE_SERVICES=1``; any other error stays a failure. The refused logins
here are real: a role or password the local servers do not know, a Mosquitto started by the test
that refuses anonymous clients.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from _cases import require_service
from _cases.sql_cases import MARIADB_URL, POSTGRES_URL, login_refused, require_database
from _util import free_port, wait_for

Skipped = pytest.skip.Exception
Failed = pytest.fail.Exception


def _outcome(call: Callable[[], None], monkeypatch: pytest.MonkeyPatch, required: bool) -> str:
    if required:
        monkeypatch.setenv("DC_REQUIRE_SERVICES", "1")
    else:
        monkeypatch.delenv("DC_REQUIRE_SERVICES", raising=False)
    with pytest.raises((Skipped, Failed)) as info:
        call()
    kind = "failed" if isinstance(info.value, Failed) else "skipped"
    assert kind == ("failed" if required else "skipped"), info.value
    return str(info.value)


def _server_up(url: str) -> None:
    parsed = sa.make_url(url)
    require_service(parsed.host or "127.0.0.1", parsed.port or 0, parsed.get_backend_name())


@pytest.mark.parametrize("required", [False, True], ids=["skip", "DC_REQUIRE_SERVICES=1"])
def test_unreachable_server(monkeypatch: pytest.MonkeyPatch, required: bool) -> None:
    url = sa.make_url(POSTGRES_URL).set(host="127.0.0.1", port=free_port()).render_as_string(False)
    reason = _outcome(lambda: require_database(url), monkeypatch, required)
    assert "unreachable at 127.0.0.1" in reason


@pytest.mark.parametrize("required", [False, True], ids=["skip", "DC_REQUIRE_SERVICES=1"])
@pytest.mark.parametrize(
    ("base", "change", "said"),
    [
        (POSTGRES_URL, {"username": "dc_no_such_role", "password": "S3cret-pw"}, "dc_no_such_role"),
        (POSTGRES_URL, {"database": "dc_no_such_database"}, "dc_no_such_database"),
        (MARIADB_URL, {"password": "Wr0ng-S3cret"}, "Access denied"),
        (MARIADB_URL, {"database": "dc_no_such_database"}, "dc_no_such_database"),
    ],
    ids=["postgres-role", "postgres-database", "mariadb-password", "mariadb-database"],
)
def test_refused_login(
    monkeypatch: pytest.MonkeyPatch, base: str, change: dict[str, str], said: str, required: bool
) -> None:
    _server_up(base)  # this test itself needs the real server
    url = sa.make_url(base).set(**change).render_as_string(hide_password=False)  # type: ignore[arg-type]
    reason = _outcome(lambda: require_database(url), monkeypatch, required)
    assert "refused the test login" in reason and said in reason, reason
    variable = "DC_TEST_POSTGRES_URL" if base == POSTGRES_URL else "DC_TEST_MARIADB_URL"
    assert variable in reason
    for secret in ("S3cret-pw", "Wr0ng-S3cret"):
        assert secret not in reason  # the password is never shown


def test_the_configured_servers_log_in() -> None:
    for url in (POSTGRES_URL, MARIADB_URL):
        _server_up(url)
        assert login_refused(url) is None


def test_other_errors_are_failures_not_skips() -> None:
    """A PostgreSQL client talking to the MariaDB port gets no login refusal: an error."""
    _server_up(MARIADB_URL)
    mariadb = sa.make_url(MARIADB_URL)
    url = sa.make_url(POSTGRES_URL).set(host=mariadb.host, port=mariadb.port or 3306)
    with pytest.raises(sa.exc.DBAPIError):
        login_refused(url.render_as_string(hide_password=False))


@pytest.mark.parametrize("required", [False, True], ids=["skip", "DC_REQUIRE_SERVICES=1"])
def test_redis_refused_login(monkeypatch: pytest.MonkeyPatch, required: bool) -> None:
    from urllib.parse import urlsplit, urlunsplit

    from _cases.redis_cases import REDIS_URL, require_redis

    parts = urlsplit(REDIS_URL)
    require_service(parts.hostname or "127.0.0.1", parts.port or 6379, "Redis")
    netloc = f"dc-no-such-user:Hidden-Pw-7@{parts.hostname}:{parts.port or 6379}"
    url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    reason = _outcome(lambda: require_redis(url), monkeypatch, required)
    assert "Redis at" in reason and "refused the test login" in reason and "DC_TEST_REDIS_URL" in reason
    assert "Hidden-Pw-7" not in reason


@pytest.fixture
def closed_broker(tmp_path: Path) -> Iterator[int]:
    """A real Mosquitto on a free port that accepts only user ``dc`` with a password."""
    pytest.importorskip("paho.mqtt")
    program = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    passwd = shutil.which("mosquitto_passwd")
    if program is None or passwd is None:
        pytest.skip(
            "the mosquitto and mosquitto_passwd programs are not installed (apt-get install mosquitto)"
        )
    assert program is not None and passwd is not None
    port = free_port()
    passwords = tmp_path / "passwords"
    subprocess.run([passwd, "-c", "-b", str(passwords), "dc", "right-password"], check=True, timeout=30)
    passwords.chmod(0o600)
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\npersistence false\n"
        f"user {getpass.getuser()}\n"
    )
    log_path = tmp_path / "mosquitto.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([program, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        try:

            def running() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"mosquitto exited: {log_path.read_text()}")
                return " running" in log_path.read_text()

            wait_for(running, 15, "mosquitto to run")
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_mqtt_broker_that_refuses_anonymous_clients(
    closed_broker: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from _cases import require_login
    from _cases.mqtt_cases import login_refused as mqtt_refused

    reason = mqtt_refused("127.0.0.1", closed_broker)
    assert reason is not None and "refuses anonymous clients" in reason and "DC_TEST_MQTT_URL" in reason
    wrong = mqtt_refused("127.0.0.1", closed_broker, "dc", "wrong-password")
    assert wrong is not None and "refuses user 'dc'" in wrong and "wrong-password" not in wrong
    assert mqtt_refused("127.0.0.1", closed_broker, "dc", "right-password") is None
    key = f"mqtt://127.0.0.1:{closed_broker}"
    said = _outcome(
        lambda: require_login(key, lambda: mqtt_refused("127.0.0.1", closed_broker)), monkeypatch, False
    )
    assert said == reason
    said = _outcome(
        lambda: require_login(key, lambda: mqtt_refused("127.0.0.1", closed_broker)), monkeypatch, True
    )
    assert reason in said


def test_the_configured_broker_accepts_the_tests() -> None:
    pytest.importorskip("paho.mqtt")
    from _cases.mqtt_cases import broker
    from _cases.mqtt_cases import login_refused as mqtt_refused

    host, port = broker()
    require_service(host, port, "MQTT broker")
    assert mqtt_refused(host, port) is None
