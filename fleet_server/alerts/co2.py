"""The CO2 rule: a room whose window mean CO2 is over 1500 ppm in occupied windows
(DOMAIN.md "Environment thresholds", GB/T 17226-2017). Consecutive breaching windows
of the room make one episode, one alert, with its peak, start and end.

Recent data only: each run reads the breaching windows of the last 30 minutes of the
devices that delivered in that time (the (device_id, ts) index), then, for the few
rooms with a breach or an open episode, their windows since the episode's last breach."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, or_, select

from fleet_server.alerts import store
from fleet_server.alerts.rules import CO2_ALERT_PPM, CO2_LOOKBACK_S, CO2_QUIET_S
from fleet_server.db.alerts_schema import alerts
from fleet_server.db.registry_schema import SCHOOL_TIMEZONE, device_assignments, rooms
from fleet_server.db.schema import devices, windows
from fleet_server.metrics.schooltime import iso_local, load_hours, zone

KIND = "co2_breach"
# An open episode left behind (the evaluator was stopped) is followed up this far back.
FOLLOW_UP_S = 86400
_IN_CHUNK = 500


def subject(room_id: int) -> str:
    return f"room:{room_id}"


@dataclass
class Episode:
    start: float
    end: float              # end of its last breaching window
    peak_ppm: int
    windows: int
    peak_device_id: str | None = None
    alert: Any = None       # the open alert it continues
    ended: str | None = None    # clear | no_data


def _chunks(values: list, size: int = _IN_CHUNK):
    for i in range(0, len(values), size):
        yield values[i:i + size]


def _history(conn: Connection, device_ids: list[str]) -> dict[str, list[Any]]:
    a = device_assignments.c
    out: dict[str, list[Any]] = {}
    for part in _chunks(device_ids):
        for h in conn.execute(select(a.device_id, a.room_id, a.from_ts, a.to_ts).where(a.device_id.in_(part))):
            out.setdefault(h.device_id, []).append(h)
    return out


def _room_at(history: dict[str, list[Any]], device_id: str, ts: int) -> int | None:
    for h in history.get(device_id, ()):
        if h.from_ts <= ts and (h.to_ts is None or h.to_ts > ts):
            return h.room_id
    return None


def _windows(conn: Connection, device_ids: list[str], since_ts: float, *, breach_only: bool) -> list[Any]:
    w = windows.c
    out: list[Any] = []
    for part in _chunks(sorted(device_ids)):
        stmt = (select(w.device_id, w.ts, w.win, w.occupied_s, w.co2_ppm)
                .where(w.device_id.in_(part), w.ts >= int(since_ts), w.co2_ppm.is_not(None)))
        if breach_only:
            stmt = stmt.where(w.co2_ppm > CO2_ALERT_PPM, w.occupied_s > 0)
        out += conn.execute(stmt).all()
    return out


def _is_breach(w: Any) -> bool:
    return w.occupied_s > 0 and w.co2_ppm > CO2_ALERT_PPM


def _latest_alerts(conn: Connection, room_ids: list[int]) -> dict[int, Any]:
    """room -> its newest CO2 alert, open or resolved (the uq (kind, subject, opened_at) index)."""
    a = alerts.c
    out: dict[int, Any] = {}
    for part in _chunks(sorted(room_ids)):
        rows = conn.execute(select(alerts).where(a.kind == KIND, a.subject.in_([subject(r) for r in part]))
                            .order_by(a.opened_at.desc()))
        for r in rows:
            out.setdefault(int(r.subject.split(":", 1)[1]), r)
    return out


def episodes(room_windows: list[Any], from_ts: float, now_s: float, carried: Episode | None) -> list[Episode]:
    """Walk a room's windows (sorted by ts) from `from_ts`, continuing `carried` (the
    open episode): a breaching window starts or extends an episode; a window with a CO2
    reading and no breach, starting at or after the episode's end, ends it there."""
    out: list[Episode] = []
    ep = carried
    for w in room_windows:
        if w.ts < from_ts:
            continue            # counted by an earlier run (or before the latest episode's end)
        if _is_breach(w):
            if ep is None:
                ep = Episode(start=float(w.ts), end=float(w.ts + w.win), peak_ppm=w.co2_ppm, windows=1,
                             peak_device_id=w.device_id)
            else:
                ep.end = max(ep.end, float(w.ts + w.win))
                if w.co2_ppm > ep.peak_ppm:
                    ep.peak_ppm, ep.peak_device_id = w.co2_ppm, w.device_id
                ep.windows += 1
        elif ep is not None and w.ts >= ep.end:
            ep.ended = "clear"
            out.append(ep)
            ep = None
    if ep is not None:
        if now_s - ep.end > CO2_QUIET_S:
            ep.ended = "no_data"
        out.append(ep)
    return out


