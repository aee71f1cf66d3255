"""Decoding and validation of node messages, exactly per PROTOCOL.md version 1.

`decode()` turns (topic, payload) into a typed message or raises `Rejected` with a
reason from REJECT_REASONS; it never raises anything else, whatever the bytes."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

MAX_PAYLOAD_BYTES = 1024
MAX_FUTURE_S = 300
MAX_AGE_S = 35 * 86400
SEQ_MAX = 2**31 - 1
INT32_MAX = 2**31 - 1   # the largest value of a 4-byte INTEGER column

TOPIC_RE = re.compile(r"^campus/v1/(cf-[0-9a-f]{12})/(telemetry|event|status|cmd|ack)$")
DEVICE_ID_RE = re.compile(r"^cf-[0-9a-f]{12}$")

# Every reason a message can be rejected for; /metrics lists each one.
REJECT_REASONS = (
    "bad_topic",      # not campus/v1/{device_id}/{known suffix}
    "oversize",       # payload over 1024 bytes
    "not_json",       # not UTF-8 JSON
    "not_object",     # JSON but not an object
    "bad_version",    # "v" missing or not 1
    "missing_field",  # a required key is absent
    "wrong_type",     # a value of the wrong JSON type
    "out_of_range",   # a value outside its range, or ts not aligned to win
    "bad_ts",         # ts more than 300 s ahead or older than 35 days
)

RESET_CAUSES = {"power", "wdt", "soft", "panic", "brownout", "deepsleep", "unknown"}
CLOCK_SOURCES = {"ntp", "none"}
SENSOR_STATES = {"ok", "missing", "failed"}


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        assert reason in REJECT_REASONS
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Ignored(Exception):
    """A message on our own `cmd` topic: the server's echo, not node data."""


@dataclass(frozen=True, slots=True)
class Window:
    device_id: str
    seq: int
    ts: int
    win: int
    occupied_s: int
    present: bool
    pir: int | None
    radar_s: int | None
    co2_ppm: int | None
    temp_c: float | None
    rh_pct: float | None
    lux: float | None
    noise_dba: float | None

    def as_report(self) -> dict[str, Any]:
        """The window in PROTOCOL.md shape (what the node sent, minus unknown keys)."""
        return {
            "v": 1, "seq": self.seq, "ts": self.ts, "win": self.win,
            "occ": {"occupied_s": self.occupied_s, "present": self.present,
                    "pir": self.pir, "radar_s": self.radar_s},
            "env": {"co2_ppm": self.co2_ppm, "temp_c": self.temp_c, "rh_pct": self.rh_pct,
                    "lux": self.lux, "noise_dba": self.noise_dba},
        }


@dataclass(frozen=True, slots=True)
class Event:
    device_id: str
    seq: int
    ts: int
    present: bool


@dataclass(frozen=True, slots=True)
class Status:
    device_id: str
    online: bool
    ts: int | None = None
    fw: str | None = None
    hw: str | None = None
    boot: int | None = None
    reset: str | None = None
    uptime_s: int | None = None
    heap_free: int | None = None
    rssi: int | None = None
    ip: str | None = None
    outbox: int | None = None
    clock: str | None = None
    sensors: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    device_id: str
    cmd_id: str
    ok: bool
    err: str | None
    ts: int
    # An `ota` command's progress (docs/ota.md): the stage, download percent, version.
    stage: str | None = None
    pct: int | None = None
    fw: str | None = None


Message = Window | Event | Status | Ack


# The `ota` key of an ack (docs/ota.md): the stages of one update, in order.
OTA_STAGES = {"accepted", "download", "verified", "installed", "confirmed", "rolled_back", "refused"}


def _reject_constant(name: str) -> None:
    # json accepts NaN / Infinity; the protocol (RFC 8259 JSON) does not.
    raise ValueError(f"non-JSON constant {name}")


