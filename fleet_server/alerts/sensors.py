"""The failed-sensor rule: a node's latest status (PROTOCOL.md "Status") reports a sensor
in state `failed` (fitted but erroring now, as opposed to `missing`). One alert per
device and sensor; resolved when a later status reports that sensor ok or missing."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select

from fleet_server.alerts import store
from fleet_server.db.registry_schema import rooms
from fleet_server.db.schema import devices

KIND = "sensor_failed"
_IN_CHUNK = 500


def _status_time(row: Any, now_s: float) -> float:
    """The node's own ts of the status, unless its clock is ahead of ours."""
    return float(row.status_ts) if row.status_ts is not None and row.status_ts <= now_s else now_s


def _sensor_states(row: Any) -> dict[str, str]:
    try:
        states = json.loads(row.sensors) if row.sensors else {}
    except ValueError:
        return {}
    return states if isinstance(states, dict) else {}


def evaluate_sensors(conn: Connection, now_s: float) -> store.Outcome:
    out = store.Outcome()
    current = store.open_alerts(conn, KIND)
    d = devices.c
    base = (select(d.device_id, d.sensors, d.status_ts, d.room_id, rooms.c.school_id)
            .outerjoin(rooms, rooms.c.id == d.room_id))
    # Devices reporting a failure: the LIKE lets the database skip the parsing for the
    # (usual) healthy ones.
    failing = conn.execute(base.where(d.sensors.like('%"failed"%'))).all()
    found: set[str] = set()
    for r in failing:
        for sensor, state in sorted(_sensor_states(r).items()):
            if state != "failed":
                continue
            subject = f"{r.device_id}/{sensor}"
            found.add(subject)
            existing = current.get(subject)
            store.upsert_open(conn, store.Finding(
                KIND, subject, opened_at=existing.opened_at if existing is not None else _status_time(r, now_s),
                last_seen_at=_status_time(r, now_s), device_id=r.device_id, room_id=r.room_id,
                school_id=r.school_id, detail={"sensor": sensor, "state": "failed"}), existing, out)

    gone = {s: row for s, row in current.items() if s not in found}
    if gone:
        ids = sorted({row.device_id for row in gone.values()})
        now_rows: dict[str, Any] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            now_rows.update({r.device_id: r for r in conn.execute(base.where(d.device_id.in_(ids[i:i + _IN_CHUNK])))})
        for row in gone.values():
            now_row = now_rows.get(row.device_id)
            sensor = str(store.detail_of(row).get("sensor"))
            now_state = _sensor_states(now_row).get(sensor) if now_row is not None else None
            store.resolve(conn, row, _status_time(now_row, now_s) if now_row is not None else now_s, out,
                          state=now_state or "unknown")
    return out
