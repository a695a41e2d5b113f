"""Reloading the enrichment rules while recording.

The recorder watches its configuration file (``--config FILE`` or ``CONVLOG_CONFIG``)
with watchfiles. When the file changes it is loaded and checked in full, as at start;
a valid file's ``[enrich]`` settings (rules, defaults, word count, large-message bound)
apply to the records received after it, without a restart; an invalid one is reported
(file, line, reason) and the rules in force stay. Either way the recorder writes a
``recorder.config`` record. Other ``[recorder]`` keys cannot change under a running
recorder: a changed one is named in the record and the log as needing a restart.

:func:`compare` is the decision (pure); :class:`RulesWatcher` is the watching thread.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from convlog.core.enrich import Enricher
from convlog.recorder.config import Config, ConfigError

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
