"""Minute-level usage rules over the room-hour minute bitmaps: per booked period
utilisation, scheduled vs actual minutes, no-shows and unscheduled use (DOMAIN.md
"Room-usage metrics"). The timetable is applied when asked, so a changed timetable
needs no recount."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from fleet_server.db.registry_schema import timetable_periods
from fleet_server.metrics import definitions as d

OBSERVED, PRESENT, OCCUPIED = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Period:
    weekday: int          # 0 = Monday
    start: str            # 'HH:MM' school-local
    end: str
    label: str | None
    # Parsed once here, not on every use (a school report asks thousands of times).
    start_min: int = field(init=False, compare=False, repr=False)
    end_min: int = field(init=False, compare=False, repr=False)
    minutes: int = field(init=False, compare=False, repr=False)
    # The period's minutes and its first NO_SHOW_FIRST_MINUTES as bitmaps over the day
    # (bit h * 60 + m = minute m of hour h, as MinuteMasks keeps a day); 0 if empty.
    mask: int = field(init=False, compare=False, repr=False)
    first_mask: int = field(init=False, compare=False, repr=False)
    first_minutes: int = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        start_min = int(self.start[:2]) * 60 + int(self.start[3:])
        end_min = int(self.end[:2]) * 60 + int(self.end[3:])
        first_end = min(end_min, start_min + d.NO_SHOW_FIRST_MINUTES)
        object.__setattr__(self, "start_min", start_min)
        object.__setattr__(self, "end_min", end_min)
        object.__setattr__(self, "minutes", end_min - start_min)
        object.__setattr__(self, "mask", _run(start_min, end_min))
        object.__setattr__(self, "first_mask", _run(start_min, first_end))
        object.__setattr__(self, "first_minutes", first_end - start_min)


def _run(start_min: int, end_min: int) -> int:
    """Minutes [start_min, end_min) of a day as a bitmap (0 when empty)."""
    return ((1 << (end_min - start_min)) - 1) << start_min if end_min > start_min else 0


@lru_cache(maxsize=4096)
def _period(weekday: int, start: str, end: str, label: str | None) -> Period:
    # Rooms of a school mostly share one timetable: the same immutable Period serves all.
    return Period(weekday, start, end, label)


def load_periods(conn: Connection, room_ids: Iterable[int]) -> dict[int, list[Period]]:
    t = timetable_periods.c
    out: dict[int, list[Period]] = defaultdict(list)
    ids = sorted(set(room_ids))
    for i in range(0, len(ids), 500):
        for room_id, weekday, start, end, label in conn.execute(
                select(t.room_id, t.weekday, t.start, t.end, t.label)
                .where(t.room_id.in_(ids[i:i + 500])).order_by(t.weekday, t.start)).all():
            out[room_id].append(_period(weekday, start, end, label))
    return out


class MinuteMasks:
    """The room's minute bitmaps by school-local date: observed, present, occupied, each
    one int over the whole day (bit h * 60 + m = minute m of hour h), so a rule over any
    span of minutes is one AND and one bit count."""

    __slots__ = ("by_day",)

    def __init__(self, hour_rows: Iterable[Any]) -> None:
        by_day: dict[date, list[int]] = {}
        for r in hour_rows:
            masks = by_day.get(r.date)
            if masks is None:
                masks = by_day[r.date] = [0, 0, 0]
            shift = r.hour * 60
            masks[OBSERVED] |= r.observed_mask << shift
            masks[PRESENT] |= r.present_mask << shift
            masks[OCCUPIED] |= r.occupied_mask << shift
        self.by_day = by_day

    @classmethod
    def of_days(cls, by_day: dict[date, list[int]]) -> MinuteMasks:
        """From day bitmaps already built: date -> [observed, present, occupied]."""
        self = cls.__new__(cls)
        self.by_day = by_day
        return self

    def count(self, day: date, start_min: int, end_min: int, which: int) -> int:
        masks = self.by_day.get(day)
        return 0 if masks is None else (masks[which] & _run(start_min, end_min)).bit_count()


def _booked_masks(periods: list[Period]) -> dict[int, int]:
    """weekday -> bitmap of the day's booked minutes."""
    out: dict[int, int] = defaultdict(int)
    for p in periods:
        out[p.weekday] |= p.mask
    return out


_NO_MASKS = (0, 0, 0)


