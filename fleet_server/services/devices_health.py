"""Device health over time (DOMAIN.md "Device health"): data completeness per school-local
day, heap / RSSI / reboots / reset causes / sensor states from the status history, and
the firmware version spread of the fleet."""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, case, func, or_, select

from fleet_server.db.registry_schema import SCHOOL_TIMEZONE, device_assignments, rooms, schools
from fleet_server.db.schema import devices, status_history, windows
from fleet_server.metrics.schooltime import dates, day_bounds, zone
from fleet_server.services.devices import DEFAULT_WINDOW_S, _base_query, filtered, iso, online_clause

# Windows are counted per 15-minute bucket of UTC time and the buckets mapped to local
# dates in Python: every UTC offset in use is a multiple of 15 minutes, so a bucket
# never straddles local midnight, with or without DST, and a 400-day range is at most
# 38,400 rows back.
_BUCKET_S = 900

DEFINITIONS = {
    "expected": "aligned windows (ts % window_s == 0) that ended by now within the part of the day the "
                "device was assigned to a room (since first seen, for a device never assigned); "
                "86400 / window_s for a full day",
    "received": "windows stored with ts in that time",
    "share": "received / expected, at most 1",
    "pruned": "the day is older than the raw-window retention: windows were deleted, only rollups remain",
}


Intervals = list[tuple[float, float]]


def _device_zone(conn: Connection, device_id: str) -> tuple[Intervals, ZoneInfo, str]:
    """(the device's assigned intervals [from, to) in Unix s, the zone of its latest
    school, "assignments"); for a device never assigned, existence since first seen."""
    a = device_assignments.c
    history = conn.execute(select(a.from_ts, a.to_ts, schools.c.timezone)
                           .join(rooms, rooms.c.id == a.room_id).join(schools, schools.c.id == rooms.c.school_id)
                           .where(a.device_id == device_id).order_by(a.from_ts, a.id)).all()
    if history:
        return ([(h.from_ts, h.to_ts if h.to_ts is not None else math.inf) for h in history],
                zone(history[-1].timezone), "assignments")
    first_seen = conn.execute(select(devices.c.first_seen_s).where(devices.c.device_id == device_id)).scalar_one()
    return [(first_seen, math.inf)], zone(SCHOOL_TIMEZONE), "first_seen"


def _aligned(lo: float, hi: float, win_s: int) -> int:
    """Window starts s with lo <= s < hi and s % win_s == 0."""
    return max(0, math.ceil(hi / win_s) - math.ceil(lo / win_s)) if hi > lo else 0


def _ratio(n: int, d: int) -> float | None:
    return None if d <= 0 else round(min(1.0, n / d), 4)


