"""Reading registry CSV files with the line numbers a user sees in an editor, and
parsing their cells (codes, enums, numbers, HH:MM times, dates) into row errors."""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

MAX_CELL_CHARS = 256
_TIME_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


@dataclass(frozen=True, slots=True)
class RowError:
    line: int             # physical line in the file, header = line 1 (comment lines count)
    column: str | None    # None when the whole row or file is at fault
    message: str

    def as_dict(self) -> dict:
        return {"line": self.line, "column": self.column, "message": self.message}


class CellError(ValueError):
    """A cell that does not parse; the caller adds line and column."""


class CsvDecodeError(ValueError):
    """The bytes are neither UTF-8 nor GB18030 text (a spreadsheet, an image...)."""


def decode_csv_bytes(data: bytes) -> str:
    """UTF-8 (with or without the BOM Excel writes); else GB18030, the superset of the
    GBK that Chinese Excel uses for "CSV" by default."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError as e:
        raise CsvDecodeError(f"not a text CSV file (neither UTF-8 nor GBK/GB18030 at byte {e.start}); "
                             "save it from the spreadsheet as CSV") from None


class _LineFeed:
    """Feeds csv.reader one physical line at a time and remembers where each record
    starts, so a quoted cell spanning lines still reports its first line. Blank lines
    and lines starting with '#' between records are skipped but still counted."""

    def __init__(self, text: str) -> None:
        # \n, \r\n or \r only (what csv expects and editors count), not str.splitlines'
        # extra separators such as U+2028, which may sit inside a cell.
        self._lines = list(io.StringIO(text.lstrip("\ufeff"), newline=""))
        self.at_record_start = True
        self.record_line = 0

    def __iter__(self) -> Iterator[str]:
        for number, line in enumerate(self._lines, 1):
            if self.at_record_start:
                stripped = line.strip()
                if not stripped or stripped[0] == "#":
                    continue
                self.record_line = number
                self.at_record_start = False
            yield line


def read_table(text: str, required: tuple[str, ...], optional: tuple[str, ...]
               ) -> tuple[list[tuple[int, dict[str, str]]], list[RowError]]:
    """Rows as (line, {column: cell}) keyed by header names, or the errors that make
    the file unreadable (header problems, ragged rows). A quoting error stops the
    read at that record: what follows it cannot be split into cells reliably."""
    feed = _LineFeed(text)
    reader = csv.reader(iter(feed), strict=True)

    def next_record() -> tuple[int, list[str]] | None:
        try:
            cells = next(reader)
        except StopIteration:
            return None
        feed.at_record_start = True
        return feed.record_line, list(map(str.strip, cells))

    try:
        first = next_record()
    except csv.Error as e:
        return [], [RowError(feed.record_line or 1, None, f"not readable as CSV: {e}")]
    if first is None:
        return [], [RowError(1, None, "the file is empty; expected a header line")]
    header_line, header = first[0], [h.lower() for h in first[1]]
    while header and not header[-1]:
        header.pop()        # Excel writes trailing empty columns once a cell there was touched
    errors = _header_errors(header_line, header, required, optional)
    if errors:
        return [], errors
    rows: list[tuple[int, dict[str, str]]] = []
    while True:
        try:
            record = next_record()
        except csv.Error as e:
            errors.append(RowError(feed.record_line, None, f"not readable as CSV: {e}"))
            break
        if record is None:
            break
        line, cells = record
        if len(cells) > len(header) and not any(cells[len(header):]):
            cells = cells[:len(header)]
        if len(cells) != len(header):
            errors.append(RowError(line, None, f"{len(cells)} cells, but the header has {len(header)}"))
            continue
        if cells and max(map(len, cells)) > MAX_CELL_CHARS:
            errors.extend(RowError(line, h, f"longer than {MAX_CELL_CHARS} characters")
                          for h, c in zip(header, cells) if len(c) > MAX_CELL_CHARS)
            continue
        rows.append((line, dict(zip(header, cells))))
    if not rows and not errors:
        errors.append(RowError(header_line, None, "the file has a header but no rows"))
    return rows, errors


def _header_errors(line: int, header: list[str], required: tuple[str, ...],
                   optional: tuple[str, ...]) -> list[RowError]:
    errors = []
    expected = ", ".join(required + optional)
    seen: set[str] = set()
    for name in header:
        if name not in required and name not in optional:
            errors.append(RowError(line, name or None, f"unknown column {name!r}; expected columns: {expected}"))
        elif name in seen:
            errors.append(RowError(line, name, f"column {name!r} appears twice"))
        seen.add(name)
    errors.extend(RowError(line, name, f"required column {name!r} is missing")
                  for name in required if name not in seen)
    return errors


# -- cell parsers: each returns the value or raises CellError with a user message ------

def text(cell: str, *, required: bool = True, max_chars: int = 64) -> str | None:
    if not cell:
        if required:
            raise CellError("required, but empty")
        return None
    if len(cell) > max_chars:
        raise CellError(f"longer than {max_chars} characters")
    return cell


def one_of(cell: str, choices: tuple[str, ...]) -> str:
    value = cell.lower()
    if value not in choices:
        raise CellError(f"{cell!r} is not one of: {', '.join(choices)}" if cell else
                        f"required, one of: {', '.join(choices)}")
    return value


def integer(cell: str, lo: int, hi: int, *, required: bool = True) -> int | None:
    if not cell:
        if required:
            raise CellError("required, but empty")
        return None
    try:
        value = int(cell)
    except ValueError:
        raise CellError(f"{cell!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise CellError(f"{value} is outside {lo}..{hi}")
    return value


def number(cell: str, lo: float, hi: float, *, required: bool = True) -> float | None:
    if not cell:
        if required:
            raise CellError("required, but empty")
        return None
    try:
        value = float(cell)
    except ValueError:
        raise CellError(f"{cell!r} is not a number") from None
    if not lo <= value <= hi:  # also refuses nan
        raise CellError(f"{cell} is outside {lo:g}..{hi:g}")
    return value


def boolean(cell: str) -> bool | None:
    """None when empty, so the caller can apply its default."""
    value = cell.lower()
    if not value:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise CellError(f"{cell!r} is not a yes/no value (1/0, true/false, yes/no)")


@lru_cache(maxsize=4096)   # a timetable repeats a few dozen times over and over
def hhmm(cell: str) -> str:
    """'H:MM' or 'HH:MM' (00:00-23:59), returned zero-padded so it sorts as text."""
    m = _TIME_RE.match(cell)
    if not m:
        raise CellError(f"{cell!r} is not a time HH:MM (00:00-23:59)" if cell else "required time HH:MM")
    return f"{int(m.group(1)):02d}:{m.group(2)}"


def iso_date(cell: str) -> date:
    try:
        if len(cell) != 10:
            raise ValueError
        return date.fromisoformat(cell)
    except ValueError:
        raise CellError(f"{cell!r} is not a date YYYY-MM-DD" if cell else "required date YYYY-MM-DD") from None


def weekday_digits(cell: str) -> int:
    """School days as ISO weekday digits ('12345' = Mon-Fri) -> bit mask, bit 0 = Monday."""
    if not cell or any(ch not in "1234567" for ch in cell) or len(set(cell)) != len(cell):
        raise CellError(f"{cell!r} is not a set of ISO weekday digits 1-7 without repeats "
                        "(12345 = Monday to Friday)")
    return sum(1 << (int(ch) - 1) for ch in cell)


def mask_digits(mask: int) -> str:
    return "".join(str(d + 1) for d in range(7) if mask >> d & 1)
