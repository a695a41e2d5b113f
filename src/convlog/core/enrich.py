"""Enrichment: the ``meta`` object added to each record. Pure code, no I/O.

Built-in fields (always): ``bytes`` (payload size), ``sha256`` (hex digest of the
payload bytes), ``chars`` (characters of the payload when it is UTF-8) and the identity
fields found by :mod:`convlog.core.wire` (``shape``, ``message_id``, ``sender``, ``role``, …).
``oversize: true`` marks payloads larger than the configured limit; they are recorded
whole, but rules are not run on them. ``words`` (a ``str.split`` word count of the
message text) only when enabled, since it costs more than the rest of the hot path.

Configured rules (TOML ``[[rules]]``, see :class:`Rule`) add a tag to a list field
(default ``tags``) or set a field, when a keyword or a regular expression matches the
message text (or, when decoding found no text, the payload text). Enrichment only adds
to ``meta``; it never alters ``data``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from convlog.core.wire import Decoded

#: meta keys the recorder owns; a rule may not write them.
RESERVED_META: frozenset[str] = frozenset(
    {
        "bytes",
        "chars",
        "sha256",
        "words",
        "oversize",
        "shape",
        "message_id",
        "sender",
        "role",
        "recipient",
        "bus_type",
        "event_type",
        "encoding",
        "topic_encoding",
        "frames",
        "purged",
    }
)


@dataclass(frozen=True, slots=True)
class Rule:
    """One enrichment rule.

    Attributes:
        keywords: match when any of these occurs in the text (case-insensitive).
        regex: match when this pattern (Python ``re`` syntax) is found in the text.
        tag: on a match, append this tag to the list ``meta[tags_field]``.
        tags_field: the list field for ``tag`` (default ``tags``).
        set_field: on a match, set ``meta[set_field] = value``; the first matching rule
            for a field wins, so rules read like a ``case`` statement.
        value: the value for ``set_field``.
        kinds: restrict the rule to these record kinds (empty: all).

    At most one of ``keywords``/``regex`` (a rule with neither always matches) and at
    least one of ``tag``/``set_field``. ``value`` and ``tag`` may name fields set
    earlier as ``{field}``, e.g. ``tag = "@Chain-{chain_type}"``.
    """

    keywords: tuple[str, ...] = ()
    regex: str | None = None
    tag: str | None = None
    tags_field: str = "tags"
    set_field: str | None = None
    value: Any = None
    kinds: tuple[str, ...] = ()


@dataclass(slots=True)
class _Compiled:
    keywords: tuple[str, ...]
    pattern: re.Pattern[str] | None
    rule: Rule


@dataclass(slots=True)
class Enricher:
    """Computes ``meta`` for decoded messages with a fixed, pre-compiled rule set.

    Args:
        rules: the rules, in order.
        defaults: fields set on every message-like record before rules run
            (rules' ``set_field`` override them), e.g. ``{"ace_tier": "E"}``.
        large_message_bytes: payloads above this size (bytes) are flagged
            ``oversize`` and skip rules and word counts.
        word_count: add ``words`` (count of whitespace-separated words in the text).

    Raises:
        ValueError: at construction, for an invalid rule (bad regex, reserved field,
            no condition or no action).
    """

    rules: Iterable[Rule] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    large_message_bytes: int = 8 * 1024 * 1024
    word_count: bool = False
    _compiled: list[_Compiled] = field(init=False, default_factory=list)
    _extra: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.rules = tuple(self.rules)
        for key in self.defaults:
            if key in RESERVED_META:
                raise ValueError(f"default field {key!r} is reserved by the recorder")
        for index, rule in enumerate(self.rules):
            self._compiled.append(_compile(rule, index))
        self._extra = bool(self.word_count or self._compiled or self.defaults)

    def meta(self, decoded: Decoded) -> dict[str, Any]:
        """Return the ``meta`` object for one decoded message.

        Args:
            decoded: the output of :func:`convlog.core.wire.decode`.

        Returns:
            ``decoded.meta`` completed by :meth:`complete`.
        """
        return self.complete(decoded.meta, decoded.payload, decoded.kind, decoded.text)

    def complete(self, meta: dict[str, Any], payload: bytes, kind: str, text: str | None) -> dict[str, Any]:
        """Add sizes, the hash and rule results to ``meta`` (the recorder's hot path).

        Args:
            meta: identity fields from decoding (``encoding`` set for non-JSON payloads).
            payload: the payload bytes as received.
            kind: the record kind.
            text: the message text found by decoding, or None.

        Returns:
            ``meta``, completed in place.
        """
        size = len(payload)
        meta["bytes"] = size
        encoding = meta.get("encoding")
        if encoding is None:  # JSON, hence valid UTF-8
            meta["chars"] = size if payload.isascii() else len(payload.decode("utf-8"))
        elif encoding == "text":
            meta["chars"] = len(text or "")
        meta["sha256"] = sha256(payload).hexdigest()
        if size > self.large_message_bytes:
            meta["oversize"] = True
        elif self._extra:
            if self.word_count and text is not None:
                meta["words"] = len(text.split())
            if self._compiled or self.defaults:
                self._apply_rules(kind, payload, text, meta)
        return meta

    def _apply_rules(self, kind: str, payload: bytes, text: str | None, meta: dict[str, Any]) -> None:
        if kind not in ("message", "message.delta", "raw", "unknown"):
            return
        if text is None:
            text = payload.decode("utf-8", "replace")
        lowered = text.lower()
        for key, value in self.defaults.items():
            meta.setdefault(key, value)
        fields_set: set[str] = set()
        for compiled in self._compiled:
            rule = compiled.rule
            if rule.kinds and kind not in rule.kinds:
                continue
            wants_field = rule.set_field is not None and rule.set_field not in fields_set
            if not wants_field and rule.tag is None:
                continue
            if compiled.pattern is not None:
                if compiled.pattern.search(text) is None:
                    continue
            elif compiled.keywords and not any(k in lowered for k in compiled.keywords):
                continue
            if wants_field:
                value = rule.value
                meta[rule.set_field] = _template(value, meta) if isinstance(value, str) else value
                fields_set.add(rule.set_field)
            if rule.tag is not None:
                tag = _template(rule.tag, meta)
                tags = meta.setdefault(rule.tags_field, [])
                if tag not in tags:
                    tags.append(tag)


def _template(value: str, meta: dict[str, Any]) -> str:
    """Fill ``{field}`` references from meta (``@Chain-{chain_type}``); unknown stay."""
    if "{" not in value:
        return value
    try:
        return value.format_map(_Missing(meta))
    except (ValueError, IndexError):
        return value


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _compile(rule: Rule, index: int) -> _Compiled:
    where = f"rule {index + 1}"
    if rule.keywords and rule.regex is not None:
        raise ValueError(f"{where}: give 'keywords' or 'regex', not both")
    if rule.tag is None and rule.set_field is None:
        raise ValueError(f"{where}: give 'tag' or 'field' (what to add on a match)")
    for name in (rule.set_field, rule.tags_field):
        if name is not None and name in RESERVED_META:
            raise ValueError(f"{where}: field {name!r} is reserved by the recorder")
    if rule.set_field is not None and rule.set_field == rule.tags_field and rule.tag is not None:
        raise ValueError(f"{where}: 'field' and 'tags_field' must differ")
    pattern = None
    if rule.regex is not None:
        try:
            pattern = re.compile(rule.regex)
        except re.error as exc:
            raise ValueError(f"{where}: invalid regex {rule.regex!r}: {exc}") from None
    return _Compiled(tuple(k.lower() for k in rule.keywords), pattern, rule)
