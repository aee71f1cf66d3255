"""The offline rule: a node assigned to a room that has been offline (DOMAIN.md "Device
health": its will, or no message within 3 x window) for more than 30 minutes counted
only inside its school's hours on school days. Nights, weekends and holidays do not
count, so a node that dies on Friday evening is raised 30 minutes into Monday."""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from fleet_server.alerts import store
from fleet_server.alerts.rules import OFFLINE_AFTER_SCHOOL_S, OFFLINE_COUNT_BACK_DAYS
from fleet_server.db.registry_schema import device_assignments, rooms
from fleet_server.db.schema import devices
from fleet_server.metrics.schooltime import SchoolHours, iso_local, load_hours, school_days
from fleet_server.services.devices import DEFAULT_WINDOW_S, ONLINE_WINDOWS, is_online

KIND = "offline"


def offline_since(row: Any) -> tuple[float, str]:
    """(when the node went offline, why) for a node that is offline now; the rule of
    fleet_server.services.devices ("since"), with a cause for the alert."""
    if row.last_seen_s is None:
        return float(row.online_since_s or row.first_seen_s), "never_seen"
    if row.online:      # no will, just silence: offline once 3 windows passed without a message
        return row.last_seen_s + ONLINE_WINDOWS * (row.win_s or DEFAULT_WINDOW_S), "silence"
    return float(row.online_since_s or row.last_seen_s), "will"


def school_seconds(hours: SchoolHours, days: set[date], start_s: float, end_s: float,
                   threshold_s: float) -> tuple[float, float | None]:
    """(school-hours seconds within [start_s, end_s), the instant the count first went
    past threshold_s or None). School hours are the school's day_start-day_end, local
    time, on its school days (weekdays minus holidays plus make-up days)."""
    tz = hours.tz
    day = datetime.fromtimestamp(start_s, tz).date()
    last = datetime.fromtimestamp(end_s, tz).date()
    total = 0.0
    crossed = None
    while day <= last:
        if day in days:
            s, e = hours.bounds(day)
            lo, hi = max(s, start_s), min(e, end_s)
            if hi > lo:
                if crossed is None and total + (hi - lo) > threshold_s:
                    crossed = lo + (threshold_s - total)
                total += hi - lo
        day += timedelta(days=1)
    return total, crossed


class SchoolTime:
    """One school's school-hours spans over the days of a pass, for the counts of all its
    offline nodes: school_seconds' figures, from the spans found by bisection and summed
    through prefix sums instead of walking every day for every node (a province has
    ~95,000 nodes; bench/jobs.py). The sums are exact either way (whole seconds, and
    instants with ~2^-22 s steps, totals far below 2^31 s), so the order of the additions
    does not change them."""

    def __init__(self, hours: SchoolHours, days: set[date]) -> None:
        self.spans = [hours.bounds(day) for day in sorted(days)]
        self.starts = [s for s, _ in self.spans]
        self.ends = [e for _, e in self.spans]
        self.prefix = [0]
        for s, e in self.spans:
            self.prefix.append(self.prefix[-1] + (e - s))

    def count(self, start_s: float, end_s: float, threshold_s: float) -> tuple[float, float | None]:
        spans, n = self.spans, len(self.spans)
        j = bisect_right(self.ends, start_s)          # the first span ending after start_s
        total, crossed = 0.0, None
        while j < n and spans[j][0] < end_s and crossed is None:
            s, e = spans[j]
            lo, hi = max(s, start_s), min(e, end_s)
            if hi > lo:
                if total + (hi - lo) > threshold_s:
                    crossed = lo + (threshold_s - total)
                total += hi - lo
            j += 1
        k = bisect_left(self.starts, end_s)           # spans[j:k] start before end_s
        if k > j:
            total += self.prefix[k - 1] - self.prefix[j]      # whole spans j .. k-2
            s, e = spans[k - 1]
            lo, hi = max(s, start_s), min(e, end_s)
            if hi > lo:
                total += hi - lo
        return total, crossed


def _assigned_devices(conn: Connection) -> list[Any]:
    """Every node in a room now, with what decides online and the room's school."""
    d, a = devices.c, device_assignments.c
    return list(conn.execute(
        select(d.device_id, d.online, d.last_seen_s, d.win_s, d.online_since_s, d.first_seen_s,
               a.room_id, a.from_ts, rooms.c.school_id)
        .join(device_assignments, (a.device_id == d.device_id) & a.to_ts.is_(None))
        .join(rooms, rooms.c.id == a.room_id)))


def evaluate_offline(conn: Connection, now_s: float) -> store.Outcome:
    out = store.Outcome()
    current = store.open_alerts(conn, KIND)
    assigned = _assigned_devices(conn)
    offline = []
    for r in assigned:
        if is_online(r, now_s):
            continue
        since, cause = offline_since(r)
        # In the room's school time only from when the node was put in that room.
        offline.append((r, max(since, float(r.from_ts)), cause))
    hours = load_hours(conn, {r.school_id for r, _, _ in offline})
    floor_s = now_s - OFFLINE_COUNT_BACK_DAYS * 86400
    days: dict[int, set[date]] = {}
    if offline:
        # UTC dates one day wider: covers every school's local date of these instants.
        first = datetime.fromtimestamp(max(min(s for _, s, _ in offline), floor_s), UTC).date() - timedelta(days=1)
        last = datetime.fromtimestamp(now_s, UTC).date() + timedelta(days=1)
        days = {k: set(v) for k, v in school_days(conn, hours, first, last).items()}

    school_time: dict[int, SchoolTime] = {}
    still_offline: set[str] = set()
    updates: list[tuple[int, store.Finding]] = []      # open alerts still holding: written at once
    for r, since, cause in offline:
        h = hours[r.school_id]
        existing = current.get(r.device_id)
        since_iso = iso_local(since, h.tz)
        if existing is not None and store.detail_of(existing).get("offline_since") != since_iso:
            # It came back and went off again between two runs: that outage ended.
            store.resolve(conn, existing, since, out, resolution="online")
            existing = None
        st = school_time.get(r.school_id)
        if st is None:
            st = school_time[r.school_id] = SchoolTime(h, days.get(r.school_id, set()))
        counted_s, crossed_s = st.count(max(since, floor_s), now_s, OFFLINE_AFTER_SCHOOL_S)
        if existing is not None:
            opened_s = existing.opened_at
        elif crossed_s is not None:
            opened_s = crossed_s
        else:
            continue            # offline, but not yet for 30 school minutes
        still_offline.add(r.device_id)
        finding = store.Finding(
            KIND, r.device_id, opened_at=opened_s,
            last_seen_at=now_s, device_id=r.device_id, room_id=r.room_id, school_id=r.school_id,
            detail={"offline_since": since_iso, "cause": cause,
                    "school_minutes_offline": round(counted_s / 60, 1)})
        if existing is None:
            store.insert(conn, finding, out)
        else:
            updates.append((existing.id, finding))
    store.update_open_many(conn, updates, out)

    in_room = {r.device_id for r in assigned}
    for device_id, row in current.items():
        if device_id not in still_offline:
            store.resolve(conn, row, now_s, out, resolution="online" if device_id in in_room else "unassigned")
    return out
