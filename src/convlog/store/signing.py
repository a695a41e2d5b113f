"""Ed25519 signing keys on disk: a PKCS#8 PEM private key (mode 0600) and its
SubjectPublicKeyInfo PEM public key, made and read with the ``cryptography`` package
(``cryptography.hazmat.primitives.asymmetric.ed25519``; Ed25519 is RFC 8032, the PEM
forms RFC 5958 / RFC 5280 as in RFC 8410).

``convlog keys generate`` writes a pair beside its CURVE certificates; this module only
makes and loads keys.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

#: Suffix of the private key file: ``NAME-sign.pem``.
PRIVATE_SUFFIX = "-sign.pem"
#: Suffix of the public key file: ``NAME-sign.pub``.
PUBLIC_SUFFIX = "-sign.pub"


class SigningKeyError(ValueError):
    """A signing key file that cannot be used; the message names the file and the
    reason, on one line."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def key_paths(directory: Path | str, name: str) -> tuple[Path, Path]:
    """``(DIR/NAME-sign.pem, DIR/NAME-sign.pub)``: where :func:`generate_signing_key` writes."""
    directory = Path(directory)
    return directory / f"{name}{PRIVATE_SUFFIX}", directory / f"{name}{PUBLIC_SUFFIX}"


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` (never more open, whatever the umask allows less)
    and write ``data``; an existing file is never overwritten."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_signing_key(directory: Path | str, name: str) -> tuple[Path, Path]:
    """Make a new Ed25519 key pair and write it to ``directory``.

    Args:
        directory: an existing directory.
        name: the base name of the files.

    Returns:
        ``(private_path, public_path)``: ``NAME-sign.pem`` (PKCS#8 PEM, unencrypted, mode
        0600) and ``NAME-sign.pub`` (SubjectPublicKeyInfo PEM, mode 0644).

    Raises:
        FileExistsError: when either file exists (nothing is written then).
        OSError: when the directory cannot be written.
    """
    private_path, public_path = key_paths(directory, name)
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise FileExistsError(17, "refusing to overwrite an existing file", str(path))
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(private_path, private_pem, 0o600)
    try:
        _write_new(public_path, public_pem, 0o644)
    except OSError:
        private_path.unlink()
        raise
    return private_path, public_path


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(path, "no such key file") from None
    except IsADirectoryError:
        raise SigningKeyError(path, "not a file") from None
    except OSError as exc:
        raise SigningKeyError(path, f"cannot read: {exc.strerror or exc}") from None


def load_private_key(path: Path | str) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PKCS#8 PEM, unencrypted).

    Args:
        path: e.g. ``NAME-sign.pem``.

    Returns:
        the key.

    Raises:
        SigningKeyError: the file is missing or unreadable, is accessible to group or
            others (chmod 600), is not a PEM private key, or holds another kind of key.
    """
    path = Path(path)
    data = _read(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SigningKeyError(path, f"a private key with mode {mode:04o}: refusing a key readable by group or "
                                    f"others (chmod 600 {path})")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningKeyError(path, "an encrypted private key (convlog writes and reads unencrypted ones)") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(path, f"not a PEM private key ({_first_line(exc)})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(path, f"not an Ed25519 key (a {type(key).__name__.removeprefix('_')})")
    return key


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    """Read an Ed25519 public key (SubjectPublicKeyInfo PEM).

    Args:
        path: e.g. ``NAME-sign.pub``.

    Returns:
        the key.

    Raises:
        SigningKeyError: the file is missing or unreadable, is not a PEM public key, or
            holds another kind of key.
    """
    path = Path(path)
    data = _read(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(path, f"not a PEM public key ({_first_line(exc)})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(path, f"not an Ed25519 key (a {type(key).__name__.removeprefix('_')})")
    return key


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