def period_figures(masks: MinuteMasks, periods: list[Period], school_days: list[date], *,
                   detail: bool = True) -> dict[str, Any]:
    """Per booked period over the school days: scheduled and occupied minutes,
    utilisation, no-shows (and the list of them), periods without data. detail=False:
    only the totals (no per-period rows, per-day sums or no-show list; no_show_count)."""
    rows: list[dict[str, Any]] = []
    no_shows: list[dict[str, Any]] = []
    per_day: dict[date, dict[str, float]] = defaultdict(lambda: {"scheduled": 0, "occupied": 0, "no_shows": 0})
    on_weekday: dict[int, list[date]] = defaultdict(list)
    for day in school_days:
        on_weekday[day.weekday()].append(day)
    by_day = masks.by_day
    share = d.NO_SHOW_OCCUPIED_SHARE
    scheduled_total = occupied_total = without_total = miss_total = 0
    for p in periods:
        days = on_weekday.get(p.weekday, [])
        occupied = misses = without_data = 0
        mask, first_mask, first_minutes = p.mask, p.first_mask, p.first_minutes
        for day in days:
            m = by_day.get(day, _NO_MASKS)
            occ = (m[OCCUPIED] & mask).bit_count()
            occupied += occ
            if detail:
                sums = per_day[day]
                sums["scheduled"] += p.minutes
                sums["occupied"] += occ
            observed = m[OBSERVED]
            if 2 * (observed & mask).bit_count() < p.minutes:
                without_data += 1         # the node saw under half of it: not judged
                continue
            present_first = (m[PRESENT] & first_mask).bit_count() > 0
            # The first-minutes rule needs those minutes observed (at least half of them).
            late = 2 * (observed & first_mask).bit_count() >= first_minutes and not present_first
            if occ < share * p.minutes or late:
                misses += 1
                if detail:
                    sums["no_shows"] += 1
                    no_shows.append({"date": day.isoformat(), "weekday": p.weekday, "start": p.start,
                                     "end": p.end, "label": p.label, "occupied_minutes": occ,
                                     "occupied_share": round(occ / p.minutes, 4),
                                     "presence_in_first_10_minutes": present_first})
        scheduled = p.minutes * len(days)
        scheduled_total += scheduled
        occupied_total += occupied
        without_total += without_data
        miss_total += misses
        if detail:
            rows.append({"weekday": p.weekday, "start": p.start, "end": p.end, "label": p.label,
                         "school_days": len(days), "scheduled_minutes": scheduled, "occupied_minutes": occupied,
                         "utilisation": round(occupied / scheduled, 4) if scheduled else None,
                         "no_shows": misses, "without_data": without_data})
    no_shows.sort(key=lambda n: (n["date"], n["start"]))
    return {"periods": rows, "no_shows": no_shows, "no_show_count": miss_total, "per_day": per_day,
            "scheduled_minutes": scheduled_total, "scheduled_occupied_minutes": occupied_total,
            "scheduled_utilisation": round(occupied_total / scheduled_total, 4) if scheduled_total else None,
            "periods_without_data": without_total}


def unscheduled_runs(masks: MinuteMasks, periods: list[Period], school_days: list[date]
                     ) -> list[tuple[date, int, int]]:
    """Runs of consecutive occupied minutes outside every booked period, on any date
    (periods are booked on school days only), as (start date, start minute of that day,
    length); a run may cross hours and midnight. Every run, short ones too."""
    booked = _booked_masks(periods)
    teaching = set(school_days)
    runs: list[tuple[date, int, int]] = []
    run_end = None                               # absolute minute just after the last run
    for day in sorted(masks.by_day):
        free = masks.by_day[day][OCCUPIED]
        if day in teaching:
            free &= ~booked.get(day.weekday(), 0)
        base = day.toordinal() * 1440
        while free:
            start = (free & -free).bit_length() - 1
            ones = free >> start
            length = ((ones + 1) & ~ones).bit_length() - 1       # the run of 1s from `start`
            free ^= ((1 << length) - 1) << start
            if run_end is not None and base + start == run_end:
                first_day, first_min, n = runs[-1]
                runs[-1] = (first_day, first_min, n + length)
            else:
                runs.append((day, start, length))
            run_end = base + start + length
    return runs


def unscheduled_minutes(masks: MinuteMasks, periods: list[Period], school_days: list[date]) -> int:
    """The minutes of unscheduled use: the runs of >= 10 minutes, summed."""
    return sum(n for _, _, n in unscheduled_runs(masks, periods, school_days) if n >= d.UNSCHEDULED_MIN_MINUTES)


def unscheduled_use(masks: MinuteMasks, periods: list[Period], school_days: list[date],
                    tz: ZoneInfo) -> list[dict[str, Any]]:
    """Runs of >= 10 consecutive occupied minutes outside every booked period, on any
    date (periods are booked on school days only); a run may cross hours and midnight."""
    out = []
    for day, start_min, length in unscheduled_runs(masks, periods, school_days):
        if length < d.UNSCHEDULED_MIN_MINUTES:
            continue
        start = datetime.combine(day, time(0), tz) + timedelta(minutes=start_min)
        out.append({"date": day.isoformat(), "start": start.isoformat(timespec="seconds"),
                    "end": (start + timedelta(minutes=length)).isoformat(timespec="seconds"),
                    "minutes": length})
    return out
