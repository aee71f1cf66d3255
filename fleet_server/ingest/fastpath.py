"""The fast path of ingest's decoder for the one message that comes in volume: the
window report on `.../telemetry`.

`decode()` here returns exactly what `fleet_server.protocol.decode` returns, for every
input. For a window report that passes every rule of PROTOCOL.md it builds the Window
itself, with the JSON parsed once by a decoder made once and the rules checked inline;
for anything else (another kind of message, or any rule not met) it hands the message
to `protocol.decode`, which then says exactly why it is rejected. So the fast path can
only ever accept what the protocol accepts, with the same values; every reject reason
comes from protocol.py. tests/fleet_server/test_ingest_fastpath.py checks the two
against each other on generated payloads."""
from __future__ import annotations

import json
import math

from fleet_server import protocol
from fleet_server.protocol import (
    INT32_MAX, MAX_AGE_S, MAX_FUTURE_S, MAX_PAYLOAD_BYTES, SEQ_MAX, TOPIC_RE, Message, Window,
)

_decoder = json.JSONDecoder(parse_constant=protocol._reject_constant)
_topic_match = TOPIC_RE.match
_isfinite = math.isfinite
_TS_MAX = 2**40
assert SEQ_MAX == INT32_MAX


def _opt_int(d: dict, key: str, hi: int) -> tuple[bool, int | None]:
    v = d.get(key)
    if v is None:
        return True, None
    if type(v) is not int or not 0 <= v <= hi:
        return False, None
    return True, v


def _opt_num(d: dict, key: str, lo: float, hi: float) -> tuple[bool, float | None]:
    v = d.get(key)
    if v is None:
        return True, None
    t = type(v)
    if (t is not float and t is not int) or not _isfinite(v) or not lo <= v <= hi:
        return False, None
    return True, float(v)


def _window(device_id: str, doc: dict, now_s: float) -> Window | None:
    """The Window if `doc` passes every rule, else None (the caller then asks protocol.py)."""
    if doc.get("v", None) != 1 or type(doc["v"]) is not int:
        return None
    seq = doc.get("seq")
    ts = doc.get("ts")
    win = doc.get("win")
    if type(seq) is not int or type(ts) is not int or type(win) is not int:
        return None
    if not (0 <= seq <= SEQ_MAX and 0 <= ts <= _TS_MAX and 10 <= win <= 900) or ts % win:
        return None
    if ts > now_s + MAX_FUTURE_S or ts < now_s - MAX_AGE_S:
        return None
    occ = doc.get("occ")
    env = doc.get("env", {})
    if type(occ) is not dict or type(env) is not dict:
        return None
    occupied_s = occ.get("occupied_s")
    present = occ.get("present")
    if type(occupied_s) is not int or not 0 <= occupied_s <= win or type(present) is not bool:
        return None
    ok1, pir = _opt_int(occ, "pir", SEQ_MAX)
    ok2, radar_s = _opt_int(occ, "radar_s", win)
    ok3, co2_ppm = _opt_int(env, "co2_ppm", 10000)
    ok4, temp_c = _opt_num(env, "temp_c", -40, 85)
    ok5, rh_pct = _opt_num(env, "rh_pct", 0, 100)
    ok6, lux = _opt_num(env, "lux", 0, 200000)
    ok7, noise_dba = _opt_num(env, "noise_dba", 0, 140)
    if not (ok1 and ok2 and ok3 and ok4 and ok5 and ok6 and ok7):
        return None
    return Window(device_id, seq, ts, win, occupied_s, present, pir, radar_s, co2_ppm,
                  temp_c, rh_pct, lux, noise_dba)


def decode(topic: str, payload: bytes, now_s: float) -> Message:
    """Same contract as protocol.decode: a message, or Rejected(reason) / Ignored."""
    m = _topic_match(topic)
    if m is not None and m.group(2) == "telemetry" and len(payload) <= MAX_PAYLOAD_BYTES:
        try:
            text = payload.decode("utf-8")
            # json.loads refuses a leading BOM; JSONDecoder.decode alone would not.
            doc = _decoder.decode(text) if not text.startswith("\ufeff") else None
        except (UnicodeDecodeError, ValueError, RecursionError):
            doc = None
        if type(doc) is dict:
            w = _window(m.group(1), doc, now_s)
            if w is not None:
                return w
    return protocol.decode(topic, payload, now_s)
