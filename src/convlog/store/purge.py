"""``convlog purge``: erase one session's payloads from every file under a log directory
(the right to erasure), keeping the log gapless and verifiable.

What a purge of session S (optionally only its records from before a time) does:

* **segments**: each segment holding records of S is rewritten atomically with those
  records cut down to a purged record (:mod:`convlog.core.purge`: ``seq``, ``ts``,
  ``kind``, ``source``, ``session``, ``meta.sha256``/``meta.bytes`` and
  ``meta.purged: true`` stay; ``data``, ``topic``, ``extra_frames`` and the other meta
  fields go). A sealed segment stays sealed (zstd seekable, ``zstd -dc`` reads it), a
  plain finished one stays plain, and the live one is sealed first: offline by the
  purge itself, which holds the writer lock all along, or, when a recorder runs, by
  asking it to rotate and waiting for its sealer. The temporary file is
  ``events/.<segment>.purge.tmp``; it holds only the purged lines.
* **checkpoints**: every checkpoint whose cut is at or after S's first purged record is
  removed before the segments change and rebuilt, under the same name and label, by
  folding the purged log (their cuts, being byte offsets and digests, change with
  the lines). ``DIR/base.json`` (the starting point retention leaves, whose segments
  are gone) cannot be folded again: S is taken out of its state. A checkpoint whose cut
  is before the base cannot be rebuilt and is removed.
* **search index**: deleted (with its ``-wal``/``-shm``/``-journal``, since SQLite keeps
  deleted rows in free pages) and, when there was one, built again from the purged log.
* **quarantine**: entries of ``recovery/quarantine.jsonl`` whose salvaged bytes are a
  line of S lose their bytes (:func:`convlog.core.purge.redact_quarantine_entry`).
* **exports**: files under DIR (outside ``events/``, ``checkpoints/``, ``index/``,
  ``recovery/``) named as ``convlog export --out DIR/...`` names the export of S or of
  a fork of S (which holds S's messages) are deleted; any other such file that names S
  is listed in the report and left alone (a file of several sessions is not edited).
* **leftovers** of interrupted writes that may hold old bytes (``events/.*.rewrite``
  from recovery, ``checkpoints/.*.tmp``) are deleted.
* a ``session.purged`` record (source ``control``) says what was removed, when and by
  whom (:func:`convlog.core.purge.purged_data`).

What it leaves: seq, time, kind, source and session id of every purged record and the
digest and size of its payload; records of S written after the purge started (a
running recorder keeps recording); forks of S keep their own records (their fork record
is then refused by the fold, its parent being unknown, so a fork shows its own
messages only); files outside DIR (exports elsewhere, backups) and the file system's
free blocks.

Crash safety. A purge first writes its intent, ``recovery/purge.json`` (session,
``before``, the last seq it covers, the checkpoints it rebuilds), and removes it last.
Every step in between is atomic (temporary file, fsync, rename, fsync of the directory)
and idempotent, and the order keeps the log valid at each point: checkpoints that the
rewrite would make stale are removed before the first segment changes, and rebuilt
after the last. So a kill -9 anywhere leaves a log ``convlog verify`` accepts (it notes
the pending purge), with every record readable exactly once (purged or not), and
running the same purge again finishes it and writes its ``session.purged`` record once.

The shell: it reads and writes files, takes the locks, and calls the pure decisions in
:mod:`convlog.core.purge`. Appending the record and sealing the live segment go through
a :class:`PurgeWriter`: :class:`OfflinePurgeWriter` here, or the CLI's link to a
running recorder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
import pyzstd

from convlog.core.fold import State, fold
from convlog.core.gaps import GapDetector
from convlog.core.purge import purged_data, purged_line, redact_quarantine_entry, selects, without_session
from convlog.core.record import PURGED_KIND, decode_bytes, is_purged, make_line, parse_line
from convlog.store.archive import MANIFEST_FILE, refresh_manifest
from convlog.store.checkpoint import (
    BASE_FILE,
    CheckpointError,
    checkpoint_bytes,
    list_checkpoints,
    load_checkpoint,
    make_cut,
    write_checkpoint,
)
from convlog.store.clock import Clock
from convlog.store.fsync import fsync_dir, write_atomic
from convlog.store.lock import rewrite_lock
from convlog.store.offline import OfflineWriter
from convlog.store.replay import NoLogError, load
from convlog.store.seal import FRAME_BYTES
from convlog.store.search_index import INDEX_DIR, TextIndex, delete_index
from convlog.store.segment import (
    CHECKPOINTS,
    EVENTS,
    QUARANTINE_FILE,
    RECOVERY,
    UNREADABLE,
    follow,
    is_sealed,
    iter_records,
    list_segments,
    open_segment,
    segment_key,
    segment_path,
)

#: The intent of a purge in progress, in ``recovery/`` (see the module doc).
PURGE_FILE = "purge.json"
#: Format of :data:`PURGE_FILE`.
FORMAT = 1
#: Suffix of a segment being rewritten: ``events/.<segment>.purge.tmp`` (not a segment).
TMP_SUFFIX = ".purge.tmp"
#: zstd level of a rewritten sealed segment.
LEVEL = 3
#: Folders of the log itself; other files under the directory are looked at as exports.
LOG_FOLDERS = (EVENTS, CHECKPOINTS, INDEX_DIR, RECOVERY)

#: Called with the name of each step a purge has just made durable (tests stop it there).
OnStep = Callable[[str], None]


class PurgeError(Exception):
    """A purge cannot be done or finished (the message says why, in one line)."""


class PurgeWriter(Protocol):
    """The one writer of the log during a purge: seals the segments to rewrite and
    appends the ``session.purged`` record.

    Attributes:
        via: ``"direct"`` (no recorder runs: the purge holds the writer lock) or
            ``"recorder"`` (through a running recorder's control channel).
        offline: True when no recorder writes the log meanwhile.
    """

    via: str
    offline: bool

    def finish(self, keys: set[str]) -> None:
        """Make sure no segment named in ``keys`` (plain segment names) is written any
        more, that each is in its final form (sealed, where the writer seals), and that
        ``recovery/state.json`` does not point into any of them.

        Raises:
            PurgeError: when that cannot be had (the message says why).
        """

    def append(self, kind: str, session: str, data: dict[str, Any]) -> int:
        """Append one record (source ``control``) and return its seq.

        Raises:
            OSError, PurgeError: when it cannot be written.
        """


class OfflinePurgeWriter:
    """:class:`PurgeWriter` of a log whose recorder is not running, over an entered
    :class:`convlog.store.offline.OfflineWriter` (which holds the writer lock, so no
    recorder can start mid-purge).

    Args:
        writer: the entered offline writer.
        clock: time source of the record.
    """

    via = "direct"
    offline = True

    def __init__(self, writer: OfflineWriter, clock: Clock | None = None) -> None:
        self.writer = writer
        self.clock = clock or writer.clock

    def finish(self, keys: set[str]) -> None:
        """Seal the last segment when it is one of ``keys`` (see :meth:`OfflineWriter.seal_last`);
        finished plain segments are rewritten plain."""
        segments = list_segments(self.writer.directory)
        if segments and segment_key(segments[-1][1]) in keys:
            self.writer.seal_last()

    def append(self, kind: str, session: str, data: dict[str, Any]) -> int:
        """Append the record under the writer lock; returns its seq."""
        seq = self.writer.seq + 1
        self.writer.append(make_line(seq, self.clock.now(), kind, "control", None, session, data), seq)
        return seq


#: Opens the log's writer for a purge, once the purge knows what it removes.
OpenWriter = Callable[[], contextlib.AbstractContextManager[PurgeWriter]]


@contextlib.contextmanager
def offline_writer(directory: Path, clock: Clock | None = None) -> Iterator[PurgeWriter]:
    """The writer of a purge with no recorder running: an :class:`OfflinePurgeWriter`
    over an :class:`~convlog.store.offline.OfflineWriter` held for the whole purge.

    Raises:
        LogLockedError: when a recorder (or another writer) holds the log.
    """
    with OfflineWriter(directory, command="convlog purge", clock=clock) as writer:
        yield OfflinePurgeWriter(writer, clock)


@dataclass(slots=True)
class PurgeReport:
    """What a purge did (or, with ``dry_run``, would do).

    Attributes:
        directory: the log directory.
        session: the session id purged.
        before: the ``--before`` time (RFC 3339) or None.
        upto_seq: the last seq covered.
        records: records purged (by this purge, its interrupted runs included).
        first_seq, last_seq: the first and last of them, or None.
        segments: segments rewritten (plain names) by this run.
        checkpoints: checkpoints rebuilt (file names).
        checkpoints_removed: checkpoints removed and not rebuilt (their cut is before
            ``base.json``, or unreadable).
        base: ``"edited"`` when ``base.json`` lost the session, ``"kept"`` when it holds
            records after ``before`` it cannot tell apart, None when it did not hold it.
        index: ``"rebuilt"``, ``"deleted"`` (an index being built), or None when none existed.
        quarantine: quarantine entries redacted.
        exports_removed: export files deleted (paths relative to the directory).
        untouched: other files under the directory that name the session, left alone.
        record_seq: seq of the ``session.purged`` record, or None (nothing purged, dry run).
        via: ``"direct"``, ``"recorder"``, or ``"dry-run"``.
        resumed: True when it finished an interrupted purge.
        notes: anything else worth saying.
    """

    directory: Path
    session: str
    before: str | None
    upto_seq: int = 0
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    segments: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    checkpoints_removed: list[str] = field(default_factory=list)
    base: str | None = None
    index: str | None = None
    quarantine: int = 0
    exports_removed: list[str] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)
    record_seq: int | None = None
    via: str = "direct"
    resumed: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly values."""
        data = asdict(self)
        data["directory"] = str(self.directory)
        return data


@dataclass(slots=True)
class _Intent:
    """``recovery/purge.json``: what a purge set out to do (see the module doc)."""

    id: str
    session: str
    before: str | None
    upto_seq: int
    records: int
    first_seq: int | None
    last_seq: int | None
    started: str
    uid: int
    user: str | None
    forks: list[str]
    index: bool
    checkpoints: list[dict[str, Any]]

    def to_bytes(self) -> bytes:
        return orjson.dumps({"format": FORMAT, **asdict(self)})

    @classmethod
    def read(cls, directory: Path) -> _Intent | None:
        data = pending_purge(directory)
        if data is None:
            return None
        try:
            return cls(**{name: data[name] for name in cls.__dataclass_fields__})
        except (KeyError, TypeError):
            raise PurgeError(f"{RECOVERY}/{PURGE_FILE} is not a purge's intent (remove it to go on)") from None


def pending_purge(directory: str | Path) -> dict[str, Any] | None:
    """The intent of an interrupted (or running) purge, ``recovery/purge.json``.

    Args:
        directory: the log directory.

    Returns:
        its content (``session``, ``before``, ``upto_seq``, ``started``, ...), or None when
        there is none; ``{}`` when the file exists but is not a JSON object.
    """
    path = Path(directory) / RECOVERY / PURGE_FILE
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(slots=True)
class _Scan:
    """Where the records to purge are: how many, their seqs, the segments holding them."""

    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    keys: list[str] = field(default_factory=list)
    end_seq: int = 0
    purged_before: int = 0  # records of the session purged by an earlier purge


def _scan(directory: Path, session: str, before: str | None, upto_seq: int | None) -> _Scan:
    """Read the log once and find the records a purge takes."""
    found = _Scan()
    for record, key, _offset in follow(directory):
        seq = record["seq"]
        found.end_seq = seq
        if selects(record, session, before, upto_seq):
            found.records += 1
            found.first_seq = seq if found.first_seq is None else found.first_seq
            found.last_seq = seq
            if not found.keys or found.keys[-1] != key:
                found.keys.append(key)
        elif is_purged(record) and record.get("session") == session:
            found.purged_before += 1
    return found


def _user() -> tuple[int, str | None]:
    uid = os.getuid()
    try:
        return uid, pwd.getpwuid(uid).pw_name
    except KeyError:
        return uid, None


def _forks(state: State, session: str) -> list[str]:
    """Sessions forked from ``session``, at any depth."""
    children: dict[str, list[str]] = {}
    for sid, info in state.sessions.items():
        if info.parent is not None:
            children.setdefault(info.parent, []).append(sid)
    out, todo = [], list(children.get(session, []))
    while todo:
        sid = todo.pop()
        if sid not in out and sid != session:
            out.append(sid)
            todo.extend(children.get(sid, []))
    return sorted(out)


def purge(
    directory: str | Path,
    session: str,
    *,
    before: str | None = None,
    open_writer: OpenWriter | None = None,
    dry_run: bool = False,
    export_names: Callable[[str], Iterable[str]] | None = None,
    clock: Clock | None = None,
    on_step: OnStep | None = None,
) -> PurgeReport:
    """Purge a session's payloads from a log directory (see the module doc).

    Args:
        directory: the log directory.
        session: the session id, or a unique prefix of one (as ``convlog show``); the
            session of a pending (interrupted) purge is found by its id or a prefix.
        before: purge only the records received before this time (RFC 3339 in the
            records' form, ``2026-11-21T12:00:00.000000Z``; imported records by their
            own time, as ``--as-of``); None for all of them.
        open_writer: opens the log's writer for the purge, once the session is found
            (so a refused purge writes nothing, not even what recovery would): the
            default is :func:`offline_writer`; the CLI's falls back to a running
            recorder. Not called with ``dry_run``.
        dry_run: only find what would be purged; nothing is written.
        export_names: the file names ``convlog export --out DIR`` gives a session's
            exports (one per format); None to leave exports alone.
        clock: time source (``started``; the rebuilt checkpoints keep their times).
        on_step: called with the name of each step once it is durable.

    Returns:
        a :class:`PurgeReport`.

    Raises:
        NoLogError: when the directory has no log.
        UnknownSessionError: when no session matches (or several do).
        PurgeError: another purge is pending, a segment cannot be read, or a running
            recorder did not seal in time.
        LogLockedError: from :func:`offline_writer`, when another writer holds the log.
        OSError: when a file cannot be written (run the same purge again).
    """
    directory = Path(directory)
    if not list_segments(directory):
        raise NoLogError.in_directory(directory)
    clock = clock or Clock()
    via = "dry-run" if dry_run else "direct"
    # Held throughout: checkpoint writers (the recorder's job) and other purges wait.
    with contextlib.nullcontext() if dry_run else rewrite_lock(directory, exclusive=True):
        intent = _Intent.read(directory)
        resumed = intent is not None
        if intent is not None:
            note = _check_resume(intent, session, before)
            scan = _scan(directory, intent.session, intent.before, intent.upto_seq)
        else:
            sid, forks, scan = _resolve(directory, session, before)
            if scan.records == 0:
                report = PurgeReport(directory, sid, before, upto_seq=scan.end_seq, via=via)
                report.notes.append(f"nothing to purge: no record of {sid!r} is left to purge"
                                    + (f" ({scan.purged_before} purged already)" if scan.purged_before else ""))
                return report
            uid, user = _user()
            intent = _Intent(
                id=uuid.uuid4().hex, session=sid, before=before, upto_seq=scan.end_seq, records=scan.records,
                first_seq=scan.first_seq, last_seq=scan.last_seq, started=clock.now(), uid=uid, user=user,
                forks=forks, index=(directory / INDEX_DIR).is_dir(), checkpoints=[],
            )
            note = None
        report = PurgeReport(directory, intent.session, intent.before, upto_seq=intent.upto_seq,
                             records=intent.records, first_seq=intent.first_seq, last_seq=intent.last_seq,
                             via=via, resumed=resumed, notes=[note] if note else [])
        first = intent.first_seq if intent.first_seq is not None else intent.upto_seq + 1
        names = _export_names(intent, export_names)
        if dry_run:
            intent.checkpoints = _checkpoints_from(directory, first, intent.checkpoints)
            report.segments = scan.keys
            report.checkpoints = [entry["name"] for entry in intent.checkpoints]
            report.index = "rebuilt" if intent.index else None
            report.quarantine = _quarantine(directory, intent.session, intent.before, write=False)
            report.exports_removed, report.untouched = _exports(directory, intent.session, names, remove=False)
            return report
        with (open_writer or (lambda: offline_writer(directory, clock)))() as writer:
            report.via = writer.via
            # Listed once no other writer can add one: the writer lock or the recorder's
            # checkpoint job waiting for the rewrite lock.
            intent.checkpoints = _checkpoints_from(directory, first, intent.checkpoints)
            write_atomic(directory / RECOVERY / PURGE_FILE, intent.to_bytes())
            step = on_step or (lambda _name: None)
            step("intent")
            _run(directory, intent, scan, writer, names, report, step)
        return report


def _check_resume(intent: _Intent, session: str, before: str | None) -> str | None:
    """A pending purge is finished only by the same purge: the same session (or a prefix
    of it), with ``--before`` when it had one (its time wins: ``2d`` is another time
    now). Returns a note when the times differ."""
    if session != intent.session and not intent.session.startswith(session):
        raise PurgeError(
            f"an interrupted purge of session {intent.session!r} is pending ({RECOVERY}/{PURGE_FILE}): "
            f"run convlog purge {intent.session} again to finish it first")
    if (before is None) != (intent.before is None):
        how = f"--before {intent.before}" if intent.before else "without --before"
        raise PurgeError(f"the interrupted purge of {intent.session!r} was run {how}: run it again the same way "
                         "to finish it")
    if before != intent.before:
        return f"finished the interrupted purge with its own --before {intent.before}"
    return None


def _run(directory: Path, intent: _Intent, scan: _Scan, writer: PurgeWriter, names: set[str],
         report: PurgeReport, step: OnStep) -> None:
    """The purge's steps, in the order that keeps the log valid at each (module doc)."""
    writer.finish(set(scan.keys))
    step("sealed")
    if delete_index(directory):
        step("index-removed")
    for entry in intent.checkpoints:
        path = directory / CHECKPOINTS / entry["name"]
        if path.exists():
            path.unlink()
            fsync_dir(path.parent)
            step(f"checkpoint-removed {entry['name']}")
    base_state = _scrub_base(directory, intent, report)
    if report.base == "edited":
        step("base")
    select = _selector(intent)
    for key in scan.keys:
        count = _rewrite_segment(directory, key, select, step)
        if count:
            report.segments.append(key)
            step(f"segment {key}")
    _rebuild_checkpoints(directory, intent.checkpoints, base_state, report, step)
    if intent.index:
        delete_index(directory)  # what a reader built meanwhile, from the old segments perhaps
        try:
            with TextIndex(directory) as index:
                index.update()
            report.index = "rebuilt"
        except Exception as exc:  # derived data: the next search builds it
            report.index = "deleted"
            report.notes.append(f"the search index was deleted and could not be built again ({exc}); "
                                "the next search builds it")
        step("index")
    report.quarantine = _quarantine(directory, intent.session, intent.before, write=True)
    if report.quarantine:
        step("quarantine")
    report.exports_removed, report.untouched = _exports(directory, intent.session, names, remove=True, step=step)
    _remove_leftovers(directory)
    step("leftovers")
    report.record_seq = _record(directory, intent, writer)
    step("record")
    # A retention archive purged as a log of its own: its manifest follows.
    if (directory / MANIFEST_FILE).exists() and refresh_manifest(directory):
        step("manifest")
    path = directory / RECOVERY / PURGE_FILE
    path.unlink()
    fsync_dir(path.parent)
    step("done")


def _selector(intent: _Intent) -> Callable[[dict[str, Any]], bool]:
    return lambda record: selects(record, intent.session, intent.before, intent.upto_seq)


def _resolve(directory: Path, session: str, before: str | None) -> tuple[str, list[str], _Scan]:
    """The session a purge names, the sessions forked from it, and the scan of its
    records: a folded session with exactly that id; else, when records carry exactly
    that id (records of ``unknown``/``raw`` kinds carry sessions the fold keeps nothing
    for, and a purged session is folded no more), that id; else the one folded session
    the id starts (as ``convlog show``).

    Raises:
        UnknownSessionError: when none matches, or several do.
    """
    replay = load(directory)
    if session not in replay.state.sessions:
        scan = _scan(directory, session, before, None)
        if scan.records or scan.purged_before:
            return session, [], scan
        session = replay.resolve(session)  # a unique prefix, or UnknownSessionError
    return session, _forks(replay.state, session), _scan(directory, session, before, None)


# -- checkpoints and base.json -------------------------------------------------------------------


class _At(Clock):
    """A clock that always says one time: a rebuilt checkpoint keeps its ``created``."""

    def __init__(self, ts: str | None) -> None:
        super().__init__()
        self.ts = ts

    def now(self) -> str:
        return self.ts if isinstance(self.ts, str) else super().now()


def _checkpoints_from(directory: Path, first_seq: int, known: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The checkpoints a purge removes and rebuilds: those at or after ``first_seq`` on
    disk now, plus those an interrupted run had already removed (``known``), each as
    ``{"name", "seq", "label", "created", "publishers"}`` (no state: nothing of the
    session is kept in the intent)."""
    found = {entry["name"]: entry for entry in known}
    for info in list_checkpoints(directory):
        if info.seq < first_seq:
            continue
        header: Any = {}
        with contextlib.suppress(OSError, orjson.JSONDecodeError), info.path.open("rb") as fh:
            header = orjson.loads(fh.readline())
        publishers = header.get("publishers") if isinstance(header, dict) else None
        found[info.path.name] = {"name": info.path.name, "seq": info.seq, "label": info.label,
                                 "created": info.created,
                                 "publishers": publishers if isinstance(publishers, dict) else None}
    return sorted(found.values(), key=lambda entry: (entry["seq"], entry["label"] or ""))


def _scrub_base(directory: Path, intent: _Intent, report: PurgeReport) -> State | None:
    """Take the session out of ``base.json`` (see the module doc); returns the base's
    state as it is now (the fold's starting point), or None without a base."""
    path = directory / BASE_FILE
    if not path.exists():
        return None
    try:
        _cut, state = load_checkpoint(path)
        with path.open("rb") as fh:
            header = orjson.loads(fh.readline())
    except (CheckpointError, OSError, ValueError) as exc:
        raise PurgeError(f"{BASE_FILE} cannot be read, so the session cannot be taken out of it: {exc}") from None
    info = state.sessions.get(intent.session)
    if intent.before is not None and info is not None and (info.last_ts is None or info.last_ts >= intent.before):
        report.base = "kept"
        report.notes.append(f"{BASE_FILE} holds session {intent.session!r} up to {info.last_ts}, after --before: "
                            "its state there was kept")
        return state
    if without_session(state, intent.session):
        write_atomic(path, checkpoint_bytes({**header, "sessions": len(state.sessions)}, state))
        report.base = "edited"
        _cut, state = load_checkpoint(path)
    return state


def _rebuild_checkpoints(directory: Path, entries: list[dict[str, Any]], base: State | None,
                         report: PurgeReport, step: OnStep) -> None:
    """Fold the purged log (from ``base.json``'s state when there is one) and write each
    checkpoint of ``entries`` again at its seq, with its label, time and publishers."""
    start_seq = base.last_seq if base is not None else 0
    todo = []
    for entry in entries:
        if entry["seq"] <= start_seq:
            report.checkpoints_removed.append(entry["name"])
        else:
            todo.append(entry)
    if not todo:
        return
    state = base.copy() if base is not None else State()
    for record, key, offset in follow(directory):
        fold(state, record)
        while todo and todo[0]["seq"] <= record["seq"]:
            entry = todo.pop(0)
            if entry["seq"] != state.last_seq:
                report.checkpoints_removed.append(entry["name"])
                continue
            cut = make_cut(directory, state.last_seq, key, offset, record.get("ts"))
            publishers = GapDetector.from_dict(entry["publishers"]) if entry["publishers"] is not None else None
            path = write_checkpoint(directory, state, cut, entry["label"], _At(entry["created"]), publishers)
            report.checkpoints.append(path.name)
            step(f"checkpoint {path.name}")
        if not todo:
            break
    report.checkpoints_removed.extend(entry["name"] for entry in todo)


# -- segments ------------------------------------------------------------------------------------


def _rewrite_segment(directory: Path, key: str, select: Callable[[dict[str, Any]], bool], step: OnStep) -> int:
    """Rewrite one segment with the records ``select`` takes purged: a temporary file
    (sealed again when the segment is sealed), fsync, rename over it, fsync of the
    directory. Returns how many records it purged (0: the file was left alone)."""
    path = segment_path(directory, key)
    if not path.exists():
        raise PurgeError(f"{EVENTS}/{key} is gone (was it removed while purging?)")
    tmp = path.parent / f".{segment_key(path)}{TMP_SUFFIX}"
    sealed = is_sealed(path)
    count = 0
    try:
        with open_segment(path) as src, tmp.open("wb") as raw:
            dst: Any = (pyzstd.SeekableZstdFile(raw, "w", level_or_option=LEVEL, max_frame_content_size=FRAME_BYTES)
                        if sealed else raw)
            lines = iter(src)
            while True:
                try:
                    line = next(lines)
                except StopIteration:
                    break
                if line.endswith(b"\n"):
                    try:
                        record = parse_line(line)
                    except ValueError:
                        record = None
                    if record is not None and select(record):
                        line = purged_line(record, line)
                        count += 1
                dst.write(line)
            if sealed:
                dst.close()  # the seek table; the file itself stays open
            raw.flush()
            os.fsync(raw.fileno())
    except UNREADABLE as exc:
        tmp.unlink(missing_ok=True)
        raise PurgeError(f"{EVENTS}/{path.name} is not a readable sealed segment ({exc}): convlog verify") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not count:
        tmp.unlink()
        return 0
    step(f"segment-written {key}")
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return count


def _remove_leftovers(directory: Path) -> None:
    """Delete what interrupted writes left that may hold old bytes: a purge's temporary
    segments, recovery's ``.rewrite`` files, checkpoints' temporary files (the caller
    holds the rewrite lock: no checkpoint is being written)."""
    removed = False
    for folder, pattern in ((EVENTS, f".*{TMP_SUFFIX}"), (EVENTS, ".*.rewrite"), (CHECKPOINTS, ".*.tmp")):
        for path in (directory / folder).glob(pattern):
            path.unlink(missing_ok=True)
            removed = True
    if removed:
        fsync_dir(directory / EVENTS)
        fsync_dir(directory / CHECKPOINTS)


# -- quarantine, exports, the record -------------------------------------------------------------


def _quarantine(directory: Path, session: str, before: str | None, write: bool) -> int:
    """Redact the session's entries in ``recovery/quarantine.jsonl``; returns how many
    (with ``write`` False, only counts them)."""
    path = directory / RECOVERY / QUARANTINE_FILE
    try:
        lines = path.read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        return 0
    count = 0
    out = []
    for line in lines:
        redacted = None
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            entry = orjson.loads(line)
            if isinstance(entry, dict):
                redacted = redact_quarantine_entry(entry, decode_bytes(entry), session, before)
        if redacted is None:
            out.append(line)
        else:
            count += 1
            out.append(orjson.dumps(redacted) + b"\n")
    if count and write:
        write_atomic(path, b"".join(out))
    return count


def _export_names(intent: _Intent, export_names: Callable[[str], Iterable[str]] | None) -> set[str]:
    if export_names is None:
        return set()
    return {name for sid in (intent.session, *intent.forks) for name in export_names(sid)}


def _exports(directory: Path, session: str, names: set[str], remove: bool,
             step: OnStep | None = None) -> tuple[list[str], list[str]]:
    """Delete (with ``remove``) the export files under the directory named in ``names``;
    list the other files outside the log's folders that name the session. Returns
    ``(exports, others)`` as paths relative to the directory."""
    needles = {session.encode("utf-8", "surrogatepass"), orjson.dumps(session)[1:-1]}
    exports, others = [], []
    for root, folders, files in os.walk(directory):
        if Path(root) == directory:
            folders[:] = [name for name in folders if name not in LOG_FOLDERS]
        for name in sorted(files):
            path = Path(root) / name
            relative = str(path.relative_to(directory))
            if relative == BASE_FILE:
                continue
            if name in names:
                exports.append(relative)
                if remove:
                    path.unlink(missing_ok=True)
                    fsync_dir(path.parent)
                    if step is not None:
                        step(f"export {relative}")
            elif _mentions(path, needles):
                others.append(relative)
    return sorted(exports), sorted(others)


def _mentions(path: Path, needles: set[bytes]) -> bool:
    """Whether a file holds any of ``needles`` (read in 1 MiB chunks that overlap)."""
    overlap = max(len(needle) for needle in needles) - 1
    try:
        with path.open("rb") as fh:
            tail = b""
            while chunk := fh.read(1 << 20):
                data = tail + chunk
                if any(needle in data for needle in needles):
                    return True
                tail = data[-overlap:] if overlap else b""
    except OSError:
        return False
    return False


def _record(directory: Path, intent: _Intent, writer: PurgeWriter) -> int:
    """Append the ``session.purged`` record, unless an interrupted run of this purge
    already did (found by the purge's id after the seqs it covers)."""
    for record in iter_records(directory, start_seq=intent.upto_seq + 1):
        data = record.get("data")
        if record.get("kind") == PURGED_KIND and isinstance(data, dict) and data.get("purge_id") == intent.id:
            return record["seq"]
    data = purged_data(intent.session, intent.before, intent.records, intent.first_seq, intent.last_seq,
                       intent.upto_seq, intent.started, intent.uid, intent.user, intent.id)
    return writer.append(PURGED_KIND, intent.session, data)
