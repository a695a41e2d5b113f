"""Prometheus metrics for a running recorder (``convlog record --metrics HOST:PORT``).

Off by default. The recorder already keeps the counts that ``convlog status`` shows;
this module reads them when Prometheus scrapes, through a custom collector (the
pattern the client library documents for "proxies and exporters"), so the hot path
pays nothing per message beyond the dict increments it already makes. Only fsync
durations go into a :class:`prometheus_client.Histogram` as they happen (at most one
per group commit).

Metric names follow https://prometheus.io/docs/practices/naming/ (base units:
seconds and bytes; ``_total`` for counters):

=====================================  =========  =========================================
name                                   type       meaning
=====================================  =========  =========================================
convlog_records_total{kind,source}     counter    records written since start
convlog_received_messages_total{source} counter   messages received from the bus
convlog_written_bytes_total            counter    bytes appended to the log since start
convlog_gap_records_total              counter    ``recorder.gap`` records written
convlog_missing_messages_total         counter    messages those gap records name
convlog_dropped_messages_total         counter    messages dropped past ``held_bytes``
convlog_pruned_segments_total          counter    segments retention let go of since start
convlog_pruned_bytes_total             counter    their bytes on disk
convlog_redactions_total{rule}         counter    secrets replaced by redaction rule ``rule`` since start
convlog_fsync_duration_seconds         histogram  each fsync (fdatasync) of a segment
convlog_last_seq                       gauge      seq of the newest record
convlog_last_record_timestamp_seconds  gauge      receive time of the newest message (Unix)
convlog_checkpoint_age_seconds         gauge      age of the newest checkpoint (absent: none)
convlog_held_bytes                     gauge      bytes held in memory while writes fail
convlog_degraded                       gauge      1 while writes fail, else 0
convlog_publishers_known               gauge      stamped publishers followed for gaps
convlog_start_time_seconds             gauge      when the recorder started (Unix)
=====================================  =========  =========================================
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from convlog.recorder.config import parse_host_port

if TYPE_CHECKING:  # pragma: no cover
    from wsgiref.simple_server import WSGIServer

#: fsync duration buckets, seconds: from a page-cache flush on SSD to a stalled disk.
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class CounterSource(Protocol):
    """What the metrics read: a running recorder (:class:`convlog.recorder.daemon.Recorder`)."""

    def counters(self) -> dict[str, Any]:
        """The running counts (see :meth:`convlog.recorder.daemon.Recorder.counters`), from any thread."""
        ...


def _epoch(ts: str) -> float:
    """RFC 3339 time (as the recorder writes it) to Unix seconds."""
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class RecorderCollector(Collector):
    """Reads a :class:`~convlog.recorder.daemon.Recorder`'s counters at each scrape.

    Runs in the metrics server's thread and reads ``recorder.counters()``.

    Args:
        recorder: the running recorder.
    """

    def __init__(self, recorder: CounterSource) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families listed in the module doc (the Collector protocol)."""
        c = self.recorder.counters()
        records = CounterMetricFamily("convlog_records", "Records written since the recorder started.",
                                      labels=["kind", "source"])
        for (kind, source), n in sorted(c["records"].items()):
            records.add_metric([kind, source], n)
        yield records
        received = CounterMetricFamily("convlog_received_messages", "Messages received from the bus.",
                                       labels=["source"])
        for source, n in sorted(c["received"].items()):
            received.add_metric([source], n)
        yield received
        yield CounterMetricFamily("convlog_written_bytes", "Bytes appended to the log since start.",
                                  value=c["bytes_written"])
        yield CounterMetricFamily("convlog_gap_records", "recorder.gap records written (loss detected).",
                                  value=c["gap_records"])
        yield CounterMetricFamily("convlog_missing_messages", "Messages named missing by gap records.",
                                  value=c["gap_missing"])
        yield CounterMetricFamily("convlog_dropped_messages",
                                  "Messages dropped while writes failed and held bytes were at the bound.",
                                  value=c["dropped"])
        yield CounterMetricFamily("convlog_pruned_segments", "Segments retention let go of since start.",
                                  value=c["pruned_segments"])
        yield CounterMetricFamily("convlog_pruned_bytes", "Bytes on disk of the segments retention let go of.",
                                  value=c["pruned_bytes"])
        redactions = CounterMetricFamily("convlog_redactions", "Secrets replaced by a redaction rule since start.",
                                         labels=["rule"])
        for rule, n in sorted(c.get("redactions", {}).items()):
            redactions.add_metric([rule], n)
        yield redactions
        yield GaugeMetricFamily("convlog_last_seq", "Seq of the newest record.", value=c["last_seq"])
        if c["newest_ts"] is not None:
            yield GaugeMetricFamily("convlog_last_record_timestamp_seconds",
                                    "Receive time of the newest message (Unix seconds).", value=_epoch(c["newest_ts"]))
        if c["checkpoint_created"] is not None:
            age = max(0.0, time.time() - _epoch(c["checkpoint_created"]))
            yield GaugeMetricFamily("convlog_checkpoint_age_seconds", "Age of the newest checkpoint.", value=age)
        yield GaugeMetricFamily("convlog_held_bytes", "Bytes held in memory while writes fail.",
                                value=c["held_bytes"])
        yield GaugeMetricFamily("convlog_degraded", "1 while writes to the log fail.", value=int(c["degraded"]))
        yield GaugeMetricFamily("convlog_publishers_known", "Stamped publishers followed for gaps.",
                                value=c["publishers_known"])
        yield GaugeMetricFamily("convlog_start_time_seconds", "When the recorder started (Unix seconds).",
                                value=c["started_ns"] / 1e9)


@dataclass
class MetricsServer:
    """The HTTP endpoint Prometheus scrapes (``/metrics``), in a daemon thread.

    Attributes:
        host, port: where it listens (port as bound, useful when 0 was asked).
        registry: the registry served (the recorder's collector and ``fsync``).
        fsync: the fsync-duration histogram; the recorder's writer calls its ``observe``.
    """

    host: str
    port: int
    registry: CollectorRegistry
    fsync: Histogram
    _server: WSGIServer

    @property
    def url(self) -> str:
        """``http://HOST:PORT/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()


def serve(recorder: CounterSource, address: str) -> MetricsServer:
    """Start the metrics endpoint for ``recorder``.

    Args:
        recorder: the recorder whose :meth:`~convlog.recorder.daemon.Recorder.counters` are served.
        address: ``HOST:PORT`` (see :func:`convlog.recorder.config.parse_host_port`); port 0 picks a free one.

    Returns:
        the running :class:`MetricsServer`.

    Raises:
        ValueError: for a malformed address.
        OSError: when the address cannot be bound (in use, not local).
    """
    host, port = parse_host_port(address)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecorderCollector(recorder))
    fsync = Histogram("convlog_fsync_duration_seconds", "Duration of each fsync (fdatasync) of a segment.",
                      buckets=FSYNC_BUCKETS, registry=registry)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot serve metrics on {address}: {exc.strerror or exc}") from exc
    bound: Any = server.server_address
    return MetricsServer(host, int(bound[1]), registry, fsync, server)
