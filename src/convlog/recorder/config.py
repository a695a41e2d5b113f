"""Recorder configuration: defaults < TOML file < ``CONVLOG_*`` environment < flags.

The TOML file (``--config FILE`` or ``CONVLOG_CONFIG``) has three tables::

    [recorder]
    dir = "./conversation_logs"          # data directory
    sub = ["tcp://127.0.0.1:5556"]       # XPUB endpoints to connect a SUB socket to
    topics = [""]                        # subscription prefixes ("" = everything)
    pull = "tcp://127.0.0.1:5557"        # optional PULL endpoint to bind ("" = none)
    rcvhwm = 1000000                     # receive high-water mark, messages
    fsync = "interval"                   # always | interval | never
    fsync_interval_ms = 50               # group-commit bound for "interval"
    segment_bytes = 67108864             # rotate segments at this size
    compress = "zstd"                    # seal finished segments: zstd | none
    compress_level = 3                   # zstd level for sealing, 1-22
    session_fields = ["session_id", "conversation_id", "context_id", "ContextId", "thread_id"]
    drain_timeout_ms = 2000              # bounded wait for delivered messages at stop
    state_interval_ms = 1000             # how often recovery/state.json is refreshed
    processing_nice = 5                  # lower the processing thread's priority (0 = off)
    held_bytes = 268435456               # records held in memory while writes fail
    checkpoint_interval_s = 300          # automatic checkpoints (also one at clean stop)
    checkpoint_keep = 12                 # automatic checkpoints kept (labelled ones always)
    silence_threshold_s = 120            # status warns when open publishers are silent longer
    silence_unhealthy = false            # ... and is unhealthy then (for a bus that is never idle)
    max_publishers = 10000               # publishers followed for gaps (least recently seen evicted)
    metrics = ""                         # Prometheus endpoint HOST:PORT, e.g. "127.0.0.1:9464" ("" = off)
    file_mode = "0600"                   # mode of the files created under dir (octal string)
    dir_mode = "0700"                    # ... and of its directories ("0640"/"0750" for a group)
    chain = true                         # link each record to the one before it (false or --no-chain: off)
    sign_key = ""                        # Ed25519 private key (convlog keys generate): sign chain heads
    curve_secret = ""                    # own CURVE certificate (NAME.key_secret) for a CURVE broker
    curve_server = ""                    # ... and the broker's public one (NAME.key); both or neither

    [sync]                               # convlog sync projects this log into PostgreSQL
    db = ""                              # its URL: retention then keeps what it has not written

    [retention]                          # off unless max_age or max_bytes is set
    max_age = "90d"                      # let go of finished segments whose records are older
    max_bytes = "50GiB"                  # ... and the oldest ones while the log is bigger
    action = "delete"                    # delete | archive (move them to archive_dir)
    archive_dir = ""                     # where archived segments go (required for archive)
    interval_s = 600                     # how often the recorder applies it

    [redact]                             # secrets replaced before they are stored (on by default)
    enabled = true                       # false (or --no-redact): store payloads as received
    disable = ["jwt"]                    # built-in rule ids to leave out
    [[redact.rules]]                     # a rule of your own (group 1 is the secret, if any)
    id = "internal-token"
    regex = "itk_[A-Za-z0-9]{32}"
    keywords = ["itk_"]

    [enrich]
    word_count = false
    large_message_bytes = 8388608
    defaults = { ace_tier = "E" }
    [[enrich.rules]]
    keywords = ["blocked", "stuck"]
    tag = "@Status-Blocked"
    tags_field = "shl_tags"

Every key is checked when the configuration is built; a bad one raises
:class:`ConfigError` naming the file, line, key and reason, so the recorder stops at
start instead of failing later.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from convlog.core.enrich import Enricher, Rule
from convlog.core.redact import RedactError, Redactor, RedactRule, compile_rule
from convlog.core.retention import Limits
from convlog.core.wire import DEFAULT_SESSION_FIELDS
from convlog.store import modes

FSYNC_POLICIES: tuple[str, ...] = ("always", "interval", "never")


class ConfigError(Exception):
    """An invalid configuration value.

    Attributes:
        origin: the file path, ``environment`` or ``flag``.
        key: the dotted key (``recorder.fsync``) or variable name.
        reason: what is wrong.
        line: the 1-based line in the file, when known.
    """

    def __init__(self, origin: str, key: str, reason: str, line: int | None = None) -> None:
        self.origin, self.key, self.reason, self.line = origin, key, reason, line
        where = f"{origin}:{line}" if line else origin
        super().__init__(f"{where}: {key}: {reason}")


@dataclass(frozen=True, slots=True)
class Config:
    """The recorder's settings. Sizes in bytes, durations in milliseconds."""

    dir: Path = Path("conversation_logs")
    sub: tuple[str, ...] = ("tcp://127.0.0.1:5556",)
    topics: tuple[str, ...] = ("",)
    pull: str | None = None
    rcvhwm: int = 1_000_000
    fsync: str = "interval"
    fsync_interval_ms: int = 50
    segment_bytes: int = 64 * 1024 * 1024
    compress: str = "zstd"
    compress_level: int = 3
    session_fields: tuple[str, ...] = DEFAULT_SESSION_FIELDS
    drain_timeout_ms: int = 2000
    state_interval_ms: int = 1000
    processing_nice: int = 5
    held_bytes: int = 256 * 1024 * 1024
    checkpoint_interval_s: int = 300
    checkpoint_keep: int = 12
    silence_threshold_s: int = 120
    silence_unhealthy: bool = False
    max_publishers: int = 10_000
    metrics: str | None = None
    file_mode: int = modes.DEFAULT_FILE_MODE
    dir_mode: int = modes.DEFAULT_DIR_MODE
    chain: bool = True
    sign_key: Path | None = None
    sync_db: str | None = None
    curve_secret: Path | None = None
    curve_server: Path | None = None
    retention_max_age_s: float | None = None
    retention_max_bytes: int | None = None
    retention_action: str = "delete"
    retention_archive_dir: Path | None = None
    retention_interval_s: int = 600
    word_count: bool = False
    large_message_bytes: int = 8 * 1024 * 1024
    defaults: Mapping[str, Any] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    redact: bool = True
    redact_disable: tuple[str, ...] = ()
    redact_rules: tuple[RedactRule, ...] = ()
    source: str = "defaults"

    def redactor(self) -> Redactor | None:
        """The :class:`~convlog.core.redact.Redactor` of ``[redact]``, or None when
        ``enabled = false`` (or ``--no-redact``)."""
        if not self.redact:
            return None
        return Redactor(disable=self.redact_disable, extra=self.redact_rules)

    def redact_summary(self) -> dict[str, Any]:
        """``[redact]`` as JSON-friendly values: ``enabled``, ``disabled`` ids, user ``rules`` ids."""
        return {"enabled": self.redact, "disabled": list(self.redact_disable),
                "rules": [r.id for r in self.redact_rules]}

    def enricher(self) -> Enricher:
        """Build the :class:`~convlog.core.enrich.Enricher` these settings describe."""
        return Enricher(
            rules=self.rules,
            defaults=dict(self.defaults),
            large_message_bytes=self.large_message_bytes,
            word_count=self.word_count,
        )

    def summary(self) -> dict[str, Any]:
        """The settings as a JSON-friendly dict for the ``recorder.start`` record."""
        return {
            "dir": str(self.dir),
            "sub": list(self.sub),
            "topics": list(self.topics),
            "pull": self.pull,
            "rcvhwm": self.rcvhwm,
            "fsync": self.fsync,
            "fsync_interval_ms": self.fsync_interval_ms,
            "segment_bytes": self.segment_bytes,
            "compress": self.compress,
            "compress_level": self.compress_level,
            "session_fields": list(self.session_fields),
            "rules": len(self.rules),
            "metrics": self.metrics,
            "file_mode": f"{self.file_mode:04o}",
            "dir_mode": f"{self.dir_mode:04o}",
            "retention": self.retention_summary(),
            "redact": self.redact_summary(),
            "chain": self.chain,
            "sign_key": str(self.sign_key) if self.sign_key is not None else None,
            "sync": self.sync_db is not None,
            "curve": self.curve_summary(),
            "source": self.source,
        }

    def curve_summary(self) -> dict[str, str] | None:
        """``curve_secret`` / ``curve_server`` as text, or None when CURVE is off."""
        if self.curve_secret is None or self.curve_server is None:
            return None
        return {"secret": str(self.curve_secret), "server": str(self.curve_server)}


    def retention(self) -> Limits:
        """The ``[retention]`` limits (:class:`~convlog.core.retention.Limits`)."""
        return Limits(self.retention_max_age_s, self.retention_max_bytes)

    def retention_summary(self) -> dict[str, Any] | None:
        """``[retention]`` as JSON-friendly values, or None when no limit is set."""
        if not self.retention().active:
            return None
        return {
            "max_age_s": self.retention_max_age_s,
            "max_bytes": self.retention_max_bytes,
            "action": self.retention_action,
            "archive_dir": str(self.retention_archive_dir) if self.retention_archive_dir else None,
            "interval_s": self.retention_interval_s,
        }


