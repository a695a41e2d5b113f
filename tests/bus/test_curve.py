"""CURVE on the bus: only publishers (and subscribers) holding an allowed key are heard.

End to end through real sockets: ``convlog keys generate`` makes the keys, a real
``convlog broker --curve-secret --curve-allow`` and ``convlog record`` with its own key run
as subprocesses on free loopback ports, and ``convlog publish`` processes with an allowed
key, an unknown key and no CURVE at all publish to it; the log on disk and the broker's
stderr say who was heard and who was refused. Then the command-line errors and the
certificate checks.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Bus, Proc, answering, convlog_cmd, free_port, records, spawn, wait_for_records
from convlog.bus.curve import Authenticator, CurveError, load_allow_dir, load_certificate
from convlog.bus.publisher import Publisher
from convlog.recorder.config import ConfigError, load_config

pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """``convlog ARGS`` in a subprocess, output captured as text."""
    return subprocess.run(convlog_cmd(*args), capture_output=True, text=True, timeout=timeout_s, cwd=cwd,
                          stdin=subprocess.DEVNULL)


def generate(directory: Path, name: str) -> tuple[Path, Path]:
    """``convlog keys generate --dir DIRECTORY --name NAME``; returns ``(NAME.key, NAME.key_secret)``."""
    result = run("keys", "generate", "--dir", str(directory), "--name", name)
    assert result.returncode == 0, result.stderr
    return directory / f"{name}.key", directory / f"{name}.key_secret"


def wait_for_output(proc: Proc, pattern: str, timeout_s: float = 20.0) -> str:
    """Wait until ``proc``'s output matches the regular expression ``pattern``; returns the output."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = proc.output()
        if re.search(pattern, text):
            return text
        time.sleep(0.05)
    pytest.fail(f"{pattern!r} did not appear within {timeout_s} s in:\n{proc.output()}")


