"""Writing exports: safe file names, where ``--out`` goes, atomic replacement of each
file, a stream to stdout.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any, BinaryIO

from convlog.core.document import SessionExport
from convlog.readers.export.render import FORMATS, render
from convlog.store.fsync import fsync_dir

__all__ = ["MAX_STEM", "out_target", "replace_file", "safe_file_name", "write_files", "write_stream"]

#: Longest file name stem (characters, all ASCII) before it is cut and given a hash;
#: with a suffix the name stays well under the usual 255-byte limit.
MAX_STEM = 200
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def safe_file_name(session_id: str, suffix: str = "") -> str:
    """A file name for a session id: safe on any POSIX file system and distinct for
    distinct ids.

    Every byte of the id's UTF-8 outside ``[A-Za-z0-9._-]`` is percent-encoded as
    ``%XX`` (upper-case hex, as RFC 3986 section 2.1), and so is a leading ``.`` or
    ``-`` (no hidden files, no ``.``/``..``, nothing that reads as an option). The
    empty id becomes ``%`` (which no encoded id can be: an encoded ``%`` is always
    followed by two hex digits). A stem longer than :data:`MAX_STEM` characters is cut
    (not inside an escape) and ends in ``~`` and 20 hex digits of the id's SHA-256
    (``~`` never occurs in an uncut name), so distinct ids keep distinct names (two
    long ids collide only with a 2**-80 chance). Case-insensitive file systems can
    still fold two ids that differ only in case onto one file.

    Args:
        session_id: any string (lone surrogates are encoded as their UTF-8-like bytes).
        suffix: appended as is (``.md``, ...).

    Returns:
        the name: ASCII characters from ``[A-Za-z0-9._%~-]``, at most
        ``MAX_STEM + len(suffix)`` characters.
    """
    raw = session_id.encode("utf-8", "surrogatepass")
    if not raw:
        return "%" + suffix
    parts = []
    for index, byte in enumerate(raw):
        if byte in _SAFE_BYTES and not (index == 0 and byte in b".-"):
            parts.append(chr(byte))
        else:
            parts.append(f"%{byte:02X}")
    stem = "".join(parts)
    if len(stem) > MAX_STEM:
        cut = MAX_STEM - 21
        if stem[cut - 1] == "%":
            cut -= 1
        elif stem[cut - 2] == "%":
            cut -= 2
        stem = stem[:cut] + "~" + sha256(raw).hexdigest()[:20]
    return stem + suffix


def out_target(out: str | None, several: bool) -> tuple[Path | None, bool]:
    """Where ``--out`` sends an export. Pure but for looking at the path.

    Args:
        out: the ``--out`` value; None or ``-`` is stdout.
        several: more than one session (or ``--all``).

    Returns:
        ``(None, False)`` for stdout; ``(path, True)`` for a directory (several
        sessions, an existing directory, or a path ending in ``/``): one file per
        session; else ``(path, False)``: that file.

    Raises:
        ValueError: when several sessions would go to an existing file.
    """
    if out is None or out == "-":
        return None, False
    target = Path(out)
    as_dir = several or target.is_dir() or out.endswith(("/", os.sep))
    if as_dir and target.exists() and not target.is_dir():
        raise ValueError(f"{out} is a file; several sessions need a directory")
    return target, as_dir


def write_stream(
    exports: Iterable[SessionExport], fmt: str, header: dict[str, Any], stream: BinaryIO
) -> int:
    """Write exports to a binary stream (stdout) as one :func:`render` stream, each
    session as soon as it is built.

    Returns:
        the number of sessions written.

    Raises:
        OSError: when the stream fails (BrokenPipeError when its reader went away).
    """
    count = 0

    def counted() -> Iterator[SessionExport]:
        nonlocal count
        for item in exports:
            count += 1
            yield item

    for chunk in render(counted(), fmt, header):
        if chunk:
            stream.write(chunk)
            stream.flush()
    return count


def replace_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: written to a temporary file in the same
    directory, then renamed over it (rename(2) is atomic), so a reader sees the old file
    or the new one, never half of one; the temporary file is removed on failure.

    Not fsynced (unlike :func:`convlog.store.fsync.write_atomic`): an export is derived from the
    log and can be run again, and an fsync per file (0.4 ms on ext4, measured) would
    double the time of an export of many small sessions.

    Raises:
        OSError: when it cannot be written (the old file, if any, is left as it was).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_files(
    exports: Iterable[SessionExport], fmt: str, header: dict[str, Any], out: Path, as_dir: bool
) -> list[Path]:
    """Write exports to files, each replaced atomically (:func:`replace_file`); the
    directory is fsynced once at the end, so the names survive a power failure.

    Args:
        exports: the sessions.
        fmt: a key of :data:`FORMATS`.
        header: see :func:`render`.
        out: the file (``as_dir`` False: every session goes into it, as one stream) or
            the directory (created if missing; one file per session named
            ``safe_file_name(id) + suffix``, replaced when it exists).
        as_dir: see ``out``.

    Returns:
        the files written.

    Raises:
        OSError: when a file cannot be written (the files written before it stay).
    """
    if not as_dir:
        out.parent.mkdir(parents=True, exist_ok=True)
        replace_file(out, b"".join(render(exports, fmt, header)))
        fsync_dir(out.parent)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for item in exports:
        path = out / safe_file_name(item.id, FORMATS[fmt])
        replace_file(path, b"".join(render([item], fmt, header)))
        written.append(path)
    fsync_dir(out)
    return written
