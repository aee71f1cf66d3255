"""Import kinds keyed by school: schools (by code) and calendar days (by school or
all schools, and date)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from fleet_server.db.registry_schema import (
    CALENDAR_KINDS, DEFAULT_DAY_END, DEFAULT_DAY_START, MON_TO_FRI_MASK, SCHOOL_STAGES,
    SCHOOL_TIMEZONE, calendar_days, regions, schools,
)
from fleet_server.metrics.coverage_kept import forget as forget_coverage
from fleet_server.registry import csv_rows as cells
from fleet_server.registry.import_base import (
    ImportResult, Item, RowErrors, check_duplicates, chunks, school_ids, upsert,
)

SCHOOL_COLUMNS = (("code", "name", "county_code", "stage"), ("day_start", "day_end", "weekdays"))
CALENDAR_COLUMNS = (("date", "kind"), ("school_code", "label"))
CALENDAR_YEARS = (2000, 2100)   # catches a mistyped year (2206) before it hides in the table

# -- schools --------------------------------------------------------------------------

SCHOOL_VALUE_COLUMNS = ("name", "county_code", "stage", "day_start", "day_end", "weekdays_mask", "timezone")
_HOURS_COLUMNS = ("day_start", "day_end", "weekdays_mask", "timezone")


def parse_schools(conn: Connection, rows: list, errors: RowErrors) -> list[Item]:
    counties = set(conn.execute(select(regions.c.code).where(regions.c.level == "county")).scalars())
    items = []
    for line, row in rows:
        code = errors.cell(line, row, "code", lambda c: cells.text(c, max_chars=32))
        name = errors.cell(line, row, "name", lambda c: cells.text(c, max_chars=128))
        county = errors.cell(line, row, "county_code", lambda c: cells.integer(c, 100000, 999999))
        if county is not None and county not in counties:
            errors.add(line, "county_code", f"{county} is not a county-level GB/T 2260 code in the registry")
        stage = errors.cell(line, row, "stage", lambda c: cells.one_of(c, SCHOOL_STAGES))
        day_start = errors.cell(line, row, "day_start", lambda c: cells.hhmm(c) if c else DEFAULT_DAY_START)
        day_end = errors.cell(line, row, "day_end", lambda c: cells.hhmm(c) if c else DEFAULT_DAY_END)
        if day_start and day_end and day_start >= day_end:
            errors.add(line, "day_end", f"school day ends ({day_end}) before it starts ({day_start})")
        mask = errors.cell(line, row, "weekdays", lambda c: cells.weekday_digits(c) if c else MON_TO_FRI_MASK)
        if errors.line_ok(line):
            items.append(Item(line, (code,), {
                "code": code, "name": name, "county_code": county, "stage": stage,
                "day_start": day_start, "day_end": day_end, "weekdays_mask": mask,
                "timezone": SCHOOL_TIMEZONE}, db_key=(code,)))
    return check_duplicates(items, errors, "code", lambda k: f"school code {k[0]}")


def write_schools(conn: Connection, items: list[Item], result: ImportResult) -> None:
    existing: dict[tuple, Any] = {}
    for part in chunks(i.values["code"] for i in items):
        for r in conn.execute(select(schools).where(schools.c.code.in_(part))):
            existing[(r.code,)] = r
    # A school's hours decide its school-day bounds: its kept coverage is counted again.
    rehoured = [old.id for i in items if (old := existing.get(i.db_key)) is not None
                and any(getattr(old, c) != i.values[c] for c in _HOURS_COLUMNS)]
    upsert(conn, schools, items, existing, SCHOOL_VALUE_COLUMNS, result)
    forget_coverage(conn, rehoured)


# -- calendar -------------------------------------------------------------------------

def parse_calendar(conn: Connection, rows: list, errors: RowErrors) -> list[Item]:
    known = school_ids(conn, {row["school_code"] for _, row in rows if row.get("school_code")})
    items = []
    for line, row in rows:
        day = errors.cell(line, row, "date", cells.iso_date)
        if day is not None and not CALENDAR_YEARS[0] <= day.year <= CALENDAR_YEARS[1]:
            errors.add(line, "date", f"{day} is outside the years {CALENDAR_YEARS[0]}-{CALENDAR_YEARS[1]}")
            day = None
        kind = errors.cell(line, row, "kind", lambda c: cells.one_of(c, CALENDAR_KINDS))
        label = errors.cell(line, row, "label", lambda c: cells.text(c, required=False))
        code = row.get("school_code") or None
        school = known.get(code) if code else None
        if code and school is None:
            errors.add(line, "school_code", f"school {code} is not in the registry; import it with the schools file first")
        if day is not None and kind == "workday":
            # A make-up day only means something on a day that is not already a school day.
            mask = school["weekdays_mask"] if school else MON_TO_FRI_MASK
            if mask >> day.weekday() & 1:
                errors.add(line, "kind", f"{day} is a {day:%A}, already a school day; "
                           "a workday row is for a make-up day on a weekend")
        if errors.line_ok(line):
            school_id = school["id"] if school else None
            items.append(Item(line, (code or "", day),
                              {"school_id": school_id, "date": day, "kind": kind, "label": label},
                              db_key=(school_id, day)))
    return check_duplicates(items, errors, "date", lambda k: f"date {k[1]} for "
                            + (f"school {k[0]}" if k[0] else "all schools"))


def write_calendar(conn: Connection, items: list[Item], result: ImportResult) -> None:
    c = calendar_days.c
    existing: dict[tuple, Any] = {}
    ids = {i.values["school_id"] for i in items if i.values["school_id"] is not None}
    for part in chunks(ids):
        for r in conn.execute(select(calendar_days).where(c.school_id.in_(part))):
            existing[(r.school_id, r.date)] = r
    if any(i.values["school_id"] is None for i in items):
        for r in conn.execute(select(calendar_days).where(c.school_id.is_(None))):
            existing[(None, r.date)] = r
    # Calendar days decide which days are school days: the kept coverage of the schools
    # whose days changed (every school's, for a province-wide day) is counted again.
    moved = [i.values["school_id"] for i in items
             if (old := existing.get(i.db_key)) is None or old.kind != i.values["kind"]]
    upsert(conn, calendar_days, items, existing, ("kind", "label"), result)
    if any(school_id is None for school_id in moved):
        forget_coverage(conn)
    else:
        forget_coverage(conn, moved)
