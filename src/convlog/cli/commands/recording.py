"""``convlog`` commands that record the bus: record, launch, broker, publish, demo."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from convlog.cli.commands.options import both_or_neither, curve_client_options, curve_keys, dir_option, load_log
from convlog.recorder.config import FSYNC_POLICIES, load_config


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML config file (default $CONVLOG_CONFIG).")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Log directory.")
@click.option("--sub", multiple=True, metavar="ENDPOINT",
              help="XPUB endpoint to subscribe to (repeatable; default tcp://127.0.0.1:5556).")
@click.option("--topic", "topics", multiple=True, metavar="PREFIX",
              help="Subscribe only to this topic prefix (repeatable; default everything).")
@click.option("--pull", metavar="ENDPOINT", help="Also bind a PULL socket here (e.g. tcp://127.0.0.1:5557).")
@click.option("--rcvhwm", type=int, help="Receive high-water mark, messages (default 1000000).")
@click.option("--fsync", type=click.Choice(FSYNC_POLICIES), help="fsync policy (default interval).")
@click.option("--fsync-interval-ms", type=int, help="Group-commit bound for --fsync interval (default 50).")
@click.option("--segment-bytes", type=int, help="Rotate segments at this size (default 64 MiB).")
@click.option("--metrics", metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (default off).")
@click.option("--no-redact", "redact", flag_value=False, default=None,
              help="Store secrets as received (turns off [redact]; default on).")
@click.option("--no-chain", "chain", flag_value=False, default=None,
              help="Do not link records into the hash chain (chain = false; default on).")
@click.option("--sign-key", type=click.Path(dir_okay=False, path_type=Path),
              help="Ed25519 private key (convlog keys generate): sign the chain head at each checkpoint.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@curve_client_options
def record(config_path: Path | None, log_level: str, **flags: Any) -> None:
    """Record the bus into the log directory (foreground; stop with SIGTERM or Ctrl-C)."""
    from convlog.recorder.daemon import Recorder, configure_logging

    flags["dir"] = flags.pop("directory")
    config = load_config(config_path, overrides=flags)
    configure_logging(log_level.upper())
    sys.exit(Recorder(config, reload_config=lambda: load_config(config_path, overrides=flags)).run())


@click.command()
@click.option("--xsub", default="tcp://127.0.0.1:5555", show_default=True,
              help="Endpoint publishers connect to.")
@click.option("--xpub", default="tcp://127.0.0.1:5556", show_default=True,
              help="Endpoint subscribers connect to.")
@click.option("--hwm", type=click.IntRange(min=0), help="High-water mark for both sockets (default libzmq's 1000).")
@click.option("--curve-secret", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="The broker's own CURVE certificate (NAME.key_secret): both sockets accept only CURVE "
                   "clients. With --curve-allow.")
@click.option("--curve-allow", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Directory of the allowed clients' public certificates (*.key), publishers and "
                   "subscribers alike. With --curve-secret.")
def broker(xsub: str, xpub: str, hwm: int | None, curve_secret: Path | None, curve_allow: Path | None) -> None:
    """Run the reference XSUB/XPUB broker (foreground; stop with SIGTERM or Ctrl-C).

    With --curve-secret and --curve-allow, only clients holding an allowed key are
    heard; the others are refused and logged (see docs/security.md)."""
    from convlog.bus.broker import run_broker
    from convlog.recorder.daemon import configure_logging

    both_or_neither(("--curve-secret", curve_secret), ("--curve-allow", curve_allow))
    configure_logging()
    sys.exit(run_broker(xsub, xpub, hwm, curve_secret=curve_secret, curve_allow=curve_allow))


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "endpoint", default="tcp://127.0.0.1:5555", show_default=True, metavar="ENDPOINT",
              help="The broker's XSUB endpoint (as `play --to`).")
@click.option("--endpoint", "endpoint_alias", hidden=True, help="Old spelling of --to.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True),
              help="Messages per second (default: as fast as possible).")
@click.option("--format", "fmt", type=click.Choice(["auto", "native", "legacy", "export-json"]), default="auto",
              show_default=True,
              help="native: send each line as is; legacy: ConversationEvent records as they are (every field "
                   "kept; bad lines reported and skipped); "
                   "export-json: a 'convlog export --format json' document as native events; auto: by the file.")
@click.option("--topic", help="Topic for every message (default: sender or session id).")
@click.option("--wait", "wait_s", type=float, default=10.0, show_default=True,
              help="Seconds to wait for a subscriber before sending (0: don't wait).")
@click.option("--publisher-id", help="Id in the loss-detection stamps (default host:pid:random).")
@click.option("--no-stamp", is_flag=True, help="Send payloads exactly as in the file, without stamps.")
@curve_client_options
def publish(file: Path, endpoint: str, endpoint_alias: str | None, rate: float | None, fmt: str, topic: str | None,
            wait_s: float, publisher_id: str | None, no_stamp: bool, curve_secret: Path | None,
            curve_server: Path | None) -> None:
    """Publish a JSONL file (or an export JSON document, as the native events that
    re-create its sessions) to a broker, stamping JSON objects for loss detection."""
    endpoint = endpoint_alias or endpoint
    keys = curve_keys(curve_secret, curve_server)
    from convlog.bus.publisher import Publisher, file_messages
    from convlog.bus.publisher import publish as run

    messages = file_messages(file, topic=topic, fmt=fmt)  # an export document is checked here, before connecting
    with Publisher(endpoint, publisher_id=publisher_id, stamp=not no_stamp, curve=keys) as pub:
        report = run(messages, rate=rate, wait_s=wait_s or None, publisher=pub)
    from convlog.core.view import plural

    click.echo(f"published {plural(report.sent, 'message')} in {report.seconds:.2f} s ({report.rate:,.0f}/s)", err=True)


@click.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Fresh directory for the demo log (default ./conversation_logs/demo-<time>).")
@click.option("--conversations", type=click.IntRange(min=2, max=2000), default=40, show_default=True,
              help="ShareGPT conversations to publish.")
def demo(directory: Path | None, conversations: int) -> None:
    """Start a broker and a recorder, publish real conversations and session control
    events, stop cleanly, and show the folded sessions."""
    from convlog.cli.demo import run_demo

    run_demo(directory, conversations)


@click.command()
@dir_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML config file for the recorder it starts.")
@click.option("--sub", multiple=True, metavar="ENDPOINT", help="XPUB endpoint for the recorder it starts (repeatable).")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds to wait for a new recorder to answer (and a new sync to start).")
@click.option("--sync", "sync_url", metavar="URL",
              help="Then make sure one `convlog sync --follow` runs for DIR into this PostgreSQL database "
                   "(started detached, the URL passed in $CONVLOG_DB, output in DIR/sync.log).")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing on success (for hooks).")
@click.option("--resume", metavar="SESSION|latest", help="Then print the resume context of a session.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True,
              help="Format of --resume.")
@click.option("--menu", is_flag=True,
              help="Then pick a session, or a checkpoint and a session as of it, to resume (on a terminal).")
def launch(directory: Path, config_path: Path | None, sub: tuple[str, ...], timeout: float, sync_url: str | None,
           quiet: bool, resume: str | None, fmt: str, menu: bool) -> None:
    """Make sure exactly one recorder runs for DIR (start it detached if none answers);
    for agents' startup hooks. With --sync URL, then exactly one `convlog sync --follow`
    into that database too. Exit 0 when they run, 1 (with the log's last lines) when not."""
    from convlog.cli import launcher, output

    args: list[str] = []
    if config_path is not None:
        args += ["--config", str(config_path)]
    for endpoint in sub:
        args += ["--sub", endpoint]
    starts = [("recorder", lambda: launcher.ensure_running(directory, args, timeout_s=timeout))]
    if sync_url:
        starts.append(("sync", lambda: launcher.ensure_sync_running(directory, sync_url, timeout_s=timeout)))
    for what, start in starts:
        try:
            result = start()
        except launcher.LaunchError as exc:
            click.echo(f"convlog: {exc}", err=True)
            sys.exit(1)
        if not quiet:
            verb = "started" if result.started else "already running"
            click.echo(f"{what} {verb}: pid {result.pid}, {directory} (log {result.log})", err=bool(resume or menu))
    upto = None
    if menu:
        picked = output.pick_resume(directory, load_log(directory, None))
        if picked is None:
            return
        resume, upto = picked
    if resume is not None:
        output.print_resume(load_log(directory, None, upto), resume, fmt)
