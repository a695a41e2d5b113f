"""convlog: record a ZeroMQ agent bus into a durable JSONL event log and fold it back.

The pure core is :mod:`convlog.record` (the log line format), :mod:`convlog.wire`
(frames to records), :mod:`convlog.enrich` (meta) and :mod:`convlog.fold` (records to
conversation state). The shell is :mod:`convlog.log` (segments, recovery),
:mod:`convlog.daemon` (the recorder), :mod:`convlog.broker`, :mod:`convlog.publisher`,
:mod:`convlog.replay` and :mod:`convlog.cli`.
"""

__version__ = "0.1.0"
