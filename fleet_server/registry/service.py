"""Registry queries and changes, each taking a Connection: regions (loaded from the
shipped GB/T 2260 CSV), schools, rooms, school days, and device room assignments."""
from __future__ import annotations

import time
from collections.abc import Collection
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite

from fleet_server.db.registry_schema import (
    REGION_LEVELS, buildings, calendar_days, device_assignments, regions, rooms, schools,
)
from fleet_server.db.schema import devices
from fleet_server.metrics.coverage_keep import refresh_schools
from fleet_server.metrics.coverage_kept import forget as forget_coverage
from fleet_server.registry.csv_rows import mask_digits, read_table

REGIONS_CSV = Path(__file__).resolve().parent.parent / "data" / "zhejiang_regions.csv"
REGION_COLUMNS = ("code", "level", "parent_code", "name_zh", "name_en")
# An assignment may be back-dated (a node installed before it was registered) but not
# put in the future: devices.room_id says where the node is now.
FUTURE_SLACK_S = 300


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    pass


def _insert(conn: Connection, table):
    dialect = {"postgresql": postgresql, "sqlite": sqlite}.get(conn.dialect.name)
    if dialect is None:
        raise RuntimeError(f"unsupported database {conn.dialect.name}")
    return dialect.insert(table)


# -- regions --------------------------------------------------------------------------

def read_regions_csv(path: Path = REGIONS_CSV) -> list[dict[str, Any]]:
    rows, errors = read_table(path.read_text("utf-8"), REGION_COLUMNS, ())
    if errors:
        raise ValueError(f"{path}: " + "; ".join(f"line {e.line}: {e.message}" for e in errors))
    return [{"code": int(r["code"]), "level": r["level"],
             "parent_code": int(r["parent_code"]) if r["parent_code"] else None,
             "name_zh": r["name_zh"], "name_en": r["name_en"]} for _, r in rows]


def load_regions(conn: Connection, path: Path = REGIONS_CSV) -> dict[str, int]:
    """Bring the regions table in line with the CSV; a second call changes nothing.
    Regions missing from the CSV are kept, since schools may still point at them."""
    wanted = sorted(read_regions_csv(path), key=lambda r: REGION_LEVELS.index(r["level"]))  # parents first
    existing = {r.code: r for r in conn.execute(select(regions))}
    new = [r for r in wanted if r["code"] not in existing]
    changed = [r for r in wanted if r["code"] in existing
               and any(getattr(existing[r["code"]], k) != v for k, v in r.items())]
    if new:
        # Several API servers may start at once: the first one's rows win, no error.
        conn.execute(_insert(conn, regions).on_conflict_do_nothing(index_elements=["code"]), new)
    for r in changed:
        conn.execute(regions.update().where(regions.c.code == r["code"]).values(**r))
    return {"inserted": len(new), "updated": len(changed), "unchanged": len(wanted) - len(new) - len(changed)}


def _region(r: Any) -> dict[str, Any]:
    return {"code": r.code, "level": r.level, "parent_code": r.parent_code,
            "name_zh": r.name_zh, "name_en": r.name_en}


def list_regions(conn: Connection, *, level: str | None = None, parent: int | None = None) -> list[dict]:
    stmt = select(regions).order_by(regions.c.code)
    if level is not None:
        stmt = stmt.where(regions.c.level == level)
    if parent is not None:
        stmt = stmt.where(regions.c.parent_code == parent)
    return [_region(r) for r in conn.execute(stmt)]


def get_region(conn: Connection, code: int) -> dict | None:
    r = conn.execute(select(regions).where(regions.c.code == code)).first()
    return None if r is None else _region(r)


# -- schools and rooms ----------------------------------------------------------------

_county = regions.alias("county")
_city = regions.alias("city")


def _school_query():
    return (select(schools, _county.c.name_zh.label("county_name"), _city.c.code.label("city_code"),
                   _city.c.name_zh.label("city_name"))
            .join(_county, _county.c.code == schools.c.county_code)
            .outerjoin(_city, _city.c.code == _county.c.parent_code))


