"""Tell systemd how the recorder is doing: the sd_notify(3) protocol over ``$NOTIFY_SOCKET``.

A service of ``Type=notify`` is "started" only when it sends ``READY=1``; with
``WatchdogSec=`` it is killed and restarted when it stops sending ``WATCHDOG=1``. Each
notification is one datagram of newline-separated ``KEY=VALUE`` assignments sent to the
``AF_UNIX``/``SOCK_DGRAM`` socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an
abstract socket). Outside systemd the variable is unset and every method here is a no-op.

Where each call belongs in the recorder (:mod:`convlog.recorder.daemon`)::

    notifier = Notifier()                       # once, at start, before anything else
    ... lock, recovery, sockets connected and subscribed, recorder.start written ...
    notifier.ready("recording tcp://… into DIR, seq from N")   # once, then start pinging:
    if notifier.watchdog_interval_s:            # schedule an APScheduler interval job
        every notifier.watchdog_interval_s: notifier.watchdog()   # only while the loop is alive
    notifier.status("seq N, R rec/s, last checkpoint …")       # at checkpoints / state refresh
    when the loop sees a stop request (SIGTERM): notifier.stopping("draining, then final checkpoint")
    before a long final step (checkpoint):      notifier.status("writing final checkpoint")

- ``ready()`` after the lock is held, the tail recovered, the SUB/PULL sockets set up
  and ``recorder.start`` written: from then on ``systemctl start`` returns and units
  ordered ``After=convlog-recorder.service`` start. Start-up (recovery included) is
  bounded by the unit's ``TimeoutStartSec=``.
- ``watchdog()`` from the scheduler job, but only when the recording loop has made
  progress recently (e.g. its last iteration is younger than the interval); a job that
  pings unconditionally proves only that the scheduler thread is alive. systemd arms the
  watchdog once start-up is complete (systemd.service(5), ``WatchdogSec=``), so pinging
  starts after ``ready()``.
- ``stopping()`` as soon as the loop notices a stop request (from the loop rather than
  the signal handler itself, which should only set a flag). The stop, drain and final
  checkpoint included, is bounded by ``TimeoutStopSec=``.
- ``status()`` whenever a one-line summary is worth showing in ``systemctl status``.

Implementation: the PyPI package ``sdnotify`` (pure Python), with these adjustments:

- it is constructed with ``debug=True``, because otherwise it swallows every error (a
  missing socket, a refused send) and this module could not report them; errors are
  caught here instead, logged once as a warning on ``convlog.recorder``, and never reach
  the daemon;
- it connects once, when constructed, and keeps a ``None`` socket forever if that
  fails, so it is constructed lazily and dropped after a failure (the next call
  reconnects);
- it encodes the text as Latin-1, while systemd expects UTF-8 (it ignores a ``STATUS=``
  that is not valid UTF-8), so the text is handed over pre-encoded as UTF-8 bytes
  read as Latin-1, which Latin-1 turns back into exactly those bytes;
- its socket blocks; a send timeout of :data:`SEND_TIMEOUT_S` keeps a busy service
  manager from stalling the recorder.

It reads ``NOTIFY_SOCKET`` from ``os.environ`` itself (when it connects), so
:class:`Notifier` does too, and the variable must stay set while notifications are sent
(do not unset it for child processes before the last :meth:`Notifier.stopping`). It
handles abstract sockets (``@name``).
"""

from __future__ import annotations

import logging
import os
import threading

import sdnotify

log = logging.getLogger("convlog.recorder")

#: Longest time a notification may block in ``send``, seconds.
SEND_TIMEOUT_S = 1.0


def _one_line(text: str) -> str:
    """``text`` as the value of one assignment: a newline would start another one."""
    return " ".join(text.splitlines()).strip()


