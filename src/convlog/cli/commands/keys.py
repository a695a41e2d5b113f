"""``convlog keys``: making the keys of a CURVE bus (and a signing key pair beside them)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@click.group()
def keys() -> None:
    """Make keys: CURVE certificates for a broker and its clients (see docs/security.md)."""


@keys.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default="the current directory", help="Where to write the files (created 0700 if missing).")
@click.option("--name", default="convlog", show_default=True,
              help="Base name of the files, e.g. broker, recorder, agent-1.")
def generate(directory: Path, name: str) -> None:
    """Write a CURVE key pair as pyzmq certificates (NAME.key public, NAME.key_secret
    0600) and an Ed25519 signing key pair (NAME-sign.pem 0600, NAME-sign.pub). Existing
    files are never overwritten."""
    from convlog.bus import curve
    from convlog.store import signing

    if not _NAME.fullmatch(name):
        raise click.BadParameter("letters, digits, '.', '_' and '-', not starting with '.' or '-'",
                                 param_hint="'--name'")
    targets = [directory / f"{name}{curve.PUBLIC_SUFFIX}", directory / f"{name}{curve.SECRET_SUFFIX}",
               *signing.key_paths(directory, name)]
    for target in targets:
        if target.exists() or target.is_symlink():
            click.echo(f"convlog: {target} exists: refusing to overwrite it (choose another --name or --dir)", err=True)
            sys.exit(1)
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        directory.chmod(0o700)
    public, secret = curve.generate_certificates(directory, name)
    private_pem, public_pem = signing.generate_signing_key(directory, name)
    click.echo(f"wrote {public} (CURVE public certificate)")
    click.echo(f"wrote {secret} (CURVE secret certificate, 0600: keep it private)")
    click.echo(f"wrote {private_pem} (Ed25519 signing key, 0600: keep it private)")
    click.echo(f"wrote {public_pem} (Ed25519 public key)")
    click.echo("use as the broker's keys:")
    click.echo(f"  convlog broker --curve-secret {secret} --curve-allow ALLOW_DIR")
    click.echo("  (ALLOW_DIR holds the public .key files of the clients allowed)")
    click.echo("or as a client's (a recorder's, publisher's or player's):")
    click.echo(f"  copy {public} into the broker's ALLOW_DIR, then")
    click.echo(f"  convlog record|publish|play ... --curve-secret {secret} --curve-server BROKER_DIR/BROKER.key")
