"""Secrets out of the bytes before they are stored. Pure code, no I/O.

A :class:`Redactor` holds rules (an id, a regex, keywords). It replaces what a rule
matches (its first group when the regex has one, else the whole match) by
``[REDACTED:<rule id>:<first 8 hex of the secret's sha256>]``, so a known key can still
be recognised in the log (``printf %s "$KEY" | sha256sum | cut -c1-8``) without the log
holding it. The marker has no character that JSON escapes, so a secret inside a JSON
string leaves a valid JSON string.

Like gitleaks, a rule's regex runs only on data holding one of its keywords (compared
lowercase): most messages hold none. To find out without a lowercase copy of every
message, each built-in rule also names *triggers*, the keyword as a match writes it
(``AKIA``, ``ghp_``; the few case-insensitive rules list the usual cases, ``Bearer``,
``bearer``, ``BEARER``), and one Aho-Corasick search (``ahocorasick-rs``) looks for all
of them at once; only when one is found do the lowercase keyword tests and the
regexes run. User rules have keywords only (compared lowercase, as gitleaks does).

Built-in rules (:data:`BUILTIN_RULES`) are high-confidence credential formats. Their ids,
regexes and keywords come from gitleaks' default rule file, ``config/gitleaks.toml``
(https://github.com/gitleaks/gitleaks, MIT licence, Copyright (c) 2019 Zachary Rice),
translated from Go RE2 to Python ``re`` on bytes (``\\w``, ``\\s`` and ``\\b`` are ASCII
there, as in RE2; a flag in the middle of a pattern became a scoped ``(?i:...)``).
Differences, each on purpose:

* ``jwt`` is prefiltered on ``eyj`` (gitleaks: ``ey``, which ``key`` and ``they`` hold);
  a JWT's header is base64 of ``{"`` and so starts ``eyJ``;
* ``aws-access-token`` keeps gitleaks' allowlist (a key ending ``EXAMPLE``, as in AWS's
  documentation, is left alone);
* the triggers of the case-insensitive rules are the lower, upper and capitalised
  forms: a secret after ``bEaReR``, ``xApp-`` or ``-----bEGIN`` is not looked for;
* ``authorization-bearer`` is convlog's: the value after ``Authorization`` and
  ``Bearer`` (gitleaks has it only inside a curl command, ``curl-auth-header``).

Entropy thresholds are not applied: every built-in format has a fixed prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

import orjson
from ahocorasick_rs import MATCHKIND_LEFTMOST_FIRST, MATCHKIND_STANDARD, BytesAhoCorasick

#: What ends a secret in gitleaks' rules: a quote, space, ``;``, an escaped newline or the end.
_END = r"""(?:[\x60'"\s;]|\\[nr]|$)"""


@dataclass(frozen=True)
class RedactRule:
    """One redaction rule.

    Args:
        id: the rule id, in the marker and in ``meta.redactions``; letters, digits,
            ``-``, ``_``, ``.``.
        regex: a Python regular expression, applied to the bytes (ASCII classes); when
            it has groups, group 1 is the secret, else the whole match.
        keywords: the regex runs only on data holding one of these (lowercase
            compared); empty: on all data.
        allow: a regex; a secret it matches (``re.search``) is left alone, or None.
        triggers: substrings, compared as written (case and all), one of which every
            match holds; when given, they replace the lowercase keyword search as the
            first, cheap test (no lowercase copy of the data). Empty: keywords only.
    """

    id: str
    regex: str
    keywords: tuple[str, ...] = ()
    allow: str | None = None
    triggers: tuple[str, ...] = ()


def _r(id: str, regex: str, *keywords: str, allow: str | None = None, triggers: tuple[str, ...] = ()) -> RedactRule:
    # A case-sensitive regex starts with its keyword as written: that is the trigger.
    return RedactRule(id, regex, tuple(keywords), allow, triggers or tuple(keywords))


#: The built-in rules (see the module doc for their source), in the order they are applied.
BUILTIN_RULES: tuple[RedactRule, ...] = (
    _r("private-key",
       r"(?i)-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----[\s\S-]{64,}?KEY(?: BLOCK)?-----",
       "-----begin", triggers=("-----BEGIN", "-----begin", "-----Begin")),
    _r("anthropic-admin-api-key", r"\b(sk-ant-admin01-[a-zA-Z0-9_\-]{93}AA)" + _END, "sk-ant-admin01"),
    _r("anthropic-api-key", r"\b(sk-ant-api03-[a-zA-Z0-9_\-]{93}AA)" + _END, "sk-ant-api03"),
    _r("openai-api-key",
       r"\b(sk-(?:proj|svcacct|admin)-(?:[A-Za-z0-9_-]{74}|[A-Za-z0-9_-]{58})T3BlbkFJ"
       r"(?:[A-Za-z0-9_-]{74}|[A-Za-z0-9_-]{58})\b|sk-[a-zA-Z0-9]{20}T3BlbkFJ[a-zA-Z0-9]{20})" + _END,
       "t3blbkfj", triggers=("T3BlbkFJ",)),
    _r("aws-access-token", r"\b((?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b",
       "a3t", "akia", "asia", "abia", "acca", allow=r".+EXAMPLE$",
       triggers=("A3T", "AKIA", "ASIA", "ABIA", "ACCA")),
    _r("github-app-token", r"(?:ghu|ghs)_[0-9a-zA-Z]{36}", "ghu_", "ghs_"),
    _r("github-fine-grained-pat", r"github_pat_\w{82}", "github_pat_"),
    _r("github-oauth", r"gho_[0-9a-zA-Z]{36}", "gho_"),
    _r("github-pat", r"ghp_[0-9a-zA-Z]{36}", "ghp_"),
    _r("github-refresh-token", r"ghr_[0-9a-zA-Z]{36}", "ghr_"),
    _r("gitlab-pat-routable", r"\bglpat-[0-9a-zA-Z_-]{27,300}\.[0-9a-z]{2}[0-9a-z]{7}\b", "glpat-"),
    _r("gitlab-pat", r"glpat-[\w-]{20}", "glpat-"),
    _r("gitlab-ptt", r"glptt-[0-9a-f]{40}", "glptt-"),
    _r("gitlab-rrt", r"GR1348941[\w-]{20}", "gr1348941", triggers=("GR1348941",)),
    _r("gitlab-runner-authentication-token-routable",
       r"\bglrt-t\d_[0-9a-zA-Z_\-]{27,300}\.[0-9a-z]{2}[0-9a-z]{7}\b", "glrt-"),
    _r("gitlab-runner-authentication-token", r"glrt-[0-9a-zA-Z_\-]{20}", "glrt-"),
    _r("gitlab-deploy-token", r"gldt-[0-9a-zA-Z_\-]{20}", "gldt-"),
    _r("slack-app-token", r"(?i)xapp-\d-[A-Z0-9]+-\d+-[a-z0-9]+", "xapp", triggers=("xapp-", "XAPP-", "Xapp-")),
    _r("slack-bot-token", r"xoxb-[0-9]{10,13}-[0-9]{10,13}[a-zA-Z0-9-]*", "xoxb", triggers=("xoxb-",)),
    _r("slack-config-access-token", r"(?i)xoxe.xox[bp]-\d-[A-Z0-9]{163,166}", "xoxe.xoxb-", "xoxe.xoxp-",
       triggers=("xoxe", "XOXE", "Xoxe")),
    _r("slack-config-refresh-token", r"(?i)xoxe-\d-[A-Z0-9]{146}", "xoxe-", triggers=("xoxe-", "XOXE-", "Xoxe-")),
    _r("slack-legacy-bot-token", r"xoxb-[0-9]{8,14}-[a-zA-Z0-9]{18,26}", "xoxb", triggers=("xoxb-",)),
    _r("slack-legacy-token", r"xox[os]-\d+-\d+-\d+-[a-fA-F\d]+", "xoxo", "xoxs", triggers=("xoxo-", "xoxs-")),
    _r("slack-legacy-workspace-token", r"xox[ar]-(?:\d-)?[0-9a-zA-Z]{8,48}", "xoxa", "xoxr",
       triggers=("xoxa-", "xoxr-")),
    _r("slack-user-token", r"xox[pe](?:-[0-9]{10,13}){3}-[a-zA-Z0-9-]{28,34}", "xoxp-", "xoxe-"),
    _r("slack-webhook-url", r"(?:https?://)?hooks.slack.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{43,56}",
       "hooks.slack.com", triggers=("hooks",)),
    _r("gcp-api-key", r"\b(AIza[\w-]{35})" + _END, "aiza", triggers=("AIza",)),
    _r("jwt", r"\b(ey[a-zA-Z0-9]{17,}\.ey[a-zA-Z0-9\/\\_-]{17,}\.(?:[a-zA-Z0-9\/\\_-]{10,}={0,2})?)" + _END,
       "eyj", triggers=("eyJ",)),
    _r("authorization-bearer", r"(?i)authorization\W{0,8}bearer[ \t]+([\w=~@.+/-]{8,})", "bearer",
       triggers=("Bearer", "bearer", "BEARER")),
)

_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class RedactError(ValueError):
    """A rule that cannot be used (its id or regex), with the reason."""


@dataclass(frozen=True)
class _Compiled:
    id: bytes
    name: str
    regex: re.Pattern[bytes]
    keywords: tuple[bytes, ...]
    allow: re.Pattern[bytes] | None
    group: int
    triggers: tuple[bytes, ...]


def compile_rule(rule: RedactRule) -> _Compiled:
    """Check and compile one rule.

    Raises:
        RedactError: the id is not 1-64 of ``[A-Za-z0-9_.-]``, a regex does not compile,
            or the regex matches the empty string (it would mark every position).
    """
    if not isinstance(rule.id, str) or not _ID.fullmatch(rule.id):
        raise RedactError(f"rule id {rule.id!r}: use 1-64 letters, digits, '-', '_' or '.'")
    try:
        regex = re.compile(rule.regex.encode("utf-8"))
        allow = re.compile(rule.allow.encode("utf-8")) if rule.allow else None
    except (re.error, UnicodeEncodeError) as exc:
        raise RedactError(f"rule {rule.id}: the regex does not compile: {exc}") from None
    if regex.fullmatch(b"") is not None or regex.search(b"") is not None:
        raise RedactError(f"rule {rule.id}: the regex matches the empty string")
    keywords = tuple(k.lower().encode("utf-8") for k in rule.keywords if k)
    triggers = tuple(t.encode("utf-8") for t in rule.triggers if t) if keywords else ()
    return _Compiled(rule.id.encode("ascii"), rule.id, regex, keywords, allow, 1 if regex.groups else 0, triggers)


def marker(rule_id: str, secret: bytes) -> bytes:
    """The text that replaces ``secret``: ``[REDACTED:<rule_id>:<8 hex of sha256(secret)>]`` (bytes)."""
    return b"[REDACTED:" + rule_id.encode("ascii") + b":" + sha256(secret).hexdigest()[:8].encode("ascii") + b"]"


class Redactor:
    """Applies redaction rules to bytes.

    Args:
        rules: the built-in rules to start from (default :data:`BUILTIN_RULES`).
        disable: rule ids to leave out (unknown ids raise).
        extra: user rules, applied after the built-in ones; an id equal to a built-in
            one replaces it.

    Raises:
        RedactError: an unknown id in ``disable``, a bad rule (see :func:`compile_rule`)
            or two user rules with one id.
    """

    __slots__ = ("_by_keyword", "_by_trigger", "_exact", "_exact_all", "_gate", "_gate_all", "_keywords", "_rules",
                 "_triggers", "_unconditional", "ids")

    def __init__(self, rules: Iterable[RedactRule] = BUILTIN_RULES, disable: Iterable[str] = (),
                 extra: Iterable[RedactRule] = ()) -> None:
        base = list(rules)
        extra = list(extra)
        known = {r.id for r in base} | {r.id for r in extra}
        off = set(disable)
        unknown = sorted(off - known)
        if unknown:
            raise RedactError(f"unknown rule id to disable: {', '.join(unknown)}")
        seen: set[str] = set()
        for rule in extra:
            if rule.id in seen:
                raise RedactError(f"two rules with the id {rule.id}")
            seen.add(rule.id)
        chosen = [r for r in base if r.id not in seen] + extra
        self._rules = tuple(compile_rule(r) for r in chosen if r.id not in off)
        #: the ids of the rules in use, in order.
        self.ids: tuple[str, ...] = tuple(r.name for r in self._rules)
        # One pass for every trigger (as written) and one for the lowercase keywords of the
        # rules without triggers: when neither finds anything, no rule can match.
        triggers = sorted({t for r in self._rules for t in r.triggers})
        keywords = sorted({k for r in self._rules if not r.triggers for k in r.keywords})
        self._triggers, self._keywords = triggers, keywords
        self._exact = BytesAhoCorasick(triggers, matchkind=MATCHKIND_LEFTMOST_FIRST) if triggers else None
        self._gate = BytesAhoCorasick(keywords, matchkind=MATCHKIND_LEFTMOST_FIRST) if keywords else None
        # Once the gate found something (rarely), these find every trigger or keyword
        # present, overlapping ones included, to pick the rules to run.
        self._exact_all = BytesAhoCorasick(triggers, matchkind=MATCHKIND_STANDARD) if triggers else None
        self._gate_all = BytesAhoCorasick(keywords, matchkind=MATCHKIND_STANDARD) if keywords else None
        self._by_trigger = [{i for i, r in enumerate(self._rules) if t in r.triggers} for t in triggers]
        self._by_keyword = [{i for i, r in enumerate(self._rules) if not r.triggers and k in r.keywords}
                            for k in keywords]
        self._unconditional = any(not r.keywords for r in self._rules)

    def may_hold(self, data: bytes) -> bool:
        """False when no rule can match ``data`` (it holds none of the keywords); one pass."""
        if not self._rules or self._unconditional:
            return bool(self._rules)
        if self._exact is not None and self._exact.find_matches_as_indexes(data):
            return True
        return self._gate is not None and bool(self._gate.find_matches_as_indexes(data.lower()))

    def redact(self, data: bytes, counts: dict[str, int] | None = None) -> bytes:
        """Replace every secret in ``data`` by its marker.

        Args:
            data: any bytes.
            counts: a dict to add ``{rule id: secrets replaced}`` to, or None.

        Returns:
            ``data`` itself (the same object) when no rule matched, else the new bytes.
            Never raises.
        """
        if not self.may_hold(data):
            return data
        candidates = self._candidates(data)
        lowered: bytes | None = None
        out = data
        for index, rule in enumerate(self._rules):
            if index not in candidates:
                continue
            if rule.keywords:  # gitleaks' test: one of the keywords, lowercase
                if lowered is None:
                    lowered = out.lower()
                if not any(keyword in lowered for keyword in rule.keywords):
                    continue
            replaced = _apply(rule, out, counts)
            if replaced is not out:
                out = replaced
                lowered = None
        return out

    def _candidates(self, data: bytes) -> set[int]:
        """Indexes of the rules that may match ``data``: those with a trigger in it,
        those without triggers with a keyword in its lowercase form, those with neither."""
        found = {i for i, r in enumerate(self._rules) if not r.keywords}
        if self._exact_all is not None:
            for pattern, _, _ in self._exact_all.find_matches_as_indexes(data, overlapping=True):
                found |= self._by_trigger[pattern]
        if self._gate_all is not None:
            for pattern, _, _ in self._gate_all.find_matches_as_indexes(data.lower(), overlapping=True):
                found |= self._by_keyword[pattern]
        return found

    def redact_json(self, payload: bytes, counts: dict[str, int] | None = None) -> bytes:
        """:meth:`redact` for a JSON document: the result is valid JSON too.

        The bytes are redacted in place (key order, numbers and spacing stay); in the rare
        case that leaves invalid JSON (a match that crossed a string's end or an escape),
        each string of the parsed document is redacted instead and the document is
        written again with orjson.

        Args:
            payload: JSON (as :func:`orjson.loads` accepts); other bytes are redacted as
                by :meth:`redact`.
            counts: as for :meth:`redact`.

        Returns:
            ``payload`` itself when nothing matched, else valid JSON bytes (except for a
            document nested too deep to walk, given back as :meth:`redact` left it).
            Never raises.
        """
        local: dict[str, int] = {}
        out = self.redact(payload, local)
        if out is payload:
            return payload
        try:
            orjson.loads(out)
        except orjson.JSONDecodeError:
            try:
                value = orjson.loads(payload)
            except orjson.JSONDecodeError:  # not JSON to begin with: the bytes as redacted
                value = None
            else:
                walked: dict[str, int] = {}
                try:
                    out = orjson.dumps(self._walk(value, walked))
                    local = walked
                except RecursionError:  # nested too deep to walk: the bytes as redacted (not JSON)
                    pass
        if counts is not None:
            for key, n in local.items():
                counts[key] = counts.get(key, 0) + n
        return out

    def _walk(self, value: Any, counts: dict[str, int]) -> Any:
        if isinstance(value, str):
            raw = value.encode("utf-8", "surrogatepass")
            red = self.redact(raw, counts)
            return value if red is raw else red.decode("utf-8", "surrogatepass")
        if isinstance(value, list):
            return [self._walk(v, counts) for v in value]
        if isinstance(value, dict):
            return {self._walk(k, counts): self._walk(v, counts) for k, v in value.items()}
        return value


def _apply(rule: _Compiled, data: bytes, counts: dict[str, int] | None) -> bytes:
    hits = 0
    group = rule.group

    def replace(m: re.Match[bytes]) -> bytes:
        nonlocal hits
        whole = m.group(0)
        if group and m.group(group) is None:
            return whole
        secret = m.group(group)
        if rule.allow is not None and rule.allow.search(secret):
            return whole
        hits += 1
        start, end = m.start(group) - m.start(0), m.end(group) - m.start(0)
        return whole[:start] + marker(rule.name, secret) + whole[end:]

    out = rule.regex.sub(replace, data)
    if not hits:
        return data
    if counts is not None:
        counts[rule.name] = counts.get(rule.name, 0) + hits
    return out


def merge(counts: Mapping[str, int], into: dict[str, int]) -> None:
    """Add ``counts`` into ``into`` (rule id → count)."""
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n
