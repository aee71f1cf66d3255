"""One room's school-local day window by window, for the room page timeline: the
windows of every device that was in the room then (assignment history), in ts order."""
from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from fleet_server.db.registry_schema import device_assignments
from fleet_server.db.schema import windows
from fleet_server.metrics.schooltime import day_bounds, zone


def room_windows(conn: Connection, *, room_id: int, day: date, timezone: str) -> list[dict[str, Any]]:
    """Windows stored for the room on `day`: t (seconds since local midnight), win,
    occupied share, co2_ppm, temp_c, rh_pct, lux (ceiling), noise_dba, device_id."""
    tz = zone(timezone)
    t0, t1 = day_bounds(day, tz)
    a = device_assignments.c
    spans = conn.execute(select(a.device_id, a.from_ts, a.to_ts).where(
        a.room_id == room_id, a.from_ts < t1, or_(a.to_ts.is_(None), a.to_ts > t0))).all()
    if not spans:
        return []
    w = windows.c
    conds = [and_(w.device_id == s.device_id, w.ts >= max(t0, s.from_ts),
                  w.ts < (t1 if s.to_ts is None else min(t1, s.to_ts))) for s in spans]
    rows = conn.execute(select(w.device_id, w.ts, w.win, w.occupied_s, w.co2_ppm, w.temp_c, w.rh_pct, w.lux,
                               w.noise_dba).where(or_(*conds)).order_by(w.ts)).all()
    return [{"t": r.ts - t0, "win": r.win, "occupied": r.occupied_s / r.win if r.win else 0.0,
             "co2_ppm": r.co2_ppm, "temp_c": r.temp_c, "rh_pct": r.rh_pct, "lux": r.lux,
             "noise_dba": r.noise_dba, "device_id": r.device_id} for r in rows]
