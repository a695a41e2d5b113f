"""The redaction rules (convlog.core.redact) and their use in Ingest.

Statistics: ``pytest tests/core/test_redact.py --hypothesis-show-statistics`` shows how
often the strategies put a secret, a keyword without a secret, a secret across a JSON
escape, or nothing of interest in the data.
"""

from __future__ import annotations

import re
from hashlib import sha256

import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from convlog.core.ingest import Ingest
from convlog.core.redact import BUILTIN_RULES, RedactError, Redactor, RedactRule, marker
from secret_samples import NEAR_MISSES, SAMPLES, message_text

REDACTOR = Redactor()
MARKER = re.compile(rb"\[REDACTED:[A-Za-z0-9_.-]+:[0-9a-f]{8}\]")
KEYWORDS = sorted({k for r in BUILTIN_RULES for k in r.keywords})


def test_every_builtin_rule_has_a_sample() -> None:
    assert set(SAMPLES) == {r.id for r in BUILTIN_RULES}


@pytest.mark.parametrize("rule", sorted(SAMPLES))
def test_rule_finds_its_sample_and_only_its_rule(rule: str) -> None:
    text = message_text(rule).encode()
    counts: dict[str, int] = {}
    out = REDACTOR.redact(text, counts)
    assert counts == {rule: 1}
    assert SAMPLES[rule].encode() not in out
    assert marker(rule, SAMPLES[rule].encode()) in out
    # The words around the secret are kept.
    assert out.startswith(text[: text.index(SAMPLES[rule].encode())])


@pytest.mark.parametrize("rule", sorted(SAMPLES))
def test_rule_in_a_json_string_keeps_the_json_valid(rule: str) -> None:
    payload = orjson.dumps({"type": "message", "text": message_text(rule), "n": 12345678901234567890})
    counts: dict[str, int] = {}
    out = REDACTOR.redact_json(payload, counts)
    assert counts == {rule: 1}
    value = orjson.loads(out)
    assert SAMPLES[rule] not in value["text"]
    assert b"12345678901234567890" in out  # spliced, not written again


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_are_left_alone(text: str) -> None:
    data = text.encode()
    assert REDACTOR.redact(data) is data


def test_marker_names_rule_and_digest() -> None:
    secret = SAMPLES["github-pat"].encode()
    assert marker("github-pat", secret) == b"[REDACTED:github-pat:" + sha256(secret).hexdigest()[:8].encode() + b"]"


def test_disable_and_user_rules() -> None:
    red = Redactor(disable=["github-pat"], extra=[RedactRule("internal-token", r"itk_[A-Za-z0-9]{32}", ("itk_",))])
    assert "github-pat" not in red.ids and red.ids[-1] == "internal-token"
    data = f"{SAMPLES['github-pat']} itk_{'x' * 32}".encode()
    counts: dict[str, int] = {}
    out = red.redact(data, counts)
    assert counts == {"internal-token": 1}
    assert SAMPLES["github-pat"].encode() in out


def test_user_rule_without_keywords_runs_on_everything() -> None:
    red = Redactor(rules=(), extra=[RedactRule("pin", r"PIN (\d{4})")])
    assert red.redact(b"my PIN 1234.") == b"my PIN " + marker("pin", b"1234") + b"."


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"disable": ["no-such-rule"]}, "unknown rule id"),
    ({"extra": [RedactRule("bad id!", "x")]}, "rule id"),
    ({"extra": [RedactRule("r", "(")]}, "does not compile"),
    ({"extra": [RedactRule("r", "a*")]}, "empty string"),
    ({"extra": [RedactRule("r", "a"), RedactRule("r", "b")]}, "two rules"),
])
def test_bad_configuration_is_refused(kwargs: dict, reason: str) -> None:
    with pytest.raises(RedactError, match=reason):
        Redactor(**kwargs)


def test_json_fallback_when_a_match_crosses_an_escape() -> None:
    # A user rule that eats a backslash of an escape: the bytes would not be JSON, so
    # each string is redacted and the document written again.
    red = Redactor(rules=(), extra=[RedactRule("tail", r"zz[a-z\\]+")])
    payload = b'{"a":"zzabc\\\\nq","b":[1,2]}'
    counts: dict[str, int] = {}
    out = red.redact_json(payload, counts)
    assert counts == {"tail": 1}
    value = orjson.loads(out)
    assert value["b"] == [1, 2] and value["a"].startswith("[REDACTED:tail:")


# --- properties -----------------------------------------------------------------------