def evaluate_co2(conn: Connection, now_s: float) -> store.Outcome:
    out = store.Outcome()
    horizon = now_s - CO2_LOOKBACK_S
    current = {int(s.split(":", 1)[1]): row for s, row in store.open_alerts(conn, KIND).items()}
    d, a = devices.c, device_assignments.c
    recent = list(conn.execute(select(d.device_id).where(d.last_window_ts >= int(horizon))).scalars())
    history = _history(conn, recent)
    breach_rooms = {room for w in _windows(conn, recent, horizon, breach_only=True)
                    if (room := _room_at(history, w.device_id, w.ts)) is not None}
    room_ids = sorted(breach_rooms | set(current))
    if not room_ids:
        return out
    latest = _latest_alerts(conn, [r for r in room_ids if r not in current])
    # Where each room's walk starts: after everything an alert already counted.
    from_ts: dict[int, float] = {}
    for room in room_ids:
        if room in current:
            from_ts[room] = max(current[room].last_seen_at, now_s - FOLLOW_UP_S)
        else:
            prev = latest.get(room)
            from_ts[room] = max(horizon, prev.last_seen_at if prev is not None else horizon)
    since = min(from_ts.values())
    members = set()
    for part in _chunks(room_ids):
        members |= set(conn.execute(select(a.device_id).where(
            a.room_id.in_(part), or_(a.to_ts.is_(None), a.to_ts > int(since)))).scalars())
    history = _history(conn, sorted(members))
    by_room: dict[int, list[Any]] = {}
    for w in _windows(conn, sorted(members), since, breach_only=False):
        room = _room_at(history, w.device_id, w.ts)
        if room in from_ts:
            by_room.setdefault(room, []).append(w)

    schools = dict(conn.execute(select(rooms.c.id, rooms.c.school_id).where(rooms.c.id.in_(room_ids))).all())
    hours = load_hours(conn, set(schools.values()))
    for room in room_ids:
        tz = hours[schools[room]].tz if schools.get(room) in hours else zone(SCHOOL_TIMEZONE)
        open_row = current.get(room)
        carried = None
        if open_row is not None:
            prior = store.detail_of(open_row)
            carried = Episode(open_row.opened_at, open_row.last_seen_at, prior.get("peak_co2_ppm", 0),
                              prior.get("windows", 0), peak_device_id=open_row.device_id, alert=open_row)
        for ep in episodes(sorted(by_room.get(room, []), key=lambda w: (w.ts, w.device_id)),
                           from_ts[room], now_s, carried):
            resolved = ep.end if ep.ended else None
            f = store.Finding(KIND, subject(room), opened_at=ep.start, last_seen_at=ep.end, room_id=room,
                              device_id=ep.peak_device_id,
                              school_id=schools.get(room), resolved_at=resolved,
                              detail={"peak_co2_ppm": ep.peak_ppm, "threshold_ppm": CO2_ALERT_PPM,
                                      "windows": ep.windows, "start": iso_local(ep.start, tz),
                                      "end": iso_local(ep.end, tz), "ended": ep.ended})
            if ep.alert is None:
                store.insert(conn, f, out)
            elif resolved is not None or ep.end != ep.alert.last_seen_at:
                store.update(conn, ep.alert.id, f, out)
    return out