def _school(r: Any) -> dict[str, Any]:
    return {"id": r.id, "code": r.code, "name": r.name, "stage": r.stage,
            "county_code": r.county_code, "county": r.county_name,
            "city_code": r.city_code, "city": r.city_name,
            "day_start": r.day_start, "day_end": r.day_end,
            "weekdays": mask_digits(r.weekdays_mask), "timezone": r.timezone}


def list_schools(conn: Connection, *, county: int | None = None, city: int | None = None,
                 limit: int = 100, offset: int = 0, counties: Collection[int] | None = None,
                 school_ids: Collection[int] | None = None) -> tuple[int, list[dict]]:
    """counties / school_ids: confine the list (a user's region or school, fleet_server.auth)."""
    stmt = _school_query()
    if counties is not None:
        stmt = stmt.where(schools.c.county_code.in_(sorted(counties)))
    if school_ids is not None:
        stmt = stmt.where(schools.c.id.in_(sorted(school_ids)))
    if county is not None:
        stmt = stmt.where(schools.c.county_code == county)
    if city is not None:
        stmt = stmt.where(_county.c.parent_code == city)
    total = conn.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
    rows = conn.execute(stmt.order_by(schools.c.code).limit(limit).offset(offset))
    return total, [_school(r) for r in rows]


def get_school(conn: Connection, school_id: int) -> dict | None:
    r = conn.execute(_school_query().where(schools.c.id == school_id)).first()
    if r is None:
        return None
    out = _school(r)
    counts = conn.execute(select(
        func.count(), func.count().filter(rooms.c.teaching_space.is_(True)),
        func.count().filter(rooms.c.new_style.is_(True))).where(rooms.c.school_id == school_id)).one()
    instrumented = conn.execute(
        select(func.count(func.distinct(device_assignments.c.room_id)))
        .join(rooms, rooms.c.id == device_assignments.c.room_id)
        .where(rooms.c.school_id == school_id, device_assignments.c.to_ts.is_(None))).scalar_one()
    out.update(rooms=counts[0], teaching_spaces=counts[1], new_style_spaces=counts[2],
               rooms_with_device=instrumented)
    return out


def list_rooms(conn: Connection, school_id: int) -> list[dict]:
    """The school's rooms, each with its building and the devices now in it."""
    now_in: dict[int, list[str]] = {}
    for a in conn.execute(select(device_assignments.c.room_id, device_assignments.c.device_id)
                          .join(rooms, rooms.c.id == device_assignments.c.room_id)
                          .where(rooms.c.school_id == school_id, device_assignments.c.to_ts.is_(None))
                          .order_by(device_assignments.c.device_id)):
        now_in.setdefault(a.room_id, []).append(a.device_id)
    stmt = (select(rooms, buildings.c.code.label("building_code"), buildings.c.name.label("building_name"))
            .outerjoin(buildings, buildings.c.id == rooms.c.building_id)
            .where(rooms.c.school_id == school_id).order_by(rooms.c.code))
    return [{"id": r.id, "code": r.code, "name": r.name, "type": r.type,
             "building_code": r.building_code, "building_name": r.building_name,
             "capacity": r.capacity, "floor_area_m2": r.floor_area_m2, "new_style": r.new_style,
             "lux_factor": r.lux_factor, "teaching_space": r.teaching_space,
             "device_ids": now_in.get(r.id, [])} for r in conn.execute(stmt)]


def school_days(conn: Connection, school_id: int, first: date, last: date) -> list[date]:
    """Dates in [first, last] the school teaches: its weekdays, minus holidays, plus
    make-up workdays. A school's own calendar row beats the all-schools row."""
    school = conn.execute(select(schools.c.weekdays_mask).where(schools.c.id == school_id)).first()
    if school is None:
        raise NotFound(f"no school {school_id}")
    c = calendar_days.c
    kinds: dict[date, str] = {}
    rows = conn.execute(select(c.school_id, c.date, c.kind)
                        .where(c.date.between(first, last),
                               (c.school_id == school_id) | c.school_id.is_(None))
                        .order_by(c.school_id.is_not(None)))   # all-schools rows first, then the school's
    for r in rows:
        kinds[r.date] = r.kind
    days, day = [], first
    while day <= last:
        kind = kinds.get(day)
        if kind == "workday" or (kind != "holiday" and school.weekdays_mask >> day.weekday() & 1):
            days.append(day)
        day += timedelta(days=1)
    return days


