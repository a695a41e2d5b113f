"""Reloading the enrichment rules while recording.

The recorder watches its configuration file (``--config FILE`` or ``CONVLOG_CONFIG``)
with watchfiles. When the file changes it is loaded and checked in full, as at start;
a valid file's ``[enrich]`` settings (rules, defaults, word count, large-message bound)
apply to the records received after it, without a restart; an invalid one is reported
(file, line, reason) and the rules in force stay. Either way the recorder writes a
``recorder.config`` record. Other ``[recorder]`` keys cannot change under a running
recorder: a changed one is named in the record and the log as needing a restart.

:func:`compare` is the decision (pure); :class:`RulesWatcher` is the watching thread;
:class:`RuleReloads` starts it and applies its results on the recording thread.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from convlog.core.enrich import Enricher
from convlog.core.ingest import Ingest
from convlog.recorder.config import Config, ConfigError
from convlog.recorder.durable import DurableWriter

log = logging.getLogger("convlog.recorder")

#: Settings a running recorder applies (they only shape ``meta``).
LIVE_KEYS = ("rules", "defaults", "word_count", "large_message_bytes")
#: Settings that are not configuration values.
_NOT_SETTINGS = ("source",)


@dataclass(frozen=True)
class Reload:
    """The outcome of one change of the configuration file.

    Attributes:
        data: the ``recorder.config`` record's data: ``{"file", "sha256", "applied",
            "changed": [keys applied], "restart_needed": [keys], "rules": count,
            "error": reason or None}``.
        enricher: the enricher to use from now on, or None to keep the current one.
        config: the configuration now in force (the old one when refused).
    """

    data: dict[str, Any]
    enricher: Enricher | None = None
    config: Config | None = None


def compare(current: Config, new: Config | None, file: str, digest: str, error: str | None = None) -> Reload | None:
    """Decide what a changed configuration file means for a running recorder.

    Args:
        current: the configuration in force.
        new: the file loaded again, or None when it could not be (``error`` says why).
        file: the file's path, for the record.
        digest: SHA-256 (hex) of the file's bytes, for the record ("" when unreadable).
        error: the :class:`~convlog.recorder.config.ConfigError` text (file:line: key: reason).

    Returns:
        a :class:`Reload`, or None when nothing that matters changed (the file was
        saved unchanged, or only comments moved).
    """
    if new is None:
        return Reload({"file": file, "sha256": digest, "applied": False, "changed": [], "restart_needed": [],
                       "rules": len(current.rules), "error": error})
    changed = [f.name for f in fields(Config)
               if f.name not in _NOT_SETTINGS and getattr(new, f.name) != getattr(current, f.name)]
    live = [key for key in LIVE_KEYS if key in changed]
    others = [key for key in changed if key not in LIVE_KEYS]
    if not changed:
        return None
    in_force = replace(current, **{key: getattr(new, key) for key in live}) if live else current
    return Reload(
        {"file": file, "sha256": digest, "applied": bool(live), "changed": live, "restart_needed": others,
         "rules": len(in_force.rules), "error": None},
        enricher=in_force.enricher() if live else None,
        config=in_force,
    )


class RulesWatcher:
    """Watches a configuration file and hands each change's :class:`Reload` over.

    The watch runs in a daemon thread (``watchfiles.watch`` on the file's directory,
    so editors that save by renaming a new file into place are seen too); the
    recorder's loop applies the results, so a rule set changes between two records.

    Args:
        path: the configuration file.
        load: loads the configuration again as at start (same environment and flags);
            raises :class:`~convlog.recorder.config.ConfigError` for an invalid file.
        current: the configuration in force now.
        deliver: called from the watching thread with each :class:`Reload`.
    """

    def __init__(self, path: Path, load: Callable[[], Config], current: Config,
                 deliver: Callable[[Reload], None]) -> None:
        self.path = Path(path).resolve()
        self.load = load
        self.current = current
        self.deliver = deliver
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused = False  # the last version seen was invalid

    def start(self) -> None:
        """Start watching (returns at once)."""
        self._thread = threading.Thread(target=self._run, name="convlog-rules", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and wait for the thread (at most a few seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def _run(self) -> None:
        from watchfiles import watch

        target = str(self.path)
        try:
            for _changes in watch(self.path.parent, watch_filter=lambda _change, p: p == target,
                                  stop_event=self._stop, rust_timeout=1000, yield_on_timeout=False,
                                  raise_interrupt=False):
                self.check()
        except Exception:  # the recorder keeps recording without reloads
            log.exception("watching %s for rule changes failed; rules stay as they are", target)

    def check(self) -> Reload | None:
        """Load the file again and deliver the outcome if anything changed.

        Returns:
            the :class:`Reload` delivered, or None.
        """
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            result = compare(self.current, None, str(self.path), "", f"{self.path}: {exc.strerror or exc}")
        else:
            digest = hashlib.sha256(raw).hexdigest()
            try:
                new = self.load()
            except ConfigError as exc:
                result = compare(self.current, None, str(self.path), digest, str(exc))
            else:
                result = compare(self.current, new, str(self.path), digest)
        if result is None and self._refused:
            # Valid again and equal to what is in force: say so, so the log does not
            # end on the refusal.
            result = Reload({"file": str(self.path), "sha256": digest, "applied": False, "changed": [],
                             "restart_needed": [], "rules": len(self.current.rules), "error": None})
        if result is None:
            return None
        self._refused = result.data["error"] is not None
        if result.config is not None:
            self.current = result.config
        self.deliver(result)
        return result


class RuleReloads:
    """The rules reloads of a running recorder: the watching thread, and applying what
    it delivers on the recording thread, between two records.

    Args:
        config: the configuration in force at start.
        load: loads the configuration again as at start, or None (no reloads).
        ingest: gets each new enricher (:meth:`convlog.core.ingest.Ingest.use`).
        append: writes the ``recorder.config`` record, ``append(kind, data)``.
        durable: its segment writer is fsynced after that record.

    Attributes:
        config: the configuration in force (live keys change with each applied reload).
    """

    def __init__(self, config: Config, load: Callable[[], Config] | None, ingest: Ingest,
                 append: Callable[[str, dict[str, Any]], Any], durable: DurableWriter) -> None:
        self.config = config
        self.load = load
        self.ingest = ingest
        self.append = append
        self.durable = durable
        self.pending: collections.deque[Reload] = collections.deque()  # from the watching thread
        self._watcher: RulesWatcher | None = None

    def start(self) -> None:
        """Start watching the configuration file for rule changes (when there is one and
        ``load`` was given); the watching thread starts at the caller's priority."""
        source = Path(self.config.source)
        if self.load is None or self.config.source in ("defaults", "") or not source.is_file():
            return
        self._watcher = RulesWatcher(source, self.load, self.config, self.pending.append)
        self._watcher.start()
        log.info("watching %s for enrichment rule changes", source)

    def stop(self) -> None:
        """Stop watching (no-op when not watching)."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def apply_pending(self) -> None:
        """Apply the reloads delivered since the last call (recording thread)."""
        while self.pending:
            self.apply(self.pending.popleft())

    def apply(self, result: Reload) -> None:
        """Apply one :class:`Reload` between two records and record it (``recorder.config``, fsynced).

        Raises:
            OSError: when the fsync fails (the recording loop records it).
        """
        data = result.data
        if result.enricher is not None:
            self.ingest.use(result.enricher)
            self.config = result.config  # type: ignore[assignment]
            log.info("reloaded %s: %s changed, %d rule(s) in force", data["file"], ", ".join(data["changed"]),
                     data["rules"])
        if data["error"] is not None:
            log.error("rules not reloaded, the previous ones stay in force: %s", data["error"])
        if data["restart_needed"]:
            log.warning("%s: %s changed; that takes a restart of the recorder", data["file"],
                        ", ".join(data["restart_needed"]))
        self.append("recorder.config", data)
        if self.durable.segment_writer is not None:
            self.durable.segment_writer.sync()  # rare, and the next records depend on it
