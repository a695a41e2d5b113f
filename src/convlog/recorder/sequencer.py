"""The seq counter and the recorder's own records (``recorder.*``, control records).

Every record gets the next seq here, gapless, whether it is a message (numbered by the
receive loop, which keeps the counter in a local while it drains a batch) or a record
the recorder writes itself; the lines go to the durable writer.
"""

from __future__ import annotations

import logging
from typing import Any

from convlog.core.gaps import Gap
from convlog.core.record import make_line
from convlog.recorder.durable import DurableWriter
from convlog.store.clock import Clock

log = logging.getLogger("convlog.recorder")

#: Longest text of an exception kept in a ``recorder.error`` record, characters.
ERROR_TEXT_CHARS = 500


def error_text(exc: BaseException) -> str:
    """``TypeName: message`` of an exception, cut to :data:`ERROR_TEXT_CHARS` characters
    (an ellipsis marks a cut)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_TEXT_CHARS else text[:ERROR_TEXT_CHARS] + "…"


class Sequencer:
    """Numbers records and writes the recorder's own ones.

    Args:
        clock: the recorder's clock (record ``ts``; not thread-safe: recording thread only).
        durable: where the lines go.

    Attributes:
        seq: seq of the last record written (or held), 0 before the first.
        own_kinds: the recorder's own records written since start, by ``(kind, source)``.
        errors: ``recorder.error`` records written since start, by what failed.
        gap_records: ``recorder.gap`` records written since start.
        gap_missing: messages those gap records name missing.
    """

    def __init__(self, clock: Clock, durable: DurableWriter) -> None:
        self.clock = clock
        self.durable = durable
        self.seq = 0
        self.own_kinds: dict[tuple[str, str], int] = {}
        self.errors: dict[str, int] = {}
        self.gap_records = 0
        self.gap_missing = 0

    def append(self, kind: str, data: dict[str, Any], source: str = "recorder", session: str | None = None) -> None:
        """Write one of the recorder's own records at the next seq.

        Args:
            kind: e.g. ``"recorder.start"``.
            data: the record's ``data`` (JSON-serialisable).
            source: ``"recorder"``, or ``"control"`` for a record asked for on the control channel.
            session: its session id, or None.

        Raises:
            TypeError: what :func:`convlog.core.record.make_line` raises for data it
                cannot serialise (nothing is numbered then); write failures are held,
                not raised.
        """
        assert self.durable.segment_writer is not None
        line = make_line(self.seq + 1, self.clock.now(), kind, source, None, session, data)
        self.seq += 1
        self.count_own(kind, source)
        self.durable.write(line, self.seq)

    def error_line(self, seq: int, what: str, exc: BaseException, about: int | None) -> bytes:
        """The ``recorder.error`` line for something that failed and was got over (counted
        and logged here; the caller writes it).

        Args:
            seq: the seq to give it.
            what: what was being done.
            exc: the exception caught.
            about: the seq of the record involved, or None.

        Returns:
            the line (bytes ending in a newline).
        """
        self.count_own("recorder.error", "recorder")
        self.errors[what] = self.errors.get(what, 0) + 1
        log.error("%s failed (seq %s): %s", what, about, error_text(exc))
        return make_line(seq, self.clock.now(), "recorder.error", "recorder", None, None,
                         {"what": what, "error": error_text(exc), "seq": about})

    def gap_line(self, gap: Gap, seq: int) -> bytes:
        """The ``recorder.gap`` line for a gap (counted, and logged as a warning).

        Args:
            gap: the publisher's missing messages.
            seq: the seq to give it.

        Returns:
            the line (bytes ending in a newline).
        """
        log.warning(
            "publisher %s: %d message(s) missing (seq %d..%d)", gap.publisher, gap.last - gap.first + 1,
            gap.first, gap.last,
        )
        self.count_own("recorder.gap", "recorder")
        self.gap_records += 1
        self.gap_missing += gap.last - gap.first + 1
        return make_line(seq, self.clock.now(), "recorder.gap", "recorder", None, None, gap.as_data())

    def record_error(self, what: str, exc: BaseException, about: int | None = None) -> None:
        """Write a ``recorder.error`` record: ``what`` failed with ``exc`` (about record
        ``about``, if any) and the recorder went on. Never raises: when even that record
        cannot be made, the error is only logged.

        Args:
            what: what was being done, e.g. ``"control request"``.
            exc: the exception caught.
            about: the seq of the record involved, or None.
        """
        try:
            line = self.error_line(self.seq + 1, what, exc, about)
            self.seq += 1
            self.durable.write(line, self.seq)
        except Exception:
            log.exception("could not record an error of %s", what)

    def count_own(self, kind: str, source: str) -> None:
        """Count one of the recorder's own records of ``kind`` from ``source``."""
        key = (kind, source)
        self.own_kinds[key] = self.own_kinds.get(key, 0) + 1