def _obj(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Rejected("oversize", f"{len(payload)} bytes")
    try:
        doc = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise Rejected("not_json", str(e)[:80]) from None
    if not isinstance(doc, dict):
        raise Rejected("not_object", type(doc).__name__)
    if "v" not in doc or type(doc["v"]) is not int or doc["v"] != 1:
        raise Rejected("bad_version", repr(doc.get("v"))[:20])
    return doc


def _int(doc: dict, key: str, lo: int, hi: int, *, required: bool = True, nullable: bool = False) -> int | None:
    if key not in doc:
        if required:
            raise Rejected("missing_field", key)
        return None
    v = doc[key]
    if v is None:
        if nullable:
            return None
        raise Rejected("wrong_type", f"{key} is null")
    if type(v) is not int:  # bool is an int subclass in Python; JSON true is not a number
        raise Rejected("wrong_type", f"{key} must be an integer")
    if not lo <= v <= hi:
        raise Rejected("out_of_range", f"{key}={v}")
    return v


def _num(doc: dict, key: str, lo: float, hi: float) -> float | None:
    """Optional nullable number (missing key = null, PROTOCOL.md)."""
    v = doc.get(key)
    if v is None:
        return None
    if type(v) not in (int, float):
        raise Rejected("wrong_type", f"{key} must be a number")
    if not math.isfinite(v) or not lo <= v <= hi:
        raise Rejected("out_of_range", f"{key}={v}")
    return float(v)


def _bool(doc: dict, key: str, *, required: bool = True) -> bool | None:
    if key not in doc:
        if required:
            raise Rejected("missing_field", key)
        return None
    v = doc[key]
    if type(v) is not bool:
        raise Rejected("wrong_type", f"{key} must be true or false")
    return v


def _storable(v: str) -> bool:
    """Text every database can hold: no NUL (PostgreSQL text refuses it) and no lone
    surrogate from a JSON escape such as "\\ud800" (not encodable as UTF-8)."""
    if "\x00" in v:
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _str(doc: dict, key: str, max_len: int, allowed: set[str] | None = None) -> str | None:
    v = doc.get(key)
    if v is None:
        return None
    if type(v) is not str:
        raise Rejected("wrong_type", f"{key} must be a string")
    if len(v) > max_len or (allowed is not None and v not in allowed) or not _storable(v):
        raise Rejected("out_of_range", f"{key}={v[:20]!r}")
    return v


def _section(doc: dict, key: str) -> dict:
    if key not in doc:
        raise Rejected("missing_field", key)
    v = doc[key]
    if type(v) is not dict:
        raise Rejected("wrong_type", f"{key} must be an object")
    return v


def _check_ts(ts: int, now_s: float) -> None:
    if ts > now_s + MAX_FUTURE_S:
        raise Rejected("bad_ts", f"ts {ts} is {ts - now_s:.0f} s in the future")
    if ts < now_s - MAX_AGE_S:
        raise Rejected("bad_ts", f"ts {ts} is older than 35 days")


def decode_window(device_id: str, doc: dict, now_s: float) -> Window:
    seq = _int(doc, "seq", 0, SEQ_MAX)
    ts = _int(doc, "ts", 0, 2**40)
    win = _int(doc, "win", 10, 900)
    if ts % win:
        raise Rejected("out_of_range", f"ts {ts} not aligned to win {win}")
    _check_ts(ts, now_s)
    occ = _section(doc, "occ")
    env = doc.get("env", {})
    if type(env) is not dict:
        raise Rejected("wrong_type", "env must be an object")
    return Window(
        device_id=device_id, seq=seq, ts=ts, win=win,
        occupied_s=_int(occ, "occupied_s", 0, win),
        present=_bool(occ, "present"),
        pir=_int(occ, "pir", 0, SEQ_MAX, required=False, nullable=True),
        radar_s=_int(occ, "radar_s", 0, win, required=False, nullable=True),
        co2_ppm=_int(env, "co2_ppm", 0, 10000, required=False, nullable=True),
        temp_c=_num(env, "temp_c", -40, 85),
        rh_pct=_num(env, "rh_pct", 0, 100),
        lux=_num(env, "lux", 0, 200000),
        noise_dba=_num(env, "noise_dba", 0, 140),
    )


def decode_event(device_id: str, doc: dict, now_s: float) -> Event:
    seq = _int(doc, "seq", 0, SEQ_MAX)
    ts = _int(doc, "ts", 0, 2**40)
    _check_ts(ts, now_s)
    return Event(device_id, seq, ts, _bool(doc, "present"))


def decode_status(device_id: str, doc: dict) -> Status:
    online = _bool(doc, "online")
    if not online:  # the will carries nothing else
        return Status(device_id, False)
    sensors = doc.get("sensors")
    if sensors is not None:
        if type(sensors) is not dict:
            raise Rejected("wrong_type", "sensors must be an object")
        for name, state in sensors.items():
            if type(state) is not str:
                raise Rejected("wrong_type", f"sensors.{name} must be a string")
            if state not in SENSOR_STATES or len(name) > 16:
                raise Rejected("out_of_range", f"sensors.{name[:16]}={state[:16]!r}")
    return Status(
        device_id, True,
        ts=_int(doc, "ts", 0, 2**40, required=False, nullable=True),
        fw=_str(doc, "fw", 32), hw=_str(doc, "hw", 32),
        boot=_int(doc, "boot", 0, SEQ_MAX, required=False, nullable=True),
        reset=_str(doc, "reset", 16, RESET_CAUSES),
        uptime_s=_int(doc, "uptime_s", 0, 2**40, required=False, nullable=True),
        heap_free=_int(doc, "heap_free", 0, INT32_MAX, required=False, nullable=True),
        rssi=_int(doc, "rssi", -127, 0, required=False, nullable=True),
        ip=_str(doc, "ip", 64),
        outbox=_int(doc, "outbox", 0, SEQ_MAX, required=False, nullable=True),
        clock=_str(doc, "clock", 8, CLOCK_SOURCES),
        sensors=sensors,
    )


def decode_ack(device_id: str, doc: dict) -> Ack:
    cmd_id = doc.get("id")
    if cmd_id is None:
        raise Rejected("missing_field", "id")
    if type(cmd_id) is not str:
        raise Rejected("wrong_type", "id must be a string")
    if not 1 <= len(cmd_id) <= 64:
        raise Rejected("out_of_range", "id length")
    if not _storable(cmd_id):
        raise Rejected("out_of_range", f"id={cmd_id[:20]!r}")
    err = _str(doc, "err", 64)
    return Ack(device_id, cmd_id, _bool(doc, "ok"), err, _int(doc, "ts", 0, 2**40),
               stage=_str(doc, "ota", 16, OTA_STAGES),
               pct=_int(doc, "pct", 0, 100, required=False, nullable=True),
               fw=_str(doc, "fw", 32))


def parse_topic(topic: str) -> tuple[str, str]:
    m = TOPIC_RE.match(topic)
    if m is None:
        raise Rejected("bad_topic", topic[:80])
    return m.group(1), m.group(2)


def decode(topic: str, payload: bytes, now_s: float) -> Message:
    """Validate one MQTT message. Raises Rejected(reason) or Ignored."""
    device_id, kind = parse_topic(topic)
    if kind == "cmd":
        raise Ignored()
    doc = _obj(payload)
    if kind == "telemetry":
        return decode_window(device_id, doc, now_s)
    if kind == "event":
        return decode_event(device_id, doc, now_s)
    if kind == "status":
        return decode_status(device_id, doc)
    return decode_ack(device_id, doc)
