"""Device queries: the fleet as the API shows it. Online per DOMAIN.md "Device health":
last status online and a message within 3 x window; offline on the will or silence."""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, func, literal, not_, select

from fleet_server.db.registry_schema import SCHOOL_TIMEZONE, regions, rooms, schools
from fleet_server.db.schema import commands, devices
from fleet_server.metrics.schooltime import zone

DEFAULT_WINDOW_S = 60
ONLINE_WINDOWS = 3


class UnknownRegion(LookupError):
    pass


def iso(ts: float | None) -> str | None:
    """ISO 8601 with the schools' offset (Asia/Shanghai), like the metrics API."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, zone(SCHOOL_TIMEZONE)).isoformat(timespec="seconds")


def is_online(row: Any, now_s: float) -> bool:
    if not row.online or row.last_seen_s is None:
        return False
    win = row.win_s or DEFAULT_WINDOW_S
    return now_s - row.last_seen_s <= ONLINE_WINDOWS * win


def online_clause(now_s: float):
    """is_online() as SQL, so the state filter pages in the database."""
    c = devices.c
    limit_s = ONLINE_WINDOWS * func.coalesce(c.win_s, DEFAULT_WINDOW_S)
    return and_(c.online.is_(True), c.last_seen_s.is_not(None), c.last_seen_s >= literal(now_s) - limit_s)


def since_s(row: Any, now_s: float) -> float | None:
    """When the device's online state last changed."""
    if is_online(row, now_s):
        return row.online_since_s
    if row.online:  # went silent: offline since the silence limit passed
        return (row.last_seen_s or row.first_seen_s) + ONLINE_WINDOWS * (row.win_s or DEFAULT_WINDOW_S)
    return row.online_since_s


def region_counties(conn: Connection, code: int) -> list[int]:
    """County codes at or under a GB/T 2260 region (province, city or county); raises
    UnknownRegion. Walks `regions` (a hundred-odd rows) rather than trusting code
    prefixes, so a county moved between cities follows the table."""
    children: dict[int | None, list[int]] = {}
    levels: dict[int, str] = {}
    for r in conn.execute(select(regions.c.code, regions.c.parent_code, regions.c.level)):
        children.setdefault(r.parent_code, []).append(r.code)
        levels[r.code] = r.level
    if code not in levels:
        raise UnknownRegion(f"no region {code}")
    out, todo = [], [code]
    while todo:
        c = todo.pop()
        if levels[c] == "county":
            out.append(c)
        todo.extend(children.get(c, ()))
    return sorted(out)


def _base_query(columns: list) -> Select:
    return (select(*columns)
            .select_from(devices.outerjoin(rooms, rooms.c.id == devices.c.room_id)
                         .outerjoin(schools, schools.c.id == rooms.c.school_id)))


def filtered(query: Select, conn: Connection, *, now_s: float, state: str | None = None,
             assigned: bool | None = None, school_id: int | None = None, region: int | None = None) -> Select:
    """The device list filters, on a query over _base_query's joins."""
    if state == "online":
        query = query.where(online_clause(now_s))
    elif state == "offline":
        query = query.where(not_(online_clause(now_s)))
    if assigned is not None:
        query = query.where(devices.c.room_id.is_not(None) if assigned else devices.c.room_id.is_(None))
    if school_id is not None:
        query = query.where(rooms.c.school_id == school_id)
    if region is not None:
        query = query.where(schools.c.county_code.in_(region_counties(conn, region)))
    return query


_COLUMNS = [devices, rooms.c.code.label("room_code"), rooms.c.name.label("room_name"),
            rooms.c.school_id, schools.c.code.label("school_code"), schools.c.name.label("school_name"),
            schools.c.county_code]