def parse_age(value: Any) -> float:
    """An age limit: ``"90d"``, ``"12h"``, ``"1w 2d"``, ``"30m"`` (pytimeparse's syntax) or
    a number of seconds.

    Returns:
        seconds, > 0.

    Raises:
        ValueError: for anything else, zero or negative.
    """
    import pytimeparse

    seconds: float | None = None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number or (isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = pytimeparse.parse(value.strip())
    if seconds is None or seconds <= 0:
        raise ValueError(f"must be a positive age such as \"90d\", \"12h\" or \"2w\" (got {value!r})")
    return float(seconds)


def parse_size(value: Any) -> int:
    """A size limit: ``"50GiB"``, ``"500MB"``, ``"1.5 TiB"`` (bitmath's units: SI ``kB``,
    ``MB``, ``GB``... and IEC ``KiB``, ``MiB``, ``GiB``...) or a number of bytes.

    Returns:
        bytes, > 0.

    Raises:
        ValueError: for anything else, zero or negative.
    """
    import bitmath

    size: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and value.strip().isdigit():
        size = int(value.strip())
    elif isinstance(value, str):
        try:
            size = bitmath.parse_string(value.strip()).bytes
        except ValueError:
            size = None
    if size is None or size <= 0:
        raise ValueError(f"must be a positive size such as \"50GiB\" or \"500MB\" (got {value!r})")
    return int(size)


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def wrapped(value: Any) -> Any:
        return None if value in ("", None) else check(value)

    return wrapped


def _endpoint(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^(tcp|ipc|inproc|pgm|epgm|ws|wss)://.+", value):
        raise ValueError(f"not a ZeroMQ endpoint (transport://address): {value!r}")
    return value


def _str_list(item: Callable[[Any], str] | None = None) -> Callable[[Any], tuple[str, ...]]:
    def check(value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")] if value else []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of strings")
        return tuple(item(v) if item else v for v in value)

    return check


def _positive_int(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"must be a positive integer (got {value!r})")
    return value


def _zstd_level(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 22:
        raise ValueError(f"must be a zstd level, an integer from 1 to 22 (got {value!r})")
    return value


def _nice(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 19:
        raise ValueError(f"must be an integer from 0 to 19 (got {value!r})")
    return value


def _choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)} (got {value!r})")
        return value

    return check


def _bool(value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false (got {value!r})")
    return value


def _db_url(value: Any) -> str:
    if not isinstance(value, str) or (not re.match(r"^(postgresql|postgres)://", value) and "=" not in value):
        raise ValueError(f"not a PostgreSQL URL (postgresql://user@host/dbname): {value!r}")
    return value


def _optional_endpoint(value: Any) -> str | None:
    return None if value in ("", None) else _endpoint(value)


def parse_host_port(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:9464`` for IPv6), as for the metrics endpoint.

    Args:
        text: the address; HOST may be empty (``:9464``), meaning all interfaces.

    Returns:
        ``(host, port)``, host ``127.0.0.1`` when empty (loopback unless told
        otherwise: ``0.0.0.0:9464`` for every interface); port 0 lets the system pick one.

    Raises:
        ValueError: without a port, or with a port outside 0..65535.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"must be HOST:PORT, e.g. 127.0.0.1:9464 (got {text!r})")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "127.0.0.1", int(port)


#: Hosts that mean "every interface" when bound.
_WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::", "[::]", ""})


def wildcard_bind(address: str) -> bool:
    """Does binding ``address`` listen on every interface?

    Args:
        address: a ZeroMQ endpoint (``tcp://*:5557``, ``tcp://0.0.0.0:5557``,
            ``tcp://[::]:5557``) or a ``HOST:PORT`` as :func:`parse_host_port` takes it
            (an empty host is loopback there, so not a wildcard).

    Returns:
        True for a TCP wildcard (``ipc://``, ``inproc://`` and named hosts are not).
    """
    if "://" in address:
        transport, _, rest = address.partition("://")
        if transport not in ("tcp", "ws", "wss"):
            return False
        host = rest.rpartition(":")[0]
        return host in _WILDCARD_HOSTS
    host = address.rpartition(":")[0]
    return host != "" and host in _WILDCARD_HOSTS


def _metrics_address(value: Any) -> str | None:
    if value in ("", None):
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be HOST:PORT, e.g. 127.0.0.1:9464 (got {value!r})")
    parse_host_port(value)
    return value


def _path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty path")
    return Path(value)


def _topics(value: Any) -> tuple[str, ...]:
    topics = _str_list()(value)
    return topics or ("",)


def _non_empty(check: Callable[[Any], tuple[str, ...]]) -> Callable[[Any], tuple[str, ...]]:
    def wrapped(value: Any) -> tuple[str, ...]:
        result = check(value)
        if not result:
            raise ValueError("must not be empty")
        return result

    return wrapped


_RECORDER_KEYS: dict[str, Callable[[Any], Any]] = {
    "dir": _path,
    "sub": _non_empty(_str_list(_endpoint)),
    "topics": _topics,
    "pull": _optional_endpoint,
    "rcvhwm": _positive_int,
    "fsync": _choice(*FSYNC_POLICIES),
    "fsync_interval_ms": _positive_int,
    "segment_bytes": _positive_int,
    "compress": _choice("zstd", "none"),
    "compress_level": _zstd_level,
    "session_fields": _non_empty(_str_list()),
    "drain_timeout_ms": _positive_int,
    "state_interval_ms": _positive_int,
    "processing_nice": _nice,
    "held_bytes": _positive_int,
    "checkpoint_interval_s": _positive_int,
    "checkpoint_keep": _positive_int,
    "silence_threshold_s": _positive_int,
    "silence_unhealthy": _bool,
    "max_publishers": _positive_int,
    "metrics": _metrics_address,
    "file_mode": modes.parse_mode,
    "dir_mode": modes.parse_mode,
    "chain": _bool,
    "sign_key": _optional(_path),
    "curve_secret": _optional(_path),
    "curve_server": _optional(_path),
}
#: ``[sync]`` keys: ``db``, the PostgreSQL URL ``convlog sync`` writes this log into.
_SYNC_KEYS: dict[str, Callable[[Any], Any]] = {"db": _optional(_db_url)}
#: ``[retention]`` keys and the :class:`Config` field each sets.
_RETENTION_FIELDS = {
    "max_age": "retention_max_age_s",
    "max_bytes": "retention_max_bytes",
    "action": "retention_action",
    "archive_dir": "retention_archive_dir",
    "interval_s": "retention_interval_s",
}
_RETENTION_KEYS: dict[str, Callable[[Any], Any]] = {
    "max_age": _optional(parse_age),
    "max_bytes": _optional(parse_size),
    "action": _choice("delete", "archive"),
    "archive_dir": _optional(_path),
    "interval_s": _positive_int,
}
_ENRICH_KEYS: dict[str, Callable[[Any], Any]] = {
    "word_count": _bool,
    "large_message_bytes": _positive_int,
}
_REDACT_KEYS: dict[str, Callable[[Any], Any]] = {
    "enabled": _bool,
    "disable": _str_list(),
}
_REDACT_FIELDS = {"enabled": "redact", "disable": "redact_disable"}
_REDACT_RULE_KEYS = {"id", "regex", "keywords"}
_RULE_KEYS = {"keywords", "regex", "tag", "tags_field", "field", "value", "kinds"}


def _line_of(text: str, table: str, key: str, index: int | None = None) -> int | None:
    """Best-effort 1-based line of ``key`` inside ``[table]`` (or its ``index``-th
    ``[[table]]``) in TOML ``text``; None when it cannot be found."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[\[?\s*" + re.escape(table) + r"\s*\]\]?\s*(#.*)?$")
    any_header = re.compile(r"^\s*\[")
    key_re = re.compile(r"^\s*\"?" + re.escape(key) + r"\"?\s*=")
    seen = -1
    inside = table == ""
    for number, line in enumerate(lines, 1):
        if header.match(line):
            seen += 1
            inside = index is None or seen == index
            if inside and key == "":
                return number
            continue
        if any_header.match(line):
            inside = False
            continue
        if inside and key_re.match(line):
            return number
    return None


def _from_file(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "file", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "file", "not UTF-8 text") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise ConfigError(str(path), "syntax", str(exc), line) from None
    return raw, text


def _check_table(
    origin: str, text: str, table: str, raw: Any, schema: Mapping[str, Callable[[Any], Any]]
) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(origin, table, "must be a table", _line_of(text, table, ""))
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(
                origin, f"{table}.{key}", f"unknown key (known: {known})", _line_of(text, table, key)
            )
        try:
            out[key] = schema[key](value)
        except ValueError as exc:
            raise ConfigError(origin, f"{table}.{key}", str(exc), _line_of(text, table, key)) from None
    return out


def _rules(origin: str, text: str, raw: Any) -> tuple[Rule, ...]:
    if not isinstance(raw, list):
        raise ConfigError(origin, "enrich.rules", "must be an array of tables ([[enrich.rules]])")
    rules = []
    for index, item in enumerate(raw):
        key = f"enrich.rules[{index + 1}]"
        line = _line_of(text, "enrich.rules", "", index)
        if not isinstance(item, dict):
            raise ConfigError(origin, key, "must be a table", line)
        unknown = sorted(set(item) - _RULE_KEYS)
        if unknown:
            raise ConfigError(
                origin, f"{key}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_RULE_KEYS))})",
                _line_of(text, "enrich.rules", unknown[0], index) or line,
            )
        try:
            keywords = _str_list()(item.get("keywords", []))
            kinds = _str_list()(item.get("kinds", []))
            for name in ("regex", "tag", "tags_field", "field"):
                if name in item and not isinstance(item[name], str):
                    raise ValueError(f"'{name}' must be a string")
            rule = Rule(
                keywords=keywords,
                regex=item.get("regex"),
                tag=item.get("tag"),
                tags_field=item.get("tags_field", "tags"),
                set_field=item.get("field"),
                value=item.get("value"),
                kinds=kinds,
            )
            Enricher(rules=[rule])
        except ValueError as exc:
            reason = str(exc).removeprefix("rule 1: ")
            raise ConfigError(origin, key, reason, line) from None
        if rule.set_field is not None and "value" not in item:
            raise ConfigError(origin, key, "'field' needs a 'value'", line)
        rules.append(rule)
    return tuple(rules)


def _redact_rules(origin: str, text: str, raw: Any) -> tuple[RedactRule, ...]:
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise ConfigError(origin, "redact.rules", "must be an array of tables ([[redact.rules]])")
    rules = []
    for index, item in enumerate(raw):
        key = f"redact.rules[{index + 1}]"
        line = _line_of(text, "redact.rules", "regex", index)
        unknown = sorted(set(item) - _REDACT_RULE_KEYS)
        if unknown:
            raise ConfigError(origin, f"{key}.{unknown[0]}",
                              f"unknown key (known: {', '.join(sorted(_REDACT_RULE_KEYS))})",
                              _line_of(text, "redact.rules", unknown[0], index) or line)
        for name in ("id", "regex"):
            if not isinstance(item.get(name), str) or not item[name]:
                raise ConfigError(origin, f"{key}.{name}", "required, a non-empty string", line)
        try:
            rule = RedactRule(item["id"], item["regex"], _str_list()(item.get("keywords", [])))
            compile_rule(rule)
        except (ValueError, RedactError) as exc:
            raise ConfigError(origin, key, str(exc), line) from None
        rules.append(rule)
    return tuple(rules)


def _apply_redact(origin: str, text: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(origin, "redact", "must be a table", _line_of(text, "redact", ""))
    raw = dict(raw)
    values: dict[str, Any] = {}
    if "rules" in raw:
        values["redact_rules"] = _redact_rules(origin, text, raw.pop("rules"))
    checked = _check_table(origin, text, "redact", raw, _REDACT_KEYS)
    values.update({_REDACT_FIELDS[key]: value for key, value in checked.items()})
    try:
        Redactor(disable=values.get("redact_disable", ()), extra=values.get("redact_rules", ()))
    except RedactError as exc:
        raise ConfigError(origin, "redact", str(exc), _line_of(text, "redact", "disable")) from None
    return values


def _apply_file(config: Config, path: Path) -> Config:
    raw, text = _from_file(path)
    origin = str(path)
    unknown = sorted(set(raw) - {"recorder", "enrich", "retention", "redact", "sync"})
    if unknown:
        raise ConfigError(
            origin, unknown[0], "unknown table or key (known: recorder, enrich, retention, redact, sync)",
            _line_of(text, "", unknown[0]) or _line_of(text, unknown[0], ""),
        )
    values = _check_table(origin, text, "recorder", raw.get("recorder", {}), _RECORDER_KEYS)
    enrich_raw = dict(raw.get("enrich", {})) if isinstance(raw.get("enrich", {}), dict) else raw["enrich"]
    rules: tuple[Rule, ...] = ()
    defaults: dict[str, Any] = {}
    if isinstance(enrich_raw, dict):
        if "rules" in enrich_raw:
            rules = _rules(origin, text, enrich_raw.pop("rules"))
        if "defaults" in enrich_raw:
            defaults = enrich_raw.pop("defaults")
            if not isinstance(defaults, dict):
                raise ConfigError(origin, "enrich.defaults", "must be a table",
                                  _line_of(text, "enrich", "defaults"))
            try:
                Enricher(defaults=defaults)
            except ValueError as exc:
                raise ConfigError(origin, "enrich.defaults", str(exc),
                                  _line_of(text, "enrich.defaults", "")) from None
    values.update(_check_table(origin, text, "enrich", enrich_raw, _ENRICH_KEYS))
    retention = _check_table(origin, text, "retention", raw.get("retention", {}), _RETENTION_KEYS)
    values.update({_RETENTION_FIELDS[key]: value for key, value in retention.items()})
    _check_retention(origin, text, {**_retention_values(config), **values})
    if "redact" in raw:
        values.update(_apply_redact(origin, text, raw["redact"]))
    sync = _check_table(origin, text, "sync", raw.get("sync", {}), _SYNC_KEYS)
    if "db" in sync:
        values["sync_db"] = sync["db"]
    if rules:
        values["rules"] = rules
    if defaults:
        values["defaults"] = defaults
    return replace(config, source=origin, **values)


def _retention_values(config: Config) -> dict[str, Any]:
    return {name: getattr(config, name) for name in _RETENTION_FIELDS.values()}


def _check_retention(origin: str, text: str | None, values: Mapping[str, Any]) -> None:
    """``action = "archive"`` needs an ``archive_dir``."""
    if values["retention_action"] == "archive" and values["retention_archive_dir"] is None:
        line = _line_of(text, "retention", "action") if text else None
        raise ConfigError(origin, "retention.archive_dir", 'action = "archive" needs an archive_dir', line)


def _apply_env(config: Config, env: Mapping[str, str]) -> Config:
    values: dict[str, Any] = {}
    for key, check in _RETENTION_KEYS.items():
        name = f"CONVLOG_RETENTION_{key.upper()}"
        if name in env:
            try:
                values[_RETENTION_FIELDS[key]] = check(env[name])
            except ValueError as exc:
                raise ConfigError("environment", name, str(exc)) from None
    schema = {**_RECORDER_KEYS, **_ENRICH_KEYS}
    for key, check in schema.items():
        name = f"CONVLOG_{key.upper()}"
        if name in env:
            try:
                values[key] = check(env[name])
            except ValueError as exc:
                raise ConfigError("environment", name, str(exc)) from None
    if env.get("CONVLOG_DB"):  # convlog sync's database: [sync] db
        try:
            values["sync_db"] = _db_url(env["CONVLOG_DB"])
        except ValueError as exc:
            raise ConfigError("environment", "CONVLOG_DB", str(exc)) from None
    return replace(config, **values) if values else config


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the recorder configuration.

    Args:
        path: a TOML file; when None, ``CONVLOG_CONFIG`` from ``env`` if set.
        env: the environment (default ``os.environ``); ``CONVLOG_<KEY>`` overrides the
            file for every ``[recorder]`` and ``[enrich]`` scalar key (lists as
            comma-separated text).
        overrides: values from command-line flags, by key; None values are ignored.
            They win over everything else.

    Returns:
        a validated :class:`Config`.

    Raises:
        ConfigError: for any invalid value, naming file, line, key and reason.
    """
    env = os.environ if env is None else env
    config = Config()
    if path is None and env.get("CONVLOG_CONFIG"):
        path = env["CONVLOG_CONFIG"]
    if path is not None:
        config = _apply_file(config, Path(path))
    config = _apply_env(config, env)
    _check_retention("environment", None, _retention_values(config))
    if overrides:
        schema = {**_RECORDER_KEYS, **_ENRICH_KEYS, "redact": _bool}
        names = {f.name for f in fields(Config)}
        values = {}
        for key, value in overrides.items():
            if value is None or (isinstance(value, tuple | list) and not value):
                continue
            if key not in names:
                raise ConfigError("flag", key, "unknown setting")
            try:
                values[key] = schema[key](list(value) if isinstance(value, tuple) else value)
            except ValueError as exc:
                raise ConfigError("flag", f"--{key.replace('_', '-')}", str(exc)) from None
        config = replace(config, **values)
    try:
        modes.check_modes(config.file_mode, config.dir_mode)
    except ValueError as exc:
        origin = config.source if config.source != "defaults" else "environment"
        raise ConfigError(origin, "file_mode", str(exc)) from None
    _check_curve(config, env, overrides or {})
    _check_sign_key(config, env, overrides or {})
    return config


def _origin(config: Config, env: Mapping[str, str], overrides: Mapping[str, Any], key: str) -> tuple[str, str]:
    """Where the value of ``[recorder] key`` came from, for a :class:`ConfigError`:
    ``(origin, key as written there)``."""
    if overrides.get(key) is not None:
        return "flag", f"--{key.replace('_', '-')}"
    if f"CONVLOG_{key.upper()}" in env:
        return "environment", f"CONVLOG_{key.upper()}"
    return (config.source if config.source != "defaults" else "environment"), f"recorder.{key}"


def _key_error(config: Config, env: Mapping[str, str], overrides: Mapping[str, Any], name: str,
               reason: str) -> ConfigError:
    """A :class:`ConfigError` for a key file named by ``[recorder] name`` (with the file's
    line when it came from the config file)."""
    where, key = _origin(config, env, overrides, name)
    line = None
    if key.startswith("recorder."):
        try:
            line = _line_of(Path(where).read_text(encoding="utf-8"), "recorder", name)
        except (OSError, UnicodeDecodeError):
            line = None
    return ConfigError(where, key, reason, line)


def _check_curve(config: Config, env: Mapping[str, str], overrides: Mapping[str, Any]) -> None:
    """``curve_secret`` and ``curve_server`` come together, and both certificates load
    (:func:`convlog.bus.curve.ClientKeys.load`), so a bad one stops the recorder at start."""
    from convlog.bus.curve import ClientKeys, CurveError

    secret, server = config.curve_secret, config.curve_server
    if secret is None and server is None:
        return
    if secret is None or server is None:
        given, missing = ("curve_secret", "curve_server") if server is None else ("curve_server", "curve_secret")
        where, key = _origin(config, env, overrides, given)
        raise ConfigError(where, key, f"CURVE needs {missing} too (both or neither)")
    try:
        ClientKeys.load(secret, server)
    except CurveError as exc:
        name = "curve_secret" if exc.path == secret else "curve_server"
        raise _key_error(config, env, overrides, name, str(exc)) from None


def _check_sign_key(config: Config, env: Mapping[str, str], overrides: Mapping[str, Any]) -> None:
    """``sign_key`` loads as an Ed25519 private key readable by its owner only
    (:func:`convlog.store.signing.load_private_key`), so a bad one stops the recorder at
    start."""
    if config.sign_key is None:
        return
    from convlog.store.signing import SigningKeyError, load_private_key

    try:
        load_private_key(config.sign_key)
    except SigningKeyError as exc:
        raise _key_error(config, env, overrides, "sign_key", str(exc)) from None