def one_line(stderr: str) -> str:
    """The single line of ``stderr`` (fails on none, several, or a traceback)."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def write_events(path: Path, session: str, text: str) -> Path:
    """A one-message native JSONL file for ``convlog publish``."""
    path.write_text(f'{{"type": "message", "session_id": "{session}", "text": "{text}"}}\n')
    return path


def test_only_allowed_publishers_are_recorded_and_the_broker_logs_the_refusals(tmp_path: Path) -> None:
    """A broker with CURVE and an allow directory holding the recorder's and one agent's
    public keys: the recorder (its own key) subscribes; the agent publishing with its key
    is recorded; a publisher with a key not in the allow directory (``convlog publish``)
    and a plain, non-CURVE publisher sending all along (a Python ``Publisher``) are not;
    the broker logs a WARNING per refused peer (the unknown key with its address, the
    plain one as a failed handshake) and the totals at stop; the
    refused CURVE publisher says why no subscriber came; status shows CURVE on."""
    keys, allow = tmp_path / "keys", tmp_path / "allow"
    allow.mkdir()
    _, broker_secret = generate(keys, "broker")
    broker_public = keys / "broker.key"
    recorder_public, recorder_secret = generate(keys, "recorder")
    agent_public, agent_secret = generate(keys, "agent")
    stranger_public, stranger_secret = generate(keys, "stranger")
    for cert in (recorder_public, agent_public):
        (allow / cert.name).write_bytes(cert.read_bytes())

    xsub, xpub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    broker = spawn(["broker", "--xsub", xsub, "--xpub", xpub, "--curve-secret", str(broker_secret),
                    "--curve-allow", str(allow)], tmp_path / "broker.log")
    bus = Bus(tmp_path, xsub, xpub, broker)
    try:
        wait_for_output(broker, r"CURVE on: .*2 allowed client key")
        directory = tmp_path / "log"
        rec = bus.recorder(directory, "--curve-secret", str(recorder_secret), "--curve-server", str(broker_public))
        answering(directory, rec)

        stranger = run("publish", str(write_events(tmp_path / "s.jsonl", "s-stranger", "from a stranger")),
                       "--to", xsub, "--wait", "5", "--curve-secret", str(stranger_secret),
                       "--curve-server", str(broker_public))
        assert stranger.returncode == 1
        assert "refused this publisher's CURVE handshake: key not allowed" in one_line(stranger.stderr)
        # A plain publisher (no CURVE) keeps sending until the broker logged its refusal
        # with its address; it reconnects by itself after each refusal.
        plain = Publisher(xsub, heartbeat_s=None)
        deadline = time.monotonic() + 20
        # Which side notices the mismatch first varies (the broker, or the client, which
        # then hangs up: "handshake failed (Broken pipe)"), and so does whether libzmq had
        # closed the connection before its address was read ("an unknown peer").
        refused_plain = r"XSUB refused (127\.0\.0\.1:\d+|an unknown peer): (not a CURVE client|handshake failed)"
        while not re.search(refused_plain, broker.output()):
            assert time.monotonic() < deadline, broker.output()
            plain.send(b"s-plain", b'{"type": "message", "session_id": "s-plain", "text": "from a plain publisher"}')
            time.sleep(0.05)
        plain.close(0)
        # The allowed agent waits until the recorder's subscription reached it (slow joiner).
        allowed = run("publish", str(write_events(tmp_path / "a.jsonl", "s-agent", "from the agent")),
                      "--to", xsub, "--wait", "20", "--curve-secret", str(agent_secret),
                      "--curve-server", str(broker_public))
        assert allowed.returncode == 0, allowed.stderr
        wait_for_records(directory, 1)

        log = broker.output()
        stranger_key = load_certificate(stranger_public, secret=False).public.decode()
        assert f"WARNING convlog.curve: CURVE: XSUB refused key {stranger_key} from 127.0.0.1: key not allowed" in log
        assert "CURVE: XPUB refused" not in log  # the recorder's key is allowed

        status = run("status", "--dir", str(directory))
        assert "CURVE: on" in status.stdout and "connected" in status.stdout, status.stdout + status.stderr

        assert rec.terminate() == 0, rec.output()
        assert broker.terminate() == 0, broker.output()
        totals = re.search(r"CURVE refusals: XSUB: (\d+) \((.*)\); XPUB: 0", broker.output())
        assert totals is not None, broker.output()
        assert int(totals.group(1)) >= 2
        assert "key not allowed (ZAP 400: Unknown key)" in totals.group(2)
        assert re.search(r"not a CURVE client \(security mechanism mismatch\) \d+|handshake failed", totals.group(2))
    finally:
        for proc in [*bus.procs, broker]:
            if proc.popen.poll() is None:
                proc.kill9()

    texts = [r["data"]["text"] for r in records(directory) if r["source"] == "sub" and r["kind"] == "message"]
    assert texts == ["from the agent"]
    start = next(r for r in records(directory) if r["kind"] == "recorder.start")
    assert start["data"]["config"]["curve"] == {"secret": str(recorder_secret), "server": str(broker_public)}


def test_a_recorder_without_an_allowed_key_hears_nothing_and_says_why(tmp_path: Path) -> None:
    """A recorder whose key is not in the broker's allow directory is refused on the XPUB
    side: the broker logs it, the recorder logs that the broker refused its handshake,
    and its status is unhealthy, naming the refusal."""
    keys, allow = tmp_path / "keys", tmp_path / "allow"
    allow.mkdir()
    _, broker_secret = generate(keys, "broker")
    agent_public, _ = generate(keys, "agent")
    _, recorder_secret = generate(keys, "recorder")
    (allow / agent_public.name).write_bytes(agent_public.read_bytes())
    xsub, xpub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    broker = spawn(["broker", "--xsub", xsub, "--xpub", xpub, "--curve-secret", str(broker_secret),
                    "--curve-allow", str(allow)], tmp_path / "broker.log")
    bus = Bus(tmp_path, xsub, xpub, broker)
    try:
        directory = tmp_path / "log"
        rec = bus.recorder(directory, "--curve-secret", str(recorder_secret),
                           "--curve-server", str(keys / "broker.key"))
        wait_for_output(broker, r"XPUB refused key \S+ from 127\.0\.0\.1: key not allowed")
        wait_for_output(rec, r"the broker at tcp://127\.0\.0\.1:\d+ refused the CURVE handshake: key not allowed")
        deadline = time.monotonic() + 20
        while True:
            status = run("status", "--dir", str(directory))
            if "CURVE handshake refused" in status.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "UNHEALTHY" in status.stdout and "CURVE handshake refused: key not allowed" in status.stdout, \
            status.stdout + status.stderr
    finally:
        for proc in [*bus.procs, broker]:
            if proc.popen.poll() is None:
                proc.kill9()


# --------------------------------------------------------------------------- keys generate


def test_keys_generate_writes_the_four_files_with_private_modes_and_never_overwrites(tmp_path: Path) -> None:
    """``convlog keys generate --dir D --name N`` creates D (0700) with pyzmq certificates
    ``N.key`` and ``N.key_secret`` (0600) and an Ed25519 pair ``N-sign.pem`` (0600) and
    ``N-sign.pub``, all loadable; a second run refuses with one line, exit 1, and leaves
    the files as they were. Without --dir it writes to the current directory."""
    from convlog.store.signing import load_private_key, load_public_key

    directory = tmp_path / "new" / "keys"
    result = run("keys", "generate", "--dir", str(directory), "--name", "agent")
    assert result.returncode == 0, result.stderr
    names = {"agent.key", "agent.key_secret", "agent-sign.pem", "agent-sign.pub"}
    assert {p.name for p in directory.iterdir()} == names
    for name in names:
        assert f"wrote {directory / name}" in result.stdout
    assert "--curve-secret" in result.stdout and "--curve-allow" in result.stdout
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [directory, *directory.iterdir()]}
    assert mode["keys"] == 0o700
    assert mode["agent.key_secret"] == 0o600 and mode["agent-sign.pem"] == 0o600
    assert mode["agent.key"] & 0o022 == 0 and mode["agent-sign.pub"] & 0o022 == 0

    secret = load_certificate(directory / "agent.key_secret", secret=True)
    public = load_certificate(directory / "agent.key", secret=False)
    assert secret.public == public.public and secret.secret is not None
    assert (directory / "agent-sign.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (directory / "agent-sign.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    private_key = load_private_key(directory / "agent-sign.pem")
    load_public_key(directory / "agent-sign.pub").verify(private_key.sign(b"x"), b"x")

    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    again = run("keys", "generate", "--dir", str(directory), "--name", "agent")
    assert again.returncode == 1
    assert "exists: refusing to overwrite" in one_line(again.stderr)
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before

    here = tmp_path / "here"
    here.mkdir()
    assert run("keys", "generate", cwd=here).returncode == 0
    assert {p.name for p in here.iterdir()} == {"convlog.key", "convlog.key_secret", "convlog-sign.pem",
                                                "convlog-sign.pub"}


# --------------------------------------------------------------------------- command-line errors


@pytest.mark.parametrize("given", ["--curve-secret", "--curve-allow"])
def test_broker_with_one_curve_option_is_a_usage_error(tmp_path: Path, given: str) -> None:
    """``convlog broker`` with only one of ``--curve-secret`` / ``--curve-allow`` exits 2
    with one line naming both options, and binds nothing."""
    result = run("broker", "--xsub", f"tcp://127.0.0.1:{free_port()}", "--xpub", f"tcp://127.0.0.1:{free_port()}",
                 given, str(tmp_path / "b.key_secret" if given == "--curve-secret" else tmp_path))
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "--curve-secret" in line and "--curve-allow" in line and "both or neither" in line


@pytest.mark.parametrize("command", ["publish", "play"])
def test_clients_with_one_curve_option_are_a_usage_error(tmp_path: Path, command: str) -> None:
    """``convlog publish`` and ``convlog play`` with ``--curve-secret`` alone exit 2 with one line."""
    target = write_events(tmp_path / "e.jsonl", "s", "t") if command == "publish" else tmp_path
    result = run(command, str(target) if command == "publish" else "--dir", *([] if command == "publish"
                 else [str(target)]), "--to", f"tcp://127.0.0.1:{free_port()}", "--curve-secret", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "--curve-server" in one_line(result.stderr)


def test_a_missing_or_bad_certificate_is_one_line_naming_the_file(tmp_path: Path) -> None:
    """A missing certificate stops the broker, the recorder and a publisher at start with
    one line naming the file and exit 1; so does a public certificate given where the
    secret one is needed, and a secret certificate open to others."""
    keys = tmp_path / "keys"
    public, secret = generate(keys, "broker")
    missing = tmp_path / "nope.key_secret"
    endpoint = f"tcp://127.0.0.1:{free_port()}"

    result = run("broker", "--xsub", endpoint, "--xpub", f"tcp://127.0.0.1:{free_port()}",
                 "--curve-secret", str(missing), "--curve-allow", str(keys))
    assert result.returncode == 1
    assert one_line(result.stderr) == f"convlog: {missing}: no such certificate file"

    result = run("record", "--dir", str(tmp_path / "log"), "--sub", endpoint,
                 "--curve-secret", str(missing), "--curve-server", str(public))
    assert result.returncode == 1
    assert f"--curve-secret: {missing}: no such certificate file" in one_line(result.stderr)
    assert not (tmp_path / "log" / "events").exists()

    events = write_events(tmp_path / "e.jsonl", "s", "t")
    result = run("publish", str(events), "--to", endpoint, "--curve-secret", str(public), "--curve-server", str(public))
    assert result.returncode == 1
    assert f"{public}: holds no secret key" in one_line(result.stderr)

    secret.chmod(0o640)
    result = run("publish", str(events), "--to", endpoint, "--curve-secret", str(secret), "--curve-server", str(public))
    assert result.returncode == 1
    assert f"{secret}: holds a secret key but has mode 0640" in one_line(result.stderr)


# --------------------------------------------------------------------------- certificates and config


def test_certificate_loading_names_the_file_and_the_reason(tmp_path: Path) -> None:
    """:func:`load_certificate` and :func:`load_allow_dir` raise :class:`CurveError`
    naming the file for: a directory, a file that is not a certificate, a key that is not
    Z85, an allow directory that is missing or holds no ``*.key``, or a bad ``*.key`` in it;
    a broken allow directory also stops :class:`Authenticator` before it starts."""
    import zmq

    keys = tmp_path / "keys"
    generate(keys, "a")
    cases = {
        tmp_path: "not a regular file",
        write_events(tmp_path / "x.key", "s", "t"): "not a CURVE certificate",
    }
    short = tmp_path / "short.key"
    short.write_text('curve\n    public-key = "abc"\n')
    cases[short] = "not 40 Z85 characters"
    for path, reason in cases.items():
        with pytest.raises(CurveError, match=re.escape(str(path)) + ".*" + re.escape(reason)):
            load_certificate(path, secret=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    for directory, reason in ((tmp_path / "missing", "no such allow directory"), (empty, "no allowed public key")):
        with pytest.raises(CurveError, match=reason):
            load_allow_dir(directory)
    (keys / "broken.key").write_text("hello\n")
    with pytest.raises(CurveError, match=r"broken\.key: not a CURVE certificate"):
        Authenticator(zmq.Context.instance(), keys)


def test_recorder_config_takes_curve_keys_from_file_and_environment(tmp_path: Path) -> None:
    """``[recorder] curve_secret`` / ``curve_server`` (and ``CONVLOG_CURVE_*``) are read,
    checked together, and a bad certificate names the config file and line; one of the two
    alone is an error."""
    keys = tmp_path / "keys"
    public, secret = generate(keys, "rec")
    config_file = tmp_path / "convlog.toml"
    config_file.write_text(f'[recorder]\ncurve_secret = "{secret}"\ncurve_server = "{public}"\n')
    config = load_config(config_file, env={})
    assert (config.curve_secret, config.curve_server) == (secret, public)
    assert config.curve_summary() == {"secret": str(secret), "server": str(public)}

    config_file.write_text(f'[recorder]\ndir = "x"\ncurve_secret = "{tmp_path / "gone"}"\ncurve_server = "{public}"\n')
    with pytest.raises(ConfigError, match=rf"{re.escape(str(config_file))}:3: recorder.curve_secret: .*gone: no such"):
        load_config(config_file, env={})

    env = {"CONVLOG_CURVE_SECRET": str(secret)}
    with pytest.raises(ConfigError, match="CONVLOG_CURVE_SECRET: CURVE needs curve_server too"):
        load_config(None, env=env)
    env["CONVLOG_CURVE_SERVER"] = str(public)
    assert load_config(None, env=env).curve_server == public
    assert load_config(None, env={}).curve_summary() is None
    assert os.environ.get("CONVLOG_CURVE_SECRET") is None