_secret = st.sampled_from(sorted(SAMPLES)).map(message_text)
_keyword_only = st.sampled_from(KEYWORDS).map(lambda k: f"note: {k} is just a word")
_plain = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
_piece = st.one_of(_plain, _secret, _keyword_only, st.sampled_from(NEAR_MISSES))
_text = st.lists(_piece, max_size=4).map(" ".join)
_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), _text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=8,
)


def _label(data: bytes, out: bytes) -> None:
    if out is not data:
        event("a secret was replaced")
    elif any(k.encode() in data.lower() for k in KEYWORDS):
        event("a keyword without a secret: regexes ran, nothing changed")
    else:
        event("no keyword: returned as is")


@settings(max_examples=300)
@given(_text)
def test_redaction_is_idempotent(text: str) -> None:
    data = text.encode()
    once = REDACTOR.redact(data)
    _label(data, once)
    assert REDACTOR.redact(once) == once
    for secret in SAMPLES.values():
        assert secret.encode() not in once


@settings(max_examples=300)
@given(_json)
def test_valid_json_stays_valid_json(value: object) -> None:
    payload = orjson.dumps(value)
    out = REDACTOR.redact_json(payload)
    _label(payload, out)
    if b"\\" in payload and out is not payload:
        event("a secret in a document with escapes")
    again = orjson.loads(out)
    assert REDACTOR.redact_json(out) == out
    for secret in SAMPLES.values():
        assert secret not in orjson.dumps(again).decode()


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_data_without_a_keyword_is_returned_unchanged(data: bytes) -> None:
    lowered = data.lower()
    if any(k.encode() in lowered for k in KEYWORDS):
        event("holds a keyword (skipped)")
        return
    event("no keyword")
    assert REDACTOR.redact(data) is data
    assert not REDACTOR.may_hold(data)


# --- in Ingest ------------------------------------------------------------------------


def test_ingest_redacts_payload_topic_and_extra_frames() -> None:
    ingest = Ingest(redactor=Redactor())
    payload = orjson.dumps({"type": "message", "session_id": "s1", "message_id": "m1", "role": "user",
                            "text": message_text("anthropic-api-key")})
    topic = SAMPLES["github-pat"].encode()
    line = ingest.line([topic, payload, SAMPLES["aws-access-token"].encode()], 1, "2026-12-06T00:00:00Z", "sub")
    for secret in (SAMPLES["anthropic-api-key"], SAMPLES["github-pat"], SAMPLES["aws-access-token"]):
        assert secret.encode() not in line
    record = orjson.loads(line)
    meta = record["meta"]
    assert meta["redactions"] == {"anthropic-api-key": 1, "aws-access-token": 1, "github-pat": 1}
    assert meta["sha256"] == sha256(payload).hexdigest()
    assert meta["bytes"] == len(payload)
    stored = orjson.dumps(record["data"])
    assert meta["stored_sha256"] == sha256(stored).hexdigest()
    assert ingest.redactions == meta["redactions"]


def test_ingest_without_secret_is_unchanged_by_the_redactor() -> None:
    payload = orjson.dumps({"type": "message", "session_id": "s1", "message_id": "m1", "text": "hello"})
    with_rules = Ingest(redactor=Redactor()).line([b"s1", payload], 1, "t", "sub")
    without = Ingest().line([b"s1", payload], 1, "t", "sub")
    assert with_rules == without


@settings(max_examples=200)
@given(_text, st.booleans())
def test_ingest_fast_and_general_paths_agree(text: str, json_payload: bool) -> None:
    payload = (orjson.dumps({"type": "message", "session_id": "s", "message_id": "m", "text": text})
               if json_payload else text.encode())
    a = Ingest(redactor=Redactor()).line([b"s", payload], 1, "t", "sub")
    b = Ingest(redactor=Redactor()).general_line([b"s", payload], 1, "t", "sub")
    assert a == b
    record = orjson.loads(a)
    event("redacted" if "redactions" in record["meta"] else "not redacted")
    for secret in SAMPLES.values():
        assert secret.encode() not in a


def test_deeply_nested_json_with_a_broken_match_never_raises() -> None:
    red = Redactor(rules=(), extra=[RedactRule("tail", r"zz[a-z\\]+")])
    for depth in (10, 1000, 1020):
        deep = b"[" * depth + b'"zzabc\\\\nq"' + b"]" * depth
        line = Ingest(redactor=red).line([b"t", deep], 1, "t", "sub")
        assert b"zzabc" not in line
        orjson.loads(line)