# -- device assignments ---------------------------------------------------------------

def assign_device(conn: Connection, device_id: str, room_id: int | None, at_ts: int,
                  *, now_s: float | None = None) -> dict[str, Any]:
    """Move the device into `room_id` from `at_ts` (None: take it out of service).
    Closes the open assignment at at_ts and opens a new one, so windows before at_ts
    stay with the old room. A device not yet seen gets its devices row now."""
    now_s = time.time() if now_s is None else now_s
    if at_ts > now_s + FUTURE_SLACK_S:
        raise Conflict(f"from_ts {at_ts} is in the future; assign when the node is installed")
    if room_id is not None and conn.execute(select(rooms.c.id).where(rooms.c.id == room_id)).first() is None:
        raise NotFound(f"no room {room_id}")
    conn.execute(_insert(conn, devices).on_conflict_do_nothing(index_elements=["device_id"]),
                 {"device_id": device_id, "first_seen_s": float(at_ts), "windows_received": 0, "online": False})
    a = device_assignments.c
    last = conn.execute(select(device_assignments).where(a.device_id == device_id)
                        .order_by(a.from_ts.desc(), a.id.desc()).limit(1)).first()
    if last is not None and last.to_ts is None and last.room_id == room_id:
        return current_assignment(conn, device_id)        # already there: PUT is idempotent
    if last is not None and at_ts < (last.to_ts if last.to_ts is not None else last.from_ts):
        raise Conflict(f"device {device_id} has history up to {max(last.from_ts, last.to_ts or 0)}; "
                       "a move cannot be dated before it")
    if last is not None and last.to_ts is None:
        if at_ts == last.from_ts:
            # Corrected at the same instant: nothing was recorded in the wrong room.
            conn.execute(device_assignments.delete().where(a.id == last.id))
        else:
            conn.execute(device_assignments.update().where(a.id == last.id).values(to_ts=at_ts))
    if room_id is not None:
        conn.execute(device_assignments.insert().values(device_id=device_id, room_id=room_id,
                                                        from_ts=at_ts, to_ts=None))
    conn.execute(devices.update().where(devices.c.device_id == device_id).values(room_id=room_id))
    # Coverage's per-school node counts, for the room left and the room entered.
    changed = {x for x in (room_id, last.room_id if last is not None and last.to_ts is None else None)
               if x is not None}
    if changed:
        school_ids = list(conn.execute(select(rooms.c.school_id).where(rooms.c.id.in_(changed))).scalars())
        refresh_schools(conn, school_ids)
        forget_coverage(conn, school_ids)
    return current_assignment(conn, device_id)


def current_assignment(conn: Connection, device_id: str) -> dict[str, Any]:
    a = device_assignments.c
    r = conn.execute(select(a.room_id, a.from_ts, rooms.c.school_id, rooms.c.code)
                     .join(rooms, rooms.c.id == a.room_id)
                     .where(a.device_id == device_id, a.to_ts.is_(None))).first()
    if r is None:
        return {"device_id": device_id, "room_id": None, "school_id": None, "room_code": None, "from_ts": None}
    return {"device_id": device_id, "room_id": r.room_id, "school_id": r.school_id,
            "room_code": r.code, "from_ts": r.from_ts}


def room_at(conn: Connection, device_id: str, ts: int) -> int | None:
    """The room the device was in at ts (Unix s), from the assignment history."""
    a = device_assignments.c
    return conn.execute(select(a.room_id).where(
        a.device_id == device_id, a.from_ts <= ts, (a.to_ts.is_(None)) | (a.to_ts > ts))
        .order_by(a.from_ts.desc()).limit(1)).scalar()


def assignment_history(conn: Connection, device_id: str) -> list[dict]:
    a = device_assignments.c
    rows = conn.execute(select(a.room_id, a.from_ts, a.to_ts, rooms.c.school_id, rooms.c.code)
                        .join(rooms, rooms.c.id == a.room_id)
                        .where(a.device_id == device_id).order_by(a.from_ts, a.id))
    return [{"room_id": r.room_id, "school_id": r.school_id, "room_code": r.code,
             "from_ts": r.from_ts, "to_ts": r.to_ts} for r in rows]