def _public(row: Any, now_s: float) -> dict[str, Any]:
    sensors = json.loads(row.sensors) if row.sensors else None
    last_window = json.loads(row.last_window) if row.last_window else None
    room = school = None
    if row.room_id is not None and row.room_code is not None:
        room = {"id": row.room_id, "code": row.room_code, "name": row.room_name}
        school = {"id": row.school_id, "code": row.school_code, "name": row.school_name,
                  "county_code": row.county_code}
    return {
        "device_id": row.device_id,
        "online": is_online(row, now_s),
        "since": iso(since_s(row, now_s)),
        "last_seen": iso(row.last_seen_s),
        "first_seen": iso(row.first_seen_s),
        "assigned": row.room_id is not None,
        "room_id": row.room_id,
        "room": room,
        "school": school,
        "fw": row.fw,
        "hw": row.hw,
        "boot": row.boot,
        "reset": row.reset_cause,
        "uptime_s": row.uptime_s,
        "heap_free": row.heap_free,
        "rssi": row.rssi,
        "ip": row.ip,
        "clock": row.clock,
        "outbox": row.outbox,
        "sensors": sensors,
        "sensors_failed": sorted(k for k, v in (sensors or {}).items() if v == "failed"),
        "present": row.present,
        "present_ts": iso(row.present_ts),
        "windows_received": row.windows_received,
        "last_window": last_window,
        "last_window_at": iso(row.last_window_ts),
    }


def list_devices(conn: Connection, *, limit: int | None, offset: int, now_s: float | None = None,
                 state: str | None = None, assigned: bool | None = None, school_id: int | None = None,
                 region: int | None = None) -> tuple[int, list[dict]]:
    """(total matching, one page by device id; limit None = all). state: online|offline;
    assigned=False lists the unassigned devices; region: a GB/T 2260 code (raises UnknownRegion)."""
    now_s = time.time() if now_s is None else now_s
    def where(query: Select) -> Select:
        return filtered(query, conn, now_s=now_s, state=state, assigned=assigned, school_id=school_id,
                        region=region)

    total = conn.execute(where(_base_query([func.count()]))).scalar_one()
    rows = conn.execute(where(_base_query(_COLUMNS)).order_by(devices.c.device_id).limit(limit).offset(offset))
    return total, [_public(r, now_s) for r in rows]


def get_device(conn: Connection, device_id: str, now_s: float | None = None) -> dict | None:
    row = conn.execute(_base_query(_COLUMNS).where(devices.c.device_id == device_id)).first()
    return None if row is None else _public(row, time.time() if now_s is None else now_s)


def csv_row(item: dict[str, Any]) -> dict[str, Any]:
    """A device item flattened for the CSV export (one column per value)."""
    room, school, w = item["room"] or {}, item["school"] or {}, item["last_window"] or {}
    sensors = item["sensors"] or {}
    return {
        "device_id": item["device_id"], "online": item["online"], "since": item["since"],
        "last_seen": item["last_seen"], "school_id": school.get("id"), "school_code": school.get("code"),
        "school_name": school.get("name"), "county_code": school.get("county_code"),
        "room_id": item["room_id"], "room_code": room.get("code"), "room_name": room.get("name"),
        "fw": item["fw"], "hw": item["hw"], "boot": item["boot"], "reset": item["reset"],
        "heap_free": item["heap_free"], "rssi": item["rssi"], "outbox": item["outbox"],
        "sensors": ";".join(f"{k}={v}" for k, v in sorted(sensors.items())),
        "sensors_failed": ";".join(item["sensors_failed"]),
        "windows_received": item["windows_received"], "last_window_at": item["last_window_at"],
        "last_occupied_s": (w.get("occ") or {}).get("occupied_s"),
        "last_co2_ppm": (w.get("env") or {}).get("co2_ppm"),
    }


def new_command(op: str, args: dict, *, exp: int) -> dict:
    """A PROTOCOL.md command with a fresh id."""
    return {"v": 1, "id": "c-" + uuid.uuid4().hex[:12], "op": op, "args": args, "exp": exp}


def delete_command(conn: Connection, *, device_id: str, cmd_id: str) -> None:
    conn.execute(commands.delete().where((commands.c.device_id == device_id) & (commands.c.cmd_id == cmd_id)))


def record_command(conn: Connection, *, device_id: str, cmd: dict, created_s: float) -> None:
    conn.execute(commands.insert().values(
        cmd_id=cmd["id"], device_id=device_id, op=cmd["op"],
        args=json.dumps(cmd["args"]), created_s=created_s, exp=cmd["exp"]))


def list_commands(conn: Connection, device_id: str, limit: int = 50) -> list[dict]:
    rows = conn.execute(select(commands).where(commands.c.device_id == device_id)
                        .order_by(commands.c.created_s.desc().nulls_last()).limit(limit))
    return [{
        "id": r.cmd_id, "op": r.op, "args": json.loads(r.args) if r.args else None,
        "created": iso(r.created_s), "exp": iso(r.exp),
        "acked": iso(r.acked_s), "ok": r.ok, "err": r.err,
    } for r in rows]
