"""The export document, pure (no I/O): its model, reading a JSON export back, and the
native bus events that re-create exported sessions.

* :mod:`convlog.core.document.model`: :class:`SessionExport` and its parts,
  :func:`session_doc` (the JSON form), :data:`JSON_FORMAT`;
* :mod:`convlog.core.document.reader`: :func:`looks_like_document`,
  :func:`read_document`, :class:`ExportDocumentError`;
* :mod:`convlog.core.document.events`: :func:`native_event`, :func:`session_events`,
  :func:`document_events`.

Building exports from a log, rendering and writing them is :mod:`convlog.readers.export`.
"""

from convlog.core.document.events import (
    SESSION_KINDS,
    document_events,
    native_event,
    session_events,
    visible_events,
)
from convlog.core.document.model import (
    JSON_FORMAT,
    JSON_VERSION,
    MESSAGE_KINDS,
    STREAM_KINDS,
    Ancestor,
    Crystal,
    Entry,
    LlmRequest,
    Message,
    NamedCheckpoint,
    SessionExport,
    session_doc,
)
from convlog.core.document.reader import ExportDocumentError, looks_like_document, read_document

__all__ = [
    "JSON_FORMAT",
    "JSON_VERSION",
    "MESSAGE_KINDS",
    "SESSION_KINDS",
    "STREAM_KINDS",
    "Ancestor",
    "Crystal",
    "Entry",
    "ExportDocumentError",
    "LlmRequest",
    "Message",
    "NamedCheckpoint",
    "SessionExport",
    "document_events",
    "looks_like_document",
    "native_event",
    "read_document",
    "session_doc",
    "session_events",
    "visible_events",
]
