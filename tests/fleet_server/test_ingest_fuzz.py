"""Fuzzing ingest's writer (TESTING.md: bad input gets a clear answer and loses nothing
that was good): hypothesis-generated batches of topics and payloads, from valid window
reports with one field mutated to random bytes and hostile strings, go through
BatchWriter.write into a real SQLite database. It never raises; every message is counted
exactly once (accepted, duplicate or rejected with a known reason; only the server's
own `cmd` echoes are ignored); exactly the accepted windows and events are stored, with
the values that were sent, and nothing stored breaks a protocol rule."""
from __future__ import annotations

import copy
import json
import math
import re
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import text

from fleet_server.db.engine import make_engine, migrate
from fleet_server.ingest.stats import BROKER_REJECT_REASONS, INGEST_REJECT_REASONS
from fleet_server.ingest.writer import BatchWriter
from fleet_server.protocol import REJECT_REASONS, TOPIC_RE

DEVICE_RE = re.compile(r"^cf-[0-9a-f]{12}$")
SUFFIXES = ("telemetry", "event", "status", "ack", "cmd")
DEVICES = [f"cf-f022{i:08x}" for i in range(6)]

# Values a mutation puts into a field: every JSON type, edges, hostile text.
HOSTILE_TEXT = ["'; DROP TABLE windows; --", "\x00", "\ud800", "ü" * 300, "%s%s%n", "$(reboot)", "1e309"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
    | st.sampled_from(HOSTILE_TEXT) | st.sampled_from([0, -1, 10, 60, 900, 901, 2**31 - 1, 2**31, 10001, 200001]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6)


def _now_aligned(win: int = 60) -> int:
    return int(time.time()) // win * win


def window_doc(seq: int, back: int) -> dict:
    return {"v": 1, "seq": seq, "ts": _now_aligned() - 60 * back, "win": 60,
            "occ": {"occupied_s": 42, "present": True, "pir": 17, "radar_s": 40},
            "env": {"co2_ppm": 812, "temp_c": 22.4, "rh_pct": 48.1, "lux": 410, "noise_dba": 52.3}}


def event_doc(seq: int, back: int) -> dict:
    return {"v": 1, "seq": seq, "ts": int(time.time()) - back, "present": bool(back % 2)}


def status_doc() -> dict:
    return {"v": 1, "online": True, "ts": int(time.time()), "fw": "0.3.0", "hw": "s3-v1", "boot": 3,
            "reset": "power", "uptime_s": 60, "heap_free": 61234, "rssi": -61, "ip": "10.1.2.3", "outbox": 0,
            "clock": "ntp", "sensors": {"co2": "ok", "th": "ok"}}


PATHS = [("v",), ("seq",), ("ts",), ("win",), ("occ",), ("occ", "occupied_s"), ("occ", "present"),
         ("occ", "pir"), ("occ", "radar_s"), ("env",), ("env", "co2_ppm"), ("env", "temp_c"),
         ("env", "rh_pct"), ("env", "lux"), ("env", "noise_dba"), ("present",), ("online",), ("fw",),
         ("sensors",), ("id",), ("ok",), ("err",), ("extra",)]


@st.composite
def message(draw) -> tuple[str, bytes]:
    dev = draw(st.sampled_from(DEVICES))
    kind = draw(st.sampled_from(["telemetry"] * 4 + ["event", "status", "ack", "cmd"]))
    seq = draw(st.integers(0, 30))      # a small range: repeats (duplicates) happen
    back = draw(st.integers(0, 50))
    doc = {"telemetry": lambda: window_doc(seq, back), "event": lambda: event_doc(seq, back),
           "status": status_doc, "cmd": lambda: {"v": 1, "id": "c-1", "op": "sync"},
           "ack": lambda: {"v": 1, "id": "c-1", "ok": True, "err": None, "ts": int(time.time())}}[kind]()
    how = draw(st.sampled_from(["valid", "mutate", "mutate", "drop", "raw", "oversize"]))
    payload: bytes
    if how == "mutate":
        doc = copy.deepcopy(doc)
        path = draw(st.sampled_from(PATHS))
        target = doc
        for key in path[:-1]:
            target = target.setdefault(key, {}) if isinstance(target, dict) else {}
        if isinstance(target, dict):
            target[path[-1]] = draw(json_values)
    elif how == "drop":
        doc = copy.deepcopy(doc)
        doc.pop(draw(st.sampled_from(sorted(doc))), None)
    if how == "raw":
        payload = draw(st.binary(max_size=80) | st.sampled_from(
            [b"", b"null", b"[]", b"{}", b'{"v":1}', b'{"v":1.0,"seq":1}', b"\xff\xfe", b'{"v":NaN}',
             b"\xef\xbb\xbf{}", b"[" * 5000, b'{"v":1,"seq":1e400}']))
    elif how == "oversize":
        doc["pad"] = "x" * 1100
        payload = json.dumps(doc).encode()
    else:
        try:
            payload = json.dumps(doc, allow_nan=False).encode("utf-8", "surrogatepass")
        except (ValueError, TypeError):
            payload = b"{"
    topic = draw(st.sampled_from([
        f"campus/v1/{dev}/{kind}", f"campus/v1/{dev}/{kind}", f"campus/v1/{dev}/{kind}",
        f"campus/v1/{dev.upper()}/{kind}", f"campus/v2/{dev}/{kind}", f"campus/v1/{dev}/{kind}/x",
        f"campus/v1/{dev}/../{kind}", "campus/v1/+/telemetry", "", "(topic not UTF-8)",
        f"campus/v1/{dev}'; DROP TABLE devices;--/telemetry"]))
    return topic, payload


def _rows(conn, table: str) -> int:
    return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    eng = make_engine(f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/fleet.db")
    migrate(eng)
    yield eng
    eng.dispose()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(batch=st.lists(message(), min_size=1, max_size=40))
def test_any_batch_is_counted_once_and_stores_only_valid_data(engine, batch):
    writer = BatchWriter(engine)
    now = time.time()
    items = [(t, p, now, False) for t, p in batch]
    with engine.connect() as conn:
        before = {t: _rows(conn, t) for t in ("windows", "events", "devices")}
    result = writer.write(items)
    writer.close()
    assert result is not None
    counts, errors = result
    assert errors == 0

    ignored = sum(1 for t, *_ in items if (m := TOPIC_RE.match(t)) and m.group(2) == "cmd")
    assert sum(counts.values()) == len(items) - ignored, (counts, len(items), ignored)
    known = set(REJECT_REASONS + BROKER_REJECT_REASONS + INGEST_REJECT_REASONS)
    for (result_kind, reason), n in counts.items():
        assert n > 0
        if result_kind == "rejected":
            assert reason in known
        else:
            assert result_kind in ("accepted", "duplicate") and reason in ("telemetry", "event", "status", "ack")

    with engine.connect() as conn:
        after = {t: _rows(conn, t) for t in ("windows", "events", "devices")}
        assert after["windows"] - before["windows"] == counts[("accepted", "telemetry")]
        assert after["events"] - before["events"] == counts[("accepted", "event")]
        # Everything stored keeps to PROTOCOL.md.
        bad = conn.execute(text(
            "SELECT count(*) FROM windows WHERE seq < 0 OR seq > 2147483647 OR win < 10 OR win > 900 "
            "OR ts % win != 0 OR occupied_s < 0 OR occupied_s > win OR (radar_s IS NOT NULL AND "
            "(radar_s < 0 OR radar_s > win)) OR (co2_ppm IS NOT NULL AND (co2_ppm < 0 OR co2_ppm > 10000)) "
            "OR (temp_c IS NOT NULL AND (temp_c < -40 OR temp_c > 85)) "
            "OR (rh_pct IS NOT NULL AND (rh_pct < 0 OR rh_pct > 100)) "
            "OR (lux IS NOT NULL AND (lux < 0 OR lux > 200000)) "
            "OR (noise_dba IS NOT NULL AND (noise_dba < 0 OR noise_dba > 140))")).scalar_one()
        assert bad == 0
        for (dev,) in conn.execute(text("SELECT device_id FROM devices")):
            assert DEVICE_RE.match(dev), dev
        for (dev,) in conn.execute(text("SELECT DISTINCT device_id FROM windows")):
            assert DEVICE_RE.match(dev), dev


def test_a_stored_window_holds_exactly_the_values_sent(engine):
    """The first copy of each (device, seq) is the one stored, value for value."""
    dev = "cf-f02200ff0001"
    docs = [window_doc(seq, back) for seq, back in ((1001, 3), (1002, 2), (1001, 1))]
    docs[1]["env"] = {"co2_ppm": None, "temp_c": -40, "rh_pct": 100, "lux": 0.5, "noise_dba": 140}
    docs[1]["extra"] = {"ignored": ["by", "the", "server"]}
    writer = BatchWriter(engine)
    counts, _ = writer.write([(f"campus/v1/{dev}/telemetry", json.dumps(d).encode(), time.time(), False)
                              for d in docs])
    writer.close()
    assert counts == Counter({("accepted", "telemetry"): 2, ("duplicate", "telemetry"): 1})
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT seq, ts, win, occupied_s, present, pir, radar_s, co2_ppm, temp_c, "
                                 "rh_pct, lux, noise_dba FROM windows WHERE device_id = :d ORDER BY seq"),
                            {"d": dev}).all()
    for row, doc in zip(rows, docs[:2]):
        o, e = doc["occ"], doc["env"]
        assert tuple(row[:4]) == (doc["seq"], doc["ts"], doc["win"], o["occupied_s"])
        assert bool(row[4]) is o["present"] and row[5] == o["pir"] and row[6] == o["radar_s"]
        for got, key in zip(row[7:], ("co2_ppm", "temp_c", "rh_pct", "lux", "noise_dba")):
            assert (got is None and e[key] is None) or math.isclose(got, e[key]), (key, got, e[key])
