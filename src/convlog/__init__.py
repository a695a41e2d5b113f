"""convlog: record a ZeroMQ agent bus into a durable JSONL event log and fold it back.

The pure core is :mod:`convlog.core.record` (the log line format), :mod:`convlog.core.wire`
(frames to records), :mod:`convlog.core.enrich` (meta) and :mod:`convlog.core.fold` (records to
conversation state). The shell is :mod:`convlog.store.segment` (segments, reading),
:mod:`convlog.store.writer`, :mod:`convlog.store.recovery`, :mod:`convlog.recorder.daemon` (the
recorder), :mod:`convlog.bus.broker`, :mod:`convlog.bus.publisher`, :mod:`convlog.store.replay`
and :mod:`convlog.cli.commands`.
"""

__version__ = "0.1.0"