def completeness(conn: Connection, device_id: str, first: date, last: date, *,
                 now_s: float | None = None, retained_from_s: float | None = None) -> dict | None:
    """Per school-local day: windows expected for the time the device was assigned vs
    windows received. None if the device is unknown."""
    now_s = time.time() if now_s is None else now_s
    device = conn.execute(select(devices.c.win_s).where(devices.c.device_id == device_id)).first()
    if device is None:
        return None
    win_s: int = device.win_s or DEFAULT_WINDOW_S
    intervals, tz, basis = _device_zone(conn, device_id)
    lo_s, hi_s = day_bounds(first, tz)[0], day_bounds(last, tz)[1]
    w = windows.c
    in_intervals = or_(*((w.ts >= f) & (w.ts < t) if t != math.inf else (w.ts >= f) for f, t in intervals))
    received: Counter[date] = Counter()
    bucket = (w.ts // _BUCKET_S).label("bucket")
    for b, n in conn.execute(select(bucket, func.count()).where(w.device_id == device_id, w.ts >= lo_s,
                                                                w.ts < hi_s, in_intervals).group_by(bucket)):
        received[datetime.fromtimestamp(b * _BUCKET_S, tz).date()] += n
    # A window counts as expected once it has ended: its start is at most now - win_s.
    ended_by = now_s - win_s + 1
    days: list[dict[str, Any]] = []
    for day in dates(first, last):
        a, b = day_bounds(day, tz)
        expected = sum(_aligned(max(a, f), min(b, t, ended_by), win_s) for f, t in intervals)
        pruned = retained_from_s is not None and a < retained_from_s
        got = None if pruned else received.get(day, 0)
        days.append({"date": day.isoformat(), "expected": expected, "received": got,
                     "share": None if got is None else _ratio(got, expected), "pruned": pruned})
    kept = [d for d in days if not d["pruned"]]
    exp_total = sum(int(d["expected"]) for d in kept)
    got_total = sum(int(d["received"]) for d in kept)
    return {"device_id": device_id, "from": first.isoformat(), "to": last.isoformat(), "timezone": tz.key,
            "window_s": win_s, "basis": basis, "expected": exp_total, "received": got_total,
            "share": _ratio(got_total, exp_total), "days": days, "definitions": DEFINITIONS}


def firmware_spread(conn: Connection, *, region: int | None = None, school_id: int | None = None,
                    now_s: float | None = None) -> dict:
    """Devices per firmware version (null: never sent a status), most common first.
    Raises UnknownRegion for a region code not in the registry."""
    now_s = time.time() if now_s is None else now_s
    fw = devices.c.fw
    n = func.count().label("n")
    online = func.sum(case((online_clause(now_s), 1), else_=0)).label("online")
    rows = conn.execute(filtered(_base_query([fw, n, online]), conn, now_s=now_s, region=region,
                                 school_id=school_id).group_by(fw)).all()
    total = sum(r.n for r in rows)
    versions = [{"fw": r.fw, "devices": r.n, "online": int(r.online or 0), "share": round(r.n / total, 4)}
                for r in sorted(rows, key=lambda r: (-r.n, r.fw or ""))]
    return {"region": region, "school_id": school_id, "total": total, "versions": versions}


def _new_boots(prev: Any | None, row: Any) -> int:
    """Reboots between two online statuses: the boot counter's rise (PROTOCOL.md
    `boot`), or 1 if it fell (flash wiped) or, without counters, uptime went back."""
    if prev is None:
        return 0
    if row.boot is not None and prev.boot is not None:
        return row.boot - prev.boot if row.boot >= prev.boot else 1
    if row.uptime_s is not None and prev.uptime_s is not None and row.uptime_s < prev.uptime_s:
        return 1
    return 0


def health(conn: Connection, device_id: str, first: date, last: date) -> dict | None:
    """Heap, RSSI, reboots, reset causes and sensor state changes over school-local days,
    from every status the device sent. None if the device is unknown."""
    if conn.execute(select(devices.c.device_id).where(devices.c.device_id == device_id)).first() is None:
        return None
    _, tz, _ = _device_zone(conn, device_id)
    lo_s, hi_s = day_bounds(first, tz)[0], day_bounds(last, tz)[1]
    h = status_history.c
    # The last online status before the range: a reboot right at its start still counts.
    prev = conn.execute(select(status_history).where(h.device_id == device_id, h.received_s < lo_s,
                                                     h.online.is_(True))
                        .order_by(h.received_s.desc()).limit(1)).first()
    rows = conn.execute(select(status_history).where(h.device_id == device_id, h.received_s >= lo_s,
                                                     h.received_s < hi_s).order_by(h.received_s)).all()
    per_day: dict[date, dict[str, Any]] = {
        d: {"date": d.isoformat(), "statuses": 0, "heap": [], "rssi": [], "reboots": 0, "offline": 0}
        for d in dates(first, last)}
    points, boots, sensor_changes = [], [], []
    causes: Counter[str] = Counter()
    sensors_before = json.loads(prev.sensors) if prev is not None and prev.sensors else {}
    for r in rows:
        day = per_day[datetime.fromtimestamp(r.received_s, tz).date()]
        day["statuses"] += 1
        sensors = json.loads(r.sensors) if r.sensors else None
        points.append({"at": iso(r.received_s), "online": r.online, "fw": r.fw, "boot": r.boot,
                       "reset": r.reset_cause, "uptime_s": r.uptime_s, "heap_free": r.heap_free,
                       "rssi": r.rssi, "outbox": r.outbox, "sensors": sensors})
        if not r.online:
            day["offline"] += 1
            continue
        if r.heap_free is not None:
            day["heap"].append(r.heap_free)
        if r.rssi is not None:
            day["rssi"].append(r.rssi)
        n = _new_boots(prev, r)
        if n:
            day["reboots"] += n
            causes[r.reset_cause or "unknown"] += 1
            boots.append({"at": iso(r.received_s), "boot": r.boot, "reset": r.reset_cause, "reboots": n})
        for name, state in sorted((sensors or {}).items()):
            if sensors_before.get(name) != state:
                sensor_changes.append({"at": iso(r.received_s), "sensor": name,
                                       "from": sensors_before.get(name), "to": state})
        sensors_before = sensors or sensors_before
        prev = r
    days = []
    for d in per_day.values():
        heap, rssi = d.pop("heap"), d.pop("rssi")
        days.append({**d, "heap_free_min": min(heap) if heap else None,
                     "heap_free_mean": round(sum(heap) / len(heap)) if heap else None,
                     "rssi_min": min(rssi) if rssi else None,
                     "rssi_mean": round(sum(rssi) / len(rssi), 1) if rssi else None})
    return {"device_id": device_id, "from": first.isoformat(), "to": last.isoformat(), "timezone": tz.key,
            "reboots": sum(d["reboots"] for d in days), "reset_causes": dict(sorted(causes.items())),
            "offline_events": sum(d["offline"] for d in days), "boots": boots,
            "sensor_changes": sensor_changes, "days": days, "points": points}


def points_csv_rows(result: dict) -> list[dict[str, Any]]:
    """The health series flattened for the CSV export."""
    return [{**{k: v for k, v in p.items() if k != "sensors"},
             "sensors": ";".join(f"{k}={v}" for k, v in sorted((p["sensors"] or {}).items()))}
            for p in result["points"]]
