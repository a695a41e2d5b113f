"""Ed25519 signing keys on disk (:mod:`convlog.store.signing`): made with private modes,
never overwritten, read back, and refused with the file and the reason when unusable."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from convlog.store.signing import SigningKeyError, generate_signing_key, load_private_key, load_public_key


def test_a_generated_pair_loads_back_and_signs(tmp_path: Path) -> None:
    """:func:`generate_signing_key` writes NAME-sign.pem (0600, PKCS#8) and NAME-sign.pub
    (SubjectPublicKeyInfo); the loaded private key's signature verifies with the loaded
    public key."""
    private_path, public_path = generate_signing_key(tmp_path, "rec")
    assert (private_path.name, public_path.name) == ("rec-sign.pem", "rec-sign.pub")
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    private = load_private_key(private_path)
    public = load_public_key(public_path)
    public.verify(private.sign(b"a record"), b"a record")
    assert public.public_bytes_raw() == private.public_key().public_bytes_raw()


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    """A second :func:`generate_signing_key` with the same name raises FileExistsError and
    leaves both files as they were."""
    paths = generate_signing_key(tmp_path, "rec")
    before = [p.read_bytes() for p in paths]
    with pytest.raises(FileExistsError):
        generate_signing_key(tmp_path, "rec")
    assert [p.read_bytes() for p in paths] == before


def test_unusable_keys_name_the_file_and_the_reason(tmp_path: Path) -> None:
    """Missing, not PEM, another kind of key (EC P-256), a private key given as public and
    a private key readable by group or others each raise :class:`SigningKeyError` whose
    message names the file and says why."""
    private_path, public_path = generate_signing_key(tmp_path, "rec")
    not_pem = tmp_path / "x.pem"
    not_pem.write_text("hello\n")
    not_pem.chmod(0o600)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_private = tmp_path / "ec.pem"
    ec_private.write_bytes(ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    ec_private.chmod(0o600)
    ec_public = tmp_path / "ec.pub"
    ec_public.write_bytes(ec_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    cases = [
        (load_private_key, tmp_path / "gone.pem", "no such key file"),
        (load_public_key, tmp_path / "gone.pub", "no such key file"),
        (load_private_key, not_pem, "not a PEM private key"),
        (load_public_key, not_pem, "not a PEM public key"),
        (load_public_key, private_path, "not a PEM public key"),
        (load_private_key, ec_private, "not an Ed25519 key"),
        (load_public_key, ec_public, "not an Ed25519 key"),
    ]
    for load, path, reason in cases:
        with pytest.raises(SigningKeyError) as caught:
            load(path)
        assert str(caught.value).startswith(f"{path}: ") and reason in str(caught.value), (path, caught.value)
    private_path.chmod(0o640)
    with pytest.raises(SigningKeyError, match="mode 0640: refusing a key readable by group or others"):
        load_private_key(private_path)
    assert isinstance(load_public_key(public_path), ed25519.Ed25519PublicKey)
