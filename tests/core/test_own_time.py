"""A message's own time (when its sender says it was written) beside the time it was
received: the decoder (:func:`convlog.core.view.own_time`), ``info``'s two spans and
``--as-of`` over imported data."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from hypothesis import event, given
from hypothesis import strategies as st

from conftest import convlog_cmd, shearwater_file
from convlog.core.record import format_ts
from convlog.core.view import OWN_TIME_FIELDS, own_time

TIME_LIKE = st.sampled_from(["2025-11-20T22:49:06.079092", "2025-11-20", "2025-13-01T00:00:00", "1969-12-31T23:59:59Z",
                             1_764_000_000, 1_764_000_000_000, 10**30, -1, "0001-01-01T00:00:00"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40) | TIME_LIKE,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
TIMES = st.datetimes(min_value=datetime(1974, 1, 1), max_value=datetime(2999, 12, 31))
ZONES = st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])


@given(st.dictionaries(st.sampled_from([*OWN_TIME_FIELDS, "content", "x"]), TIME_LIKE | JSON, max_size=5) | JSON)
def test_own_time_never_raises(data: object) -> None:
    """Whatever a payload holds, the decoder answers a time in ``ts`` form or None."""
    found = own_time({"seq": 1, "ts": "2026-01-01T00:00:00.000000Z", "kind": "message", "data": data})
    event("a time" if found else "no time")
    assert found is None or (len(found) == 27 and found.endswith("Z"))


@given(TIMES, ZONES, st.sampled_from(OWN_TIME_FIELDS), st.sampled_from(["iso", "s", "ms", "us", "ns"]))
def test_own_time_reads_text_and_epoch_numbers(when: datetime, zone: timezone | None, key: str, form: str) -> None:
    """ISO 8601 text with or without an offset (without: UTC) and epoch seconds,
    milliseconds, microseconds or nanoseconds all give the same instant (the size of a
    number tells its unit apart for times from 1974 to 2999)."""
    when = when.replace(tzinfo=zone)
    instant = when if zone else when.replace(tzinfo=UTC)
    event(f"form {form}, zone {'none' if zone is None else 'given'}")
    if form == "iso":
        value: object = when.isoformat()
        expected = format_ts(instant)
    else:
        micros = (instant - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        step = {"s": 1_000_000, "ms": 1000, "us": 1, "ns": 1}[form]
        value = micros // step * (1000 if form == "ns" else 1)
        expected = format_ts(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros // step * step))
    assert own_time({"data": {key: value}}) == expected


def test_the_first_field_with_a_time_wins_and_junk_is_skipped() -> None:
    record = {"data": {"Timestamp": "not a time", "timestamp": "2025-11-20T22:49:06.079092", "ts": 0}}
    assert own_time(record) == "2025-11-20T22:49:06.079092Z"
    assert own_time({"data": {"ts": True}}) is None
    assert own_time({"data": {"created_at": float("nan")}}) is None
    assert own_time({"data": "2025-11-20T22:49:06"}) is None


def test_info_and_as_of_use_the_conversation_s_own_times(tmp_path: Path) -> None:
    """Imported data from 2025: ``info`` reports the receive span (the import, under a
    second) and the messages' own span (two months); ``--as-of`` a day inside that span
    shows the sessions as they were that day, not "no session"."""
    source = shearwater_file("current_session.jsonl")
    stamps = sorted(json.loads(line)["Timestamp"] for line in source.read_text().splitlines() if line.strip())
    log = tmp_path / "log"
    subprocess.run(convlog_cmd("import", str(source), "--dir", str(log)), check=True, capture_output=True,
                   timeout=120)
    info = json.loads(subprocess.run(convlog_cmd("info", "--dir", str(log), "--json"), check=True,
                                     capture_output=True, text=True, timeout=120).stdout)
    assert info["own"]["records"] == len(stamps)
    assert (info["own"]["first_ts"], info["own"]["last_ts"]) == (stamps[0] + "Z", stamps[-1] + "Z")
    assert info["own"]["duration_s"] > 30 * 86400 > info["duration_s"]
    text = subprocess.run(convlog_cmd("info", "--dir", str(log)), check=True, capture_output=True, text=True,
                          timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}).stdout
    days = int(info["own"]["duration_s"] // 86400)
    assert f"sent:         {stamps[0]}Z .. {stamps[-1]}Z, {days} d " in text
    assert f"(the own times of {len(stamps):,} messages)" in text

    def sessions(*extra: str) -> list[dict]:
        out = subprocess.run(convlog_cmd("sessions", "--dir", str(log), "--json", "--all", *extra), check=True,
                             capture_output=True, text=True, timeout=120).stdout
        return json.loads(out)

    day = "2025-11-21"
    before = {json.loads(line).get("ContextId") for line in source.read_text().splitlines()
              if line.strip() and json.loads(line)["Timestamp"] <= day}
    then, now = sessions("--as-of", day), sessions()
    assert 0 < len(then) < len(now)
    assert {s["id"] for s in then} <= {s["id"] for s in now}
    assert {s["id"] for s in then} <= before | {"unknown"}
