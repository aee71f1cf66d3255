"""School time: each school's hours and timezone, its school days over a range (for many
schools at once), and the Unix-second bounds of a school-local day or school day."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from fleet_server.db.registry_schema import calendar_days, schools
from fleet_server.registry.csv_rows import mask_digits

_IN_CHUNK = 500


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=1024)   # a few distinct hours; asked for per school day of every node offline
def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


@dataclass(frozen=True, slots=True)
class SchoolHours:
    school_id: int
    timezone: str
    day_start: str           # 'HH:MM' school-local
    day_end: str
    weekdays_mask: int       # bit d = weekday d (0 = Monday) is a school day

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)

    @property
    def start_min(self) -> int:
        return _minutes(self.day_start)

    @property
    def end_min(self) -> int:
        return _minutes(self.day_end)

    @property
    def day_s(self) -> int:
        """School-hours seconds of one school day."""
        return (self.end_min - self.start_min) * 60

    def bounds(self, day: date) -> tuple[int, int]:
        """Unix seconds [start, end) of the school hours on `day`."""
        return _school_bounds(self.timezone, self.start_min, self.end_min, day)

    def as_dict(self) -> dict:
        return {"day_start": self.day_start, "day_end": self.day_end,
                "weekdays": mask_digits(self.weekdays_mask), "timezone": self.timezone}


@lru_cache(maxsize=8192)    # the rollup asks for the same few days over and over
def _school_bounds(timezone: str, start_min: int, end_min: int, day: date) -> tuple[int, int]:
    base = datetime.combine(day, time(0), zone(timezone))
    return (int((base + timedelta(minutes=start_min)).timestamp()),
            int((base + timedelta(minutes=end_min)).timestamp()))


def day_bounds(day: date, tz: ZoneInfo) -> tuple[int, int]:
    """Unix seconds [start, end) of the school-local calendar day."""
    start = datetime.combine(day, time(0), tz)
    return int(start.timestamp()), int(datetime.combine(day + timedelta(days=1), time(0), tz).timestamp())


def dates(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def load_hours(conn: Connection, school_ids: Iterable[int]) -> dict[int, SchoolHours]:
    out: dict[int, SchoolHours] = {}
    ids = sorted(set(school_ids))
    for i in range(0, len(ids), _IN_CHUNK):
        for r in conn.execute(select(schools.c.id, schools.c.timezone, schools.c.day_start, schools.c.day_end,
                                     schools.c.weekdays_mask).where(schools.c.id.in_(ids[i:i + _IN_CHUNK]))):
            out[r.id] = SchoolHours(r.id, r.timezone, r.day_start, r.day_end, r.weekdays_mask)
    return out


def school_days(conn: Connection, hours: dict[int, SchoolHours], first: date, last: date
                ) -> dict[int, list[date]]:
    """school id -> its school days in [first, last]: its weekdays, minus holidays, plus
    make-up workdays; a school's own calendar row beats the all-schools row (the rule of
    fleet_server.registry.service.school_days, for many schools in one query)."""
    c = calendar_days.c
    common: dict[date, str] = {}
    own: dict[int, dict[date, str]] = {}
    wanted = set(hours)
    rows = conn.execute(select(c.school_id, c.date, c.kind).where(c.date.between(first, last)))
    for r in rows:
        if r.school_id is None:
            common[r.date] = r.kind
        elif r.school_id in wanted:
            own.setdefault(r.school_id, {})[r.date] = r.kind
    span = dates(first, last)
    out: dict[int, list[date]] = {}
    for school_id, h in hours.items():
        mine = own.get(school_id, {})
        days = []
        for day in span:
            kind = mine.get(day, common.get(day))
            if kind == "workday" or (kind != "holiday" and h.weekdays_mask >> day.weekday() & 1):
                days.append(day)
        out[school_id] = days
    return out


def iso_local(ts: float, tz: ZoneInfo) -> str:
    """ISO 8601 with the school's UTC offset: 2026-03-02T09:00:00+08:00."""
    return datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


def iso_week(year: int, week: int) -> tuple[date, date]:
    """Monday and Sunday of ISO week `week` of `year`; ValueError if there is none."""
    monday = date.fromisocalendar(year, week, 1)
    return monday, monday + timedelta(days=6)
