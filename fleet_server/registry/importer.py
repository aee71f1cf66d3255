"""CSV import for the registry (schools, rooms, timetable, calendar): validate every row
first and write nothing if any row is wrong; otherwise upsert by natural key, so the
same file imported twice changes nothing. Column reference: docs/registry.md."""
from __future__ import annotations

from sqlalchemy import Connection

from fleet_server.registry import room_kinds, school_kinds
from fleet_server.registry.csv_rows import CsvDecodeError, RowError, decode_csv_bytes, read_table
from fleet_server.registry.import_base import ImportResult, RowErrors

__all__ = ["COLUMNS", "KINDS", "CsvDecodeError", "ImportResult", "RowError", "decode_csv_bytes", "import_csv"]

# kind -> ((required columns, optional columns), parse rows, write items)
_KINDS = {
    "schools": (school_kinds.SCHOOL_COLUMNS, school_kinds.parse_schools, school_kinds.write_schools),
    "rooms": (room_kinds.ROOM_COLUMNS, room_kinds.parse_rooms, room_kinds.write_rooms),
    "timetable": (room_kinds.TIMETABLE_COLUMNS, room_kinds.parse_timetable, room_kinds.write_timetable),
    "calendar": (school_kinds.CALENDAR_COLUMNS, school_kinds.parse_calendar, school_kinds.write_calendar),
}
KINDS = tuple(_KINDS)
COLUMNS = {kind: spec[0] for kind, spec in _KINDS.items()}


def import_csv(conn: Connection, kind: str, text: str) -> ImportResult:
    """Validate the whole file and, only if every row is good, upsert it.

    Writes go into the caller's transaction: commit when `result.ok`. When there are
    errors nothing has been written, so there is nothing to undo."""
    if kind not in _KINDS:
        raise ValueError(f"unknown import kind {kind!r}; one of {', '.join(KINDS)}")
    (required, optional), parse, write = _KINDS[kind]
    result = ImportResult(kind)
    rows, read_errors = read_table(text, required, optional)
    result.rows = len(rows)
    if read_errors:
        # Header or quoting trouble: the cells cannot be trusted, so report only that.
        result.errors = sorted(read_errors, key=lambda e: (e.line, e.column or ""))
        return result
    errors = RowErrors()
    items = parse(conn, rows, errors)
    if errors.items:
        result.errors = errors.sorted()
        return result
    write(conn, items, result)
    return result
