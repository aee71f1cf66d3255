"""Alert queries for the API: the filtered, paginated list (or every row for CSV), one
alert, and acknowledging one. Times render as ISO 8601 in the school's timezone."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, Select, func, select

from fleet_server.db.alerts_schema import alerts
from fleet_server.db.registry_schema import regions, rooms, schools
from fleet_server.metrics.schooltime import iso_local, zone

STATES = ("open", "acked", "resolved", "all")
CSV_MAX_ROWS = 100_000


def region_counties(conn: Connection, code: int) -> set[int] | None:
    """The region and every region under it (GB/T 2260: province -> city -> county), as
    the codes a school's county_code may take; None if there is no such region."""
    r = regions.c
    if conn.execute(select(r.code).where(r.code == code)).first() is None:
        return None
    found, frontier = {code}, {code}
    while frontier:
        frontier = set(conn.execute(select(r.code).where(r.parent_code.in_(sorted(frontier)))).scalars()) - found
        found |= frontier
    return found


def _query(*, state: str, kind: str | None, school_id: int | None, counties: set[int] | None,
           device_id: str | None) -> Select:
    a = alerts.c
    stmt = (select(alerts, rooms.c.code.label("room_code"), rooms.c.name.label("room_name"),
                   schools.c.name.label("school_name"), schools.c.timezone)
            .outerjoin(rooms, rooms.c.id == a.room_id).outerjoin(schools, schools.c.id == a.school_id))
    if state == "open":
        stmt = stmt.where(a.resolved_at.is_(None), a.acked_at.is_(None))
    elif state == "acked":
        stmt = stmt.where(a.resolved_at.is_(None), a.acked_at.is_not(None))
    elif state == "resolved":
        stmt = stmt.where(a.resolved_at.is_not(None))
    if kind is not None:
        stmt = stmt.where(a.kind == kind)
    if school_id is not None:
        stmt = stmt.where(a.school_id == school_id)
    if counties is not None:
        stmt = stmt.where(schools.c.county_code.in_(sorted(counties)))
    if device_id is not None:
        stmt = stmt.where(a.device_id == device_id)
    return stmt


def state_of(row: Any) -> str:
    if row.resolved_at is not None:
        return "resolved"
    return "acked" if row.acked_at is not None else "open"


def _public(row: Any) -> dict[str, Any]:
    tz = zone(row.timezone or "UTC")     # an alert of a device in no room has no school

    def iso(ts: float | None) -> str | None:
        return None if ts is None else iso_local(ts, tz)

    return {
        "id": row.id, "kind": row.kind, "severity": row.severity, "state": state_of(row),
        "device_id": row.device_id, "room_id": row.room_id, "room_code": row.room_code,
        "room_name": row.room_name, "school_id": row.school_id, "school_name": row.school_name,
        "opened_at": iso(row.opened_at), "last_seen_at": iso(row.last_seen_at),
        "resolved_at": iso(row.resolved_at), "acked_at": iso(row.acked_at),
        "acked_by": row.acked_by, "ack_note": row.ack_note,
        "detail": json.loads(row.detail or "{}"),
    }


def list_alerts(conn: Connection, *, state: str = "all", kind: str | None = None, school_id: int | None = None,
                counties: set[int] | None = None, device_id: str | None = None,
                limit: int = 100, offset: int = 0) -> dict[str, Any]:
    """{total, limit, offset, items}: newest first."""
    stmt = _query(state=state, kind=kind, school_id=school_id, counties=counties, device_id=device_id)
    total = conn.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    rows = conn.execute(stmt.order_by(alerts.c.opened_at.desc(), alerts.c.id.desc()).limit(limit).offset(offset))
    return {"total": total, "limit": limit, "offset": offset, "items": [_public(r) for r in rows]}


def alert_rows(conn: Connection, *, state: str = "all", kind: str | None = None, school_id: int | None = None,
               counties: set[int] | None = None, device_id: str | None = None) -> list[dict[str, Any]]:
    """Every matching alert (up to CSV_MAX_ROWS) as flat rows for the CSV export."""
    stmt = _query(state=state, kind=kind, school_id=school_id, counties=counties, device_id=device_id).order_by(alerts.c.opened_at.desc(), alerts.c.id.desc()).limit(CSV_MAX_ROWS)
    out = []
    for r in conn.execute(stmt):
        item = _public(r)
        item["detail"] = json.dumps(item["detail"], ensure_ascii=False, sort_keys=True)
        out.append(item)
    return out


def get_alert(conn: Connection, alert_id: int) -> dict[str, Any] | None:
    row = conn.execute(_query(state="all", kind=None, school_id=None, counties=None, device_id=None)
                       .where(alerts.c.id == alert_id)).first()
    return None if row is None else _public(row)


def ack(conn: Connection, alert_id: int, *, by: str, note: str | None, now_s: float) -> dict[str, Any] | None:
    """Acknowledge an alert (open or already resolved). Idempotent: the first ack is kept,
    a repeat returns the alert as it is. None if there is no such alert."""
    a = alerts.c
    conn.execute(alerts.update().where(a.id == alert_id, a.acked_at.is_(None))
                 .values(acked_at=now_s, acked_by=by, ack_note=note))
    return get_alert(conn, alert_id)
