"""asyncua's own log stays quiet while the OPC UA reader retries (issue 14).

Every failed connection attempt used to log asyncua's WARNING ``close_secure_channel was called
but connection is closed``; the reader now closes only what is open. A real server that goes
away leaves at most one asyncua line (``close_session ...``) for the loss, however many retries
follow. The reader adds no filter or handler to asyncua's loggers for that.
"""

from __future__ import annotations

import logging

import pytest
from _util import free_port, wait_for

from data_reader.opcua import OpcUaDataReader
from data_reader.opcua.simulator import OpcUaSimulator


def _asyncua_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("asyncua") and r.levelno >= logging.WARNING
    ]


def _filters_on_asyncua() -> int:
    return sum(
        len(logger.filters) + len(logger.handlers)
        for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("asyncua") and isinstance(logger, logging.Logger)
    )


def test_retries_against_a_closed_port_log_nothing_from_asyncua(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncua")
    before = _filters_on_asyncua()
    reader = OpcUaDataReader(
        f"opc.tcp://127.0.0.1:{free_port()}",
        timeout_s=0.5,
        reconnect_min_delay_s=0.1,
        reconnect_max_delay_s=0.2,
    )
    reader.open()
    try:
        wait_for(lambda: reader.opcua_stats()["connect_failures"] >= 4, 30, "four failed attempts")
    finally:
        reader.close()
    assert _asyncua_warnings(caplog) == []
    # our own warning says what happens (once: repeats of the same failure go to DEBUG)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("data_reader.opcua")]
    assert any("connection refused" in m and "retrying" in m for m in ours), ours
    assert _filters_on_asyncua() == before


def test_a_lost_server_logs_at_most_one_asyncua_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="asyncua")
    sim = OpcUaSimulator()
    sim.start()
    reader = OpcUaDataReader(
        sim.endpoint,
        timeout_s=0.5,
        watchdog_interval_s=0.5,
        reconnect_min_delay_s=0.1,
        reconnect_max_delay_s=0.2,
    )
    reader.open()
    try:
        wait_for(lambda: reader.connected, 20, "connected")
        caplog.clear()
        sim.stop()
        wait_for(lambda: reader.opcua_stats()["connect_failures"] >= 4, 30, "four failed reconnects")
    finally:
        reader.close()
        sim.stop()
    warnings = _asyncua_warnings(caplog)
    assert not any("close_secure_channel" in m for m in warnings), warnings
    assert len(warnings) <= 1, warnings
