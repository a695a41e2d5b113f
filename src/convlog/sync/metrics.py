"""The sync follower's Prometheus metrics (``convlog sync --metrics HOST:PORT``), served
by prometheus_client's HTTP server from a registry of their own.

``convlog_sync_records_total``
    records written into the database (new to it).
``convlog_sync_batches_total``, ``convlog_sync_errors_total``
    transactions committed; database errors met (each followed by a retry).
``convlog_sync_lag_records``, ``convlog_sync_lag_seconds``
    records of the log not yet in the database, and how long the oldest has waited.
``convlog_sync_seq``
    the last seq the database holds for this log.

Every metric has the label ``log_id``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9465`` for IPv6; an empty HOST is loopback, 127.0.0.1).

    Raises:
        ValueError: when it is not ``HOST:PORT`` with a port 0-65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not HOST:PORT: {text!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def serve_sync_metrics(address: str, follower: Any) -> Callable[[Any], None]:
    """Serve the metrics of ``follower`` at ``http://HOST:PORT/metrics``.

    Args:
        address: ``HOST:PORT`` (see :func:`parse_address`).
        follower: the :class:`~convlog.sync.follower.Follower` (its ``stats``, ``log_id``).

    Returns:
        the callback to run after each batch (it updates the gauges); counters are read
        from ``follower.stats`` when scraped.

    Raises:
        ValueError: for a bad address; OSError: when it cannot be bound.
    """
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class _Collector:
        def collect(self) -> Any:
            stats, labels = follower.stats, [follower.log_id or ""]
            for name, help_text, value in (
                ("convlog_sync_records", "records written into the database", stats.records),
                ("convlog_sync_batches", "transactions committed", stats.batches),
                ("convlog_sync_errors", "database errors met (each retried)", stats.errors),
                ("convlog_sync_indexed_records", "records the search projection moved past", stats.indexed),
                ("convlog_sync_projected_sessions", "dirty sessions projected", stats.projected),
                ("convlog_sync_view_errors", "database errors met while making the views (each retried)",
                 stats.view_errors),
            ):
                counter = CounterMetricFamily(name, help_text, labels=["log_id"])
                counter.add_metric(labels, value)
                yield counter
            for name, help_text, value in (
                ("convlog_sync_lag_records", "records of the log not yet in the database", stats.lag_records),
                ("convlog_sync_lag_seconds", "how long the oldest record not yet in the database has waited",
                 stats.lag_s),
                ("convlog_sync_seq", "the last seq the database holds for this log", stats.seq),
            ):
                gauge = GaugeMetricFamily(name, help_text, labels=["log_id"])
                gauge.add_metric(labels, value)
                yield gauge

    host, port = parse_address(address)
    registry = CollectorRegistry()
    registry.register(_Collector())
    start_http_server(port, addr=host, registry=registry)
    return lambda _stats: None