class Notifier:
    """sd_notify(3) notifications for the current process, configured from the environment.

    Reads, once, at construction (from ``os.environ``):

    - ``NOTIFY_SOCKET``: where to send, a filesystem path (``/run/systemd/notify``) or an
      abstract socket (``@name``), per sd_notify(3). Unset: every method is a no-op.
    - ``WATCHDOG_USEC``: the watchdog timeout in microseconds, and ``WATCHDOG_PID``: the
      pid it applies to, per sd_watchdog_enabled(3). The watchdog is enabled for this
      process when ``WATCHDOG_USEC`` is a positive integer and ``WATCHDOG_PID`` is unset
      or equal to ``os.getpid()``.

    No method raises: a failure to send (no such socket, connection refused, a send that
    times out, an invalid address) is logged once per notifier as a warning on the
    ``convlog.recorder`` logger and reported as ``False``. Safe to call from several
    threads (the scheduler's and the recorder's).
    """

    def __init__(self) -> None:
        env = os.environ
        self.socket_address: str | None = env.get("NOTIFY_SOCKET") or None
        self._watchdog_usec = self._parse_watchdog(env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID"))
        self._lock = threading.RLock()  # re-entrant: a signal handler may interrupt a send
        self._sd: sdnotify.SystemdNotifier | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when ``NOTIFY_SOCKET`` is set, i.e. the process runs under a service manager
        that listens for notifications (it may still fail to receive them)."""
        return self.socket_address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to call :meth:`watchdog`, in seconds: half of ``WATCHDOG_USEC``, as
        sd_watchdog_enabled(3) recommends; None when the watchdog is not enabled for this
        process (``WATCHDOG_USEC`` unset, zero or invalid, or ``WATCHDOG_PID`` naming another
        process) or ``NOTIFY_SOCKET`` is unset."""
        if self._watchdog_usec is None or not self.enabled:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self, status: str | None = None) -> bool:
        """Report that start-up is complete: ``READY=1``, ``MAINPID=<this pid>`` and, when
        given, ``STATUS=<status>`` in one datagram (sd_notify(3)).

        ``MAINPID`` is redundant when systemd started this process directly (it is then
        the main pid already, and systemd ignores an unchanged one), and tells systemd the
        real main pid when the recorder was started through a wrapper that did not
        ``exec`` (which then needs ``NotifyAccess=all``).

        Args:
            status: a one-line summary for ``systemctl status`` (newlines become spaces),
                or None.

        Returns:
            True when the datagram was sent, False when disabled or sending failed.
        """
        fields = ["READY=1"]
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
        fields.append(f"MAINPID={os.getpid()}")
        return self._send(fields)

    def status(self, text: str) -> bool:
        """Send ``STATUS=<text>``: the free-form line ``systemctl status`` shows
        (sd_notify(3)). Newlines become spaces.

        Returns:
            True when sent, False when disabled or sending failed.
        """
        return self._send([f"STATUS={_one_line(text)}"])

    def watchdog(self) -> bool:
        """Send ``WATCHDOG=1``, the keep-alive ping that resets the ``WatchdogSec=`` timer
        (sd_notify(3), sd_watchdog_enabled(3)). Call it every :attr:`watchdog_interval_s`
        seconds. Sent even when the watchdog is not enabled for this process (harmless).

        Returns:
            True when sent, False when disabled or sending failed.
        """
        return self._send(["WATCHDOG=1"])

    def stopping(self, status: str | None = None) -> bool:
        """Report that the service is stopping: ``STOPPING=1`` and, when given,
        ``STATUS=<status>`` (sd_notify(3)).

        Args:
            status: a one-line summary (e.g. ``"draining, then final checkpoint"``), or None.

        Returns:
            True when sent, False when disabled or sending failed.
        """
        fields = ["STOPPING=1"]
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
        return self._send(fields)

    def close(self) -> None:
        """Close the notification socket, if open. Later calls reopen it."""
        with self._lock:
            self._drop()

    def _send(self, fields: list[str]) -> bool:
        if self.socket_address is None:
            return False
        message = "\n".join(fields)
        # sdnotify encodes with Latin-1; hand it UTF-8 bytes spelled as Latin-1 text.
        wire = message.encode("utf-8").decode("latin-1")
        with self._lock:
            # A connection kept from an earlier call may be stale (the receiving socket was
            # re-created): on failure, retry once on a fresh one.
            error: Exception | None = None
            for _attempt in range(2 if self._sd is not None else 1):
                try:
                    if self._sd is None:
                        self._sd = self._connect(self.socket_address)
                    self._sd.notify(wire)
                    return True
                except Exception as exc:  # never into the daemon: sd_notify failures are not fatal
                    self._drop()
                    error = exc
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot notify systemd at NOTIFY_SOCKET=%s: %s (further failures are not logged)",
                    self.socket_address, error,
                )
            return False

    @staticmethod
    def _connect(address: str) -> sdnotify.SystemdNotifier:
        """A notifier connected to ``address`` (which sdnotify reads from the environment).

        Raises:
            ValueError: ``address`` is neither an absolute path nor ``@name``, the only
                forms sd_notify(3) accepts; or ``NOTIFY_SOCKET`` no longer names it.
            OSError: the socket cannot be created or connected (e.g. FileNotFoundError,
                ConnectionRefusedError).
        """
        if address[0] not in "/@":
            raise ValueError("not an absolute path or @abstract name")
        if os.environ.get("NOTIFY_SOCKET") != address:
            raise ValueError("NOTIFY_SOCKET was changed or unset after the notifier was created")
        notifier = sdnotify.SystemdNotifier(debug=True)
        notifier.socket.settimeout(SEND_TIMEOUT_S)
        return notifier

    def _drop(self) -> None:
        if self._sd is not None and self._sd.socket is not None:
            self._sd.socket.close()
        self._sd = None

    @staticmethod
    def _parse_watchdog(usec: str | None, pid: str | None) -> int | None:
        """The watchdog timeout in microseconds for this process, or None, as
        sd_watchdog_enabled(3) decides it (invalid values mean "not enabled")."""
        if not usec:
            return None
        try:
            timeout = int(usec)
        except ValueError:
            log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
            return None
        if timeout <= 0:
            return None
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                log.warning("ignoring WATCHDOG_PID=%r: not an integer", pid)
                return None
        return timeout
