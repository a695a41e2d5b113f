"""Export sessions as a Markdown transcript, one JSON document, native JSONL events or
CSV: ``convlog export``.

What is exported (docs/fold.md):

* by default the **visible branch** of each session (what :meth:`convlog.store.replay.Replay.messages`
  shows), with its title, fork origin, named checkpoints, crystals and usage;
* with ``with_history`` its **history** as well: every message that was ever visible in
  it (rewound ones flagged ``visible: false``), copies, rewinds, checkpoints, crystals,
  usage records, rejected records, and its forks nested where they were made (a child
  session inside its parent's history at the fork record, recursively).

Where it comes from. The fold keeps message references, rewinds (with the seqs they
dropped), the current checkpoints and the crystals, but not the ``llm.request`` records
behind a usage total, overwritten checkpoints, copies, ``session.start`` records or
records it rejected. So an export reads the records of the session's **tree** (the
root it descends from and all that root's forks) from the log in one streaming pass
(:func:`collect_trees`: a byte-level look at each line's ``session`` field decides
whether the line is parsed at all), folds those records again on their own
(:func:`convlog.core.fold.fold` gives a session the same state from its tree's records as
from the whole log, since a session depends only on its own records and its ancestors'
records before its fork) and builds the export from that fold, the steps the fold
reports while folding them (:class:`convlog.core.fold.Step`: what each record did,
decided by the fold's own rules, which live nowhere else) and those records.

JSONL is native bus events (docs/log-format.md): JSON objects
with a ``type`` (``session.start``, ``message``, ``message.delta``, ``message.end``,
``session.fork``, ``session.rewind``, ``session.checkpoint``, ``session.crystal``,
``session.delete``, ``llm.request``) and ``session_id``, with message ids, senders,
roles and content preserved, plus ``ts`` (the original receive time) and ``recorded``
(the original seq, topic and source). Publishing the file (``convlog publish FILE
--format native``) through a broker into a recorder gives a log whose fold holds the
same sessions:

* visible branch: ``session.start`` (title), the visible messages in order (a streamed
  message as one ``message.delta`` with its whole text, then ``message.end`` when it was
  complete), the checkpoints and crystals that still describe the visible branch, the
  session's ``llm.request`` records as they were, and ``session.delete`` for a deleted
  session. A fork is exported flat: its inherited messages become its own (the
  ``session.start`` event's ``origin`` names the parent and the fork point), so the
  export stands alone.
* with history: every record of the session and its forks that the fold applied, in
  log order, one event per record, preceded by its ancestors' records up to the fork it
  descends from (the fold needs them to rebuild the fork); the re-folded sessions then
  match in everything, rewinds, checkpoints, copies and forks included (records the
  fold refused are listed in the JSON and Markdown history, not in JSONL).

JSON is one document ``{"format": "convlog.export", "version": 1, "log", "as_of_seq",
"with_history", "exported_at", "sessions": [...]}`` (:func:`convlog.core.document.session_doc`). It carries
what re-recording needs, so it round-trips too: :func:`convlog.core.document.read_document` reads it back
(checking every field it uses) and :func:`convlog.core.document.session_events` turns it into the same native
events (the same builders as JSONL); ``convlog publish FILE`` detects the document and
publishes them. Without history each session comes back flat, as from JSONL; with
history every applied record of the session, its forks and, for a fork exported on its
own, its ancestors up to the fork (``ancestors``), merged back into log order by their
original seqs (a record present twice in the document is replayed once). A stream comes
back as one ``message.delta`` with its whole text (plus ``message.end`` when complete)
at its first record; each ``llm.request`` as the counts the fold made of it
(``requests``, :class:`convlog.core.document.LlmRequest`). Re-recorded into a fresh recorder, the fold is equal
in (tested on the demo, the Shearwater recording and generated logs):

* without history, for each exported session: its visible messages in order with their
  ids, senders, roles, texts, ``streamed`` and ``complete``; title; deleted; usage
  (requests, input and output tokens, cost to the bit, requests per model) and each
  request's counts, in order; the current crystals (``upto``, summary) and the current
  checkpoints (name, ``at``);
* with history, also parent, fork point and branch, rewinds (counts and the ids they
  dropped), every checkpoint (the ids it names), every crystal (``upto``, summary,
  ``current``), copies per message id, duplicates and participants; the new log holds
  exactly the exported sessions, their forks and, for a fork exported on its own, its
  ancestors (as far as the fork).

Never equal: seqs and receive times (the original ones travel in each event's ``ts``
and ``recorded``), and a stream's separate parts. Without history: a fork's parent and
fork point (named by ``origin``), rewinds, copies, crystals and checkpoints set aside
by a rewind. Refused records are not re-recorded.

Limits: a record whose ``data`` is not a JSON object cannot be a bus event and is left
out of JSONL (the recorder never writes one for these kinds); in params-carrying events
(``session.*``, ``llm.request``) a parameter named ``ts`` or ``recorded`` keeps its
value and the provenance field is then left out.

CSV: one row per message, ``session, seq, message_id, ts, speaker, role, kind, text,
visible`` (RFC 4180 quoting by the :mod:`csv` module, UTF-8 without a byte-order mark,
CRLF line ends, header row). Cell text is exported as recorded: a spreadsheet may read
a cell starting with ``=`` as a formula.

File names: :func:`safe_file_name` maps any session id to a distinct, safe name.

Modules: :mod:`.collect` (reading a session's fork tree from the log, the
:func:`export` entry point), :mod:`.build` (folding a tree and building its
exports), :mod:`.render` (Markdown, CSV, JSON, JSONL) and :mod:`.files` (file names
and writing). The document model, reading a JSON export back and the native event
builders are pure and live in :mod:`convlog.core.document`.
"""

from convlog.readers.export.build import ExportRequest, build_exports
from convlog.readers.export.collect import (
    Tree,
    collect_trees,
    export,
    export_bytes,
    export_header,
    export_ids,
    plan_trees,
)
from convlog.readers.export.files import (
    MAX_STEM,
    out_target,
    replace_file,
    safe_file_name,
    write_files,
    write_stream,
)
from convlog.readers.export.render import (
    CSV_COLUMNS,
    FORMATS,
    FORMULA_STARTS,
    csv_rows,
    csv_safe,
    markdown,
    render,
)

__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "FORMULA_STARTS",
    "MAX_STEM",
    "ExportRequest",
    "Tree",
    "build_exports",
    "collect_trees",
    "csv_rows",
    "csv_safe",
    "export",
    "export_bytes",
    "export_header",
    "export_ids",
    "markdown",
    "out_target",
    "plan_trees",
    "render",
    "replace_file",
    "safe_file_name",
    "write_files",
    "write_stream",
]
