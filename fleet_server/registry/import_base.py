"""What every registry import kind shares: the result counts, valid rows as items,
error collection, duplicate-key checks and the keyed upsert."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert, select, update

from fleet_server.db.registry_schema import schools
from fleet_server.registry.csv_rows import CellError, RowError

_IN_CHUNK = 500   # bound parameters per IN (...) list, well under SQLite's limit


@dataclass
class ImportResult:
    kind: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)
    buildings_inserted: int = 0     # rooms only: buildings the file created, and renamed
    buildings_updated: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "rows": self.rows, "inserted": self.inserted,
                               "updated": self.updated, "unchanged": self.unchanged}
        if self.kind == "rooms":
            out["buildings_inserted"] = self.buildings_inserted
            out["buildings_updated"] = self.buildings_updated
        return out


@dataclass(slots=True)
class Item:
    """One valid row: its natural key (as written in the file, for messages and
    duplicate checks), its key in the database once codes are resolved, its values."""
    line: int
    key: tuple
    values: dict[str, Any]
    db_key: tuple = ()
    refs: dict[str, Any] = field(default_factory=dict)   # codes resolved at write time


class RowErrors:
    """Collects errors; `cell` runs one parser and records its failure."""

    def __init__(self) -> None:
        self.items: list[RowError] = []
        self._bad_lines: set[int] = set()

    def add(self, line: int, column: str | None, message: str) -> None:
        self.items.append(RowError(line, column, message))
        self._bad_lines.add(line)

    def cell(self, line: int, row: dict[str, str], column: str, parse: Callable[[str], Any]) -> Any:
        try:
            return parse(row.get(column, ""))
        except CellError as e:
            self.add(line, column, str(e))
            return None

    def line_ok(self, line: int) -> bool:
        return line not in self._bad_lines

    def sorted(self) -> list[RowError]:
        return sorted(self.items, key=lambda e: (e.line, e.column or ""))


def chunks(values: Iterable, size: int = _IN_CHUNK) -> Iterable[list]:
    values = list(values)
    for i in range(0, len(values), size):
        yield values[i:i + size]


def check_duplicates(items: list[Item], errors: RowErrors, column: str, describe: Callable[[tuple], str]
                     ) -> list[Item]:
    """The same natural key twice in one file: an error on the later line naming the
    earlier one; only the first occurrence goes on."""
    first_line: dict[tuple, int] = {}
    kept = []
    for item in items:
        if item.key in first_line:
            errors.add(item.line, column, f"duplicate {describe(item.key)}: already on line {first_line[item.key]}")
        else:
            first_line[item.key] = item.line
            kept.append(item)
    return kept


def school_ids(conn: Connection, codes: Iterable[str]) -> dict[str, dict[str, Any]]:
    """code -> {id, weekdays_mask} for the codes that exist."""
    found: dict[str, dict[str, Any]] = {}
    for part in chunks(set(codes)):
        for r in conn.execute(select(schools.c.code, schools.c.id, schools.c.weekdays_mask)
                              .where(schools.c.code.in_(part))):
            found[r.code] = {"id": r.id, "weekdays_mask": r.weekdays_mask}
    return found


def upsert(conn: Connection, table: Table, items: list[Item], existing: dict[tuple, Any],
           columns: tuple[str, ...], result: ImportResult) -> None:
    """Insert items whose db_key is new, update those whose `columns` differ from the
    stored row, count the rest as unchanged."""
    inserts: list[dict] = []
    updates: list[dict] = []
    for item in items:
        old = existing.get(item.db_key)
        if old is None:
            inserts.append(item.values)
        elif any(getattr(old, c) != item.values[c] for c in columns):
            updates.append({"row_id": old.id, **{f"new_{c}": item.values[c] for c in columns}})
        else:
            result.unchanged += 1
    if inserts:
        conn.execute(insert(table), inserts)
    if updates:
        stmt = (update(table).where(table.c.id == bindparam("row_id"))
                .values({c: bindparam(f"new_{c}") for c in columns}))
        conn.execute(stmt, updates)
    result.inserted += len(inserts)
    result.updated += len(updates)
