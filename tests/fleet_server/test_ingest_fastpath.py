"""Ingest's fast decoder (fleet_server/ingest/fastpath.py) against the reference
decoder (fleet_server/protocol.py): for any topic and payload the two give the same
message, or the same reject reason. The fast path may only ever take a shortcut to
the answer protocol.py gives."""
from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fleet_server import protocol
from fleet_server.ingest import fastpath

NOW = 1_764_300_100.0
DEV = "cf-a1b2c3d4e5f6"
TOPIC = f"campus/v1/{DEV}/telemetry"

BASE = {"v": 1, "seq": 1042, "ts": 1764300000, "win": 60,
        "occ": {"occupied_s": 42, "present": True, "pir": 17, "radar_s": 40},
        "env": {"co2_ppm": 812, "temp_c": 22.4, "rh_pct": 48.1, "lux": 410, "noise_dba": 52.3}}
FIELDS = [("v",), ("seq",), ("ts",), ("win",), ("occ",), ("env",),
          ("occ", "occupied_s"), ("occ", "present"), ("occ", "pir"), ("occ", "radar_s"),
          ("env", "co2_ppm"), ("env", "temp_c"), ("env", "rh_pct"), ("env", "lux"), ("env", "noise_dba")]
DELETE = object()

# Values around every limit of PROTOCOL.md, and of every JSON type.
edge_ints = st.sampled_from([0, 1, -1, 9, 10, 30, 59, 60, 61, 140, 900, 901, 10000, 10001, 2**31 - 1, 2**31,
                             2**40, 2**40 + 1, 1764300000, 1764300060, 1764300300, 1764300420, 1764300030,
                             1764300000 - 35 * 86400 - 60, 10**30])
values = st.one_of(
    edge_ints, st.integers(), st.booleans(), st.none(),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, -40.0, -40.5, 85.0, 85.1, 100.0, 1e300]),
    st.text(max_size=5), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(DELETE),
)


def outcome(decoder, topic: str, payload: bytes, now: float = NOW):
    try:
        return ("ok", decoder(topic, payload, now))
    except protocol.Rejected as r:
        return ("rejected", r.reason)
    except protocol.Ignored:
        return ("ignored",)
    except Exception as e:  # noqa: BLE001 - both must fail the same way, whatever it is
        return ("error", type(e).__name__)


def same(topic: str, payload: bytes) -> None:
    assert outcome(fastpath.decode, topic, payload) == outcome(protocol.decode, topic, payload)


def mutated(changes: list[tuple[tuple[str, ...], object]]) -> dict:
    doc = json.loads(json.dumps(BASE))
    for path, value in changes:
        node = doc
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if value is DELETE:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return doc


EDGES = [0, 1, -1, 9, 10, 11, 29, 30, 40, 41, 59, 60, 61, 140, 141, 899, 900, 901, 10000, 10001,
         200000, 200001, 2**31 - 1, 2**31, 2**40, 2**40 + 1, 10**400,
         0.0, -0.0, 0.5, -40, -40.0, -40.01, 85, 85.0, 85.01, 99.99, 100, 100.01, 140.0, 140.01, 200000.5,
         1e308, True, False, None, DELETE, "1", "", [], {}, [1], {"a": 1}]
# The nearest floats beyond every numeric limit.
EDGES += [math.nextafter(x, d) for x in (-40, 85, 0, 100, 200000, 140) for d in (-math.inf, math.inf)]
TS = 1764300000
# Clocks that put the window's ts exactly on, and just past, each limit of _check_ts.
NOWS = [NOW, TS - 300, TS - 301, TS + 35 * 86400, TS + 35 * 86400 + 1]


def test_fast_path_agrees_with_protocol_on_every_field_at_every_edge():
    mismatches = []
    for now in NOWS:
        for path in FIELDS:
            for value in EDGES:
                payload = json.dumps(mutated([(path, value)])).encode()
                a = outcome(fastpath.decode, TOPIC, payload, now)
                b = outcome(protocol.decode, TOPIC, payload, now)
                if a != b:
                    mismatches.append((now, ".".join(path), repr(value)[:20], a, b))
        for ts in (TS - 60, TS, TS + 60, TS + 30, TS + 600):
            payload = json.dumps(mutated([(("ts",), ts)])).encode()
            if outcome(fastpath.decode, TOPIC, payload, now) != outcome(protocol.decode, TOPIC, payload, now):
                mismatches.append((now, "ts", ts))
    assert mismatches == []


def test_the_valid_example_takes_the_fast_path_and_equals_the_reference():
    payload = json.dumps(BASE).encode()
    w = fastpath._window(DEV, json.loads(payload), NOW)
    assert w is not None and w == protocol.decode(TOPIC, payload, NOW)
    assert type(w.lux) is float and w.lux == 410.0


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(FIELDS), values), max_size=4))
@example([(("env", "temp_c"), 10**400)])       # protocol.py raises OverflowError here; so must we
@example([(("v",), True)])
@example([(("v",), 1.0)])
@example([(("occ", "present"), 1)])
@example([(("ts",), 1764300030)])               # not aligned to win
@example([(("env",), None)])
def test_fast_path_agrees_with_protocol_on_mutated_windows(changes):
    same(TOPIC, json.dumps(mutated(changes)).encode())


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
@example(b"\xef\xbb\xbf" + json.dumps(BASE).encode())   # a UTF-8 BOM: json.loads refuses it
@example(json.dumps(BASE).encode().replace(b"22.4", b"NaN"))
@example(json.dumps(BASE).encode().replace(b"22.4", b"1e999"))
@example(json.dumps(BASE).encode() + b" " * 1024)      # oversize
@example(b"[" * 5000)
def test_fast_path_agrees_with_protocol_on_any_bytes(payload):
    same(TOPIC, payload)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([TOPIC, f"campus/v1/{DEV}/event", f"campus/v1/{DEV}/status", f"campus/v1/{DEV}/ack",
                        f"campus/v1/{DEV}/cmd", "campus/v1/cf-A1B2C3D4E5F6/telemetry", TOPIC + "\n",
                        "campus/v2/x/telemetry", f"campus/v1/{DEV}/telemetry/x"]),
       st.sampled_from([json.dumps(BASE).encode(), b'{"v":1,"seq":5,"ts":1764300000,"present":true}',
                        b'{"v":1,"online":false}', b'{"v":1,"id":"c-1","ok":true,"ts":1764300000}']))
def test_fast_path_agrees_with_protocol_on_every_topic(topic, payload):
    same(topic, payload)


def test_window_values_are_identical_including_float_conversion():
    doc = mutated([(("env", "lux"), 0), (("env", "temp_c"), -40), (("env", "noise_dba"), 140)])
    payload = json.dumps(doc).encode()
    a, b = fastpath.decode(TOPIC, payload, NOW), protocol.decode(TOPIC, payload, NOW)
    assert a == b and all(type(getattr(a, f)) is type(getattr(b, f)) for f in ("lux", "temp_c", "noise_dba"))
    assert math.copysign(1, a.lux) == math.copysign(1, b.lux)
