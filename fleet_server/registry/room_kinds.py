"""Import kinds keyed by room: rooms (by school code + room code, creating their
buildings on the way) and timetable periods (by room, weekday and start time)."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, insert, select

from fleet_server.db.registry_schema import ROOM_TYPES, buildings, rooms, timetable_periods
from fleet_server.metrics.coverage_keep import refresh_new_style_rooms, refresh_schools
from fleet_server.metrics.coverage_kept import forget as forget_coverage
from fleet_server.registry import csv_rows as cells
from fleet_server.registry.import_base import (
    ImportResult, Item, RowErrors, check_duplicates, chunks, school_ids, upsert,
)

ROOM_COLUMNS = (("school_code", "room_code", "name", "type"),
                ("building_code", "building_name", "capacity", "floor_area_m2", "new_style",
                 "lux_factor", "teaching_space"))
TIMETABLE_COLUMNS = (("school_code", "room_code", "weekday", "start", "end"), ("label",))
ROOM_VALUE_COLUMNS = ("building_id", "name", "type", "capacity", "floor_area_m2", "new_style",
                      "lux_factor", "teaching_space")

# Plausible bounds, to catch unit and typing slips (a floor area in cm2, capacity 4000).
CAPACITY_MAX = 1000
FLOOR_AREA_MAX_M2 = 10000.0
LUX_FACTOR_RANGE = (0.05, 20.0)


def _school_cell(errors: RowErrors, line: int, row: dict, known: dict) -> dict | None:
    code = errors.cell(line, row, "school_code", lambda c: cells.text(c, max_chars=32))
    if code is not None and code not in known:
        errors.add(line, "school_code", f"school {code} is not in the registry; import it with the schools file first")
        return None
    return known.get(code) if code is not None else None


# -- rooms ----------------------------------------------------------------------------

def parse_rooms(conn: Connection, rows: list, errors: RowErrors) -> list[Item]:
    known = school_ids(conn, {row["school_code"] for _, row in rows if row["school_code"]})
    building_names: dict[tuple[str, str], tuple[str, int]] = {}
    items = []
    for line, row in rows:
        school = _school_cell(errors, line, row, known)
        room_code = errors.cell(line, row, "room_code", lambda c: cells.text(c, max_chars=32))
        name = errors.cell(line, row, "name", cells.text)
        room_type = errors.cell(line, row, "type", lambda c: cells.one_of(c, ROOM_TYPES))
        building_code = errors.cell(line, row, "building_code", lambda c: cells.text(c, required=False, max_chars=32))
        building_name = errors.cell(line, row, "building_name", lambda c: cells.text(c, required=False))
        if building_name and not building_code and not row.get("building_code"):
            errors.add(line, "building_code", "required when building_name is given")
        capacity = errors.cell(line, row, "capacity", lambda c: cells.integer(c, 1, CAPACITY_MAX, required=False))
        area_m2 = errors.cell(line, row, "floor_area_m2",
                              lambda c: cells.number(c, 1.0, FLOOR_AREA_MAX_M2, required=False))
        new_style = errors.cell(line, row, "new_style", cells.boolean)
        if room_type == "new_style":
            if new_style is False:
                errors.add(line, "new_style", "a room of type new_style is a new-style teaching space; "
                           "leave new_style empty or set it to 1")
            new_style = True
        elif new_style is None:
            new_style = False
        lux_factor = errors.cell(line, row, "lux_factor",
                                 lambda c: cells.number(c, *LUX_FACTOR_RANGE) if c else 1.0)
        teaching = errors.cell(line, row, "teaching_space", cells.boolean)
        school_code = row["school_code"]
        if building_code and building_name:
            seen = building_names.setdefault((school_code, building_code), (building_name, line))
            if seen[0] != building_name:
                errors.add(line, "building_name", f"building {building_code} is named {seen[0]!r} "
                           f"on line {seen[1]}, {building_name!r} here")
        if errors.line_ok(line) and school is not None:
            items.append(Item(line, (school_code, room_code), {
                "school_id": school["id"], "building_id": None, "code": room_code, "name": name,
                "type": room_type, "capacity": capacity, "floor_area_m2": area_m2,
                "new_style": new_style, "lux_factor": lux_factor,
                "teaching_space": True if teaching is None else teaching,
            }, db_key=(school["id"], room_code),
                refs={"building_code": building_code, "building_name": building_name}))
    return check_duplicates(items, errors, "room_code", lambda k: f"room {k[1]} of school {k[0]}")


def _write_buildings(conn: Connection, items: list[Item], school_id_list: list[int],
                     result: ImportResult) -> dict[tuple[int, str], int]:
    """Create the buildings the rooms name, rename those given a new name; returns
    (school_id, building code) -> building id."""
    wanted: dict[tuple[int, str], str | None] = {}
    for item in items:
        code = item.refs["building_code"]
        if code:
            key = (item.values["school_id"], code)
            wanted[key] = wanted.get(key) or item.refs["building_name"]
    existing = {}
    for part in chunks(school_id_list):
        for r in conn.execute(select(buildings).where(buildings.c.school_id.in_(part))):
            existing[(r.school_id, r.code)] = r
    new = [{"school_id": s, "code": c, "name": n} for (s, c), n in wanted.items() if (s, c) not in existing]
    renamed = [(existing[k].id, n) for k, n in wanted.items()
               if k in existing and n and existing[k].name != n]
    if new:
        conn.execute(insert(buildings), new)
    for building_id, name in renamed:
        conn.execute(buildings.update().where(buildings.c.id == building_id).values(name=name))
    result.buildings_inserted += len(new)
    result.buildings_updated += len(renamed)
    ids = {k: r.id for k, r in existing.items()}
    if new:
        for part in chunks(school_id_list):
            for r in conn.execute(select(buildings.c.id, buildings.c.school_id, buildings.c.code)
                                  .where(buildings.c.school_id.in_(part))):
                ids[(r.school_id, r.code)] = r.id
    return ids


def write_rooms(conn: Connection, items: list[Item], result: ImportResult) -> None:
    school_id_list = sorted({i.values["school_id"] for i in items})
    building_ids = _write_buildings(conn, items, school_id_list, result)
    for item in items:
        code = item.refs["building_code"]
        item.values["building_id"] = building_ids[(item.values["school_id"], code)] if code else None
    existing: dict[tuple, Any] = {}
    for part in chunks(school_id_list):
        for r in conn.execute(select(rooms).where(rooms.c.school_id.in_(part))):
            existing[(r.school_id, r.code)] = r
    changed_schools = {item.values["school_id"] for item in items
                       if (old := existing.get(item.db_key)) is None
                       or any(getattr(old, c) != item.values[c] for c in ROOM_VALUE_COLUMNS)}
    upsert(conn, rooms, items, existing, ROOM_VALUE_COLUMNS, result)
    # Coverage's counts kept from the registry: the schools' teaching spaces and node
    # spans, and the new-style room-days of rooms whose flags changed; the kept coverage
    # days of the schools whose rooms changed.
    refresh_schools(conn, school_id_list)
    forget_coverage(conn, changed_schools)
    flips = [old.id for item in items if (old := existing.get(item.db_key)) is not None
             and (old.new_style and old.teaching_space)
             != (item.values["new_style"] and item.values["teaching_space"])]
    refresh_new_style_rooms(conn, flips)


# -- timetable ------------------------------------------------------------------------

def parse_timetable(conn: Connection, rows: list, errors: RowErrors) -> list[Item]:
    known = school_ids(conn, {row["school_code"] for _, row in rows if row["school_code"]})
    room_ids: dict[tuple[int, str], int] = {}
    for part in chunks(s["id"] for s in known.values()):
        for r in conn.execute(select(rooms.c.id, rooms.c.school_id, rooms.c.code).where(rooms.c.school_id.in_(part))):
            room_ids[(r.school_id, r.code)] = r.id
    items = []
    for line, row in rows:
        school = _school_cell(errors, line, row, known)
        room_code = errors.cell(line, row, "room_code", lambda c: cells.text(c, max_chars=32))
        room_id = None
        if school is not None and room_code is not None:
            room_id = room_ids.get((school["id"], room_code))
            if room_id is None:
                errors.add(line, "room_code", f"room {room_code} is not in school {row['school_code']}; "
                           "import it with the rooms file first")
        # ISO weekday in the file (1 = Monday, as people number them); 0-6 in the database.
        weekday = errors.cell(line, row, "weekday", lambda c: cells.integer(c, 1, 7))
        start = errors.cell(line, row, "start", cells.hhmm)
        end = errors.cell(line, row, "end", cells.hhmm)
        if start and end and start >= end:
            errors.add(line, "end", f"period ends ({end}) before it starts ({start})")
        label = errors.cell(line, row, "label", lambda c: cells.text(c, required=False))
        if errors.line_ok(line) and school is not None and room_id is not None:
            items.append(Item(line, (row["school_code"], room_code, weekday, start), {
                "school_id": school["id"], "room_id": room_id, "weekday": weekday - 1,
                "start": start, "end": end, "label": label,
            }, db_key=(room_id, weekday - 1, start)))
    items = check_duplicates(items, errors, "start", lambda k: f"period of room {k[1]} on weekday {k[2]} "
                             f"starting {k[3]}")
    _check_overlaps(items, errors)
    return items


def _check_overlaps(items: list[Item], errors: RowErrors) -> None:
    """Two booked periods of one room may not overlap on the same weekday: a booking
    is what no-show and scheduled-use figures are measured against."""
    by_room_day: dict[tuple, list[Item]] = defaultdict(list)
    for item in items:
        by_room_day[(item.values["room_id"], item.values["weekday"])].append(item)
    for periods in by_room_day.values():
        periods.sort(key=lambda i: i.values["start"])
        for before, after in zip(periods, periods[1:]):
            if after.values["start"] < before.values["end"]:
                errors.add(after.line, "start", f"{after.values['start']}-{after.values['end']} overlaps "
                           f"{before.values['start']}-{before.values['end']} on line {before.line}")


def write_timetable(conn: Connection, items: list[Item], result: ImportResult) -> None:
    c = timetable_periods.c
    existing: dict[tuple, Any] = {}
    for part in chunks({i.values["school_id"] for i in items}):
        for r in conn.execute(select(timetable_periods).where(c.school_id.in_(part))):
            existing[(r.room_id, r.weekday, r.start)] = r
    upsert(conn, timetable_periods, items, existing, ("end", "label"), result)
