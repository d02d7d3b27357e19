"""The fault-injection proxy: it lives in the testing kit now (:mod:`data_collector.testing`)."""

from data_collector.testing import FaultProxy, ProxyStats

__all__ = ["FaultProxy", "ProxyStats"]
