"""Minute-level usage rules over the room-hour minute bitmaps: per booked period
utilisation, scheduled vs actual minutes, no-shows and unscheduled use (DOMAIN.md
"Room-usage metrics"). The timetable is applied when asked, so a changed timetable
needs no recount."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
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

    def __post_init__(self) -> None:
        start_min = int(self.start[:2]) * 60 + int(self.start[3:])
        end_min = int(self.end[:2]) * 60 + int(self.end[3:])
        object.__setattr__(self, "start_min", start_min)
        object.__setattr__(self, "end_min", end_min)
        object.__setattr__(self, "minutes", end_min - start_min)


def load_periods(conn: Connection, room_ids: Iterable[int]) -> dict[int, list[Period]]:
    t = timetable_periods.c
    out: dict[int, list[Period]] = defaultdict(list)
    ids = sorted(set(room_ids))
    for i in range(0, len(ids), 500):
        for r in conn.execute(select(t.room_id, t.weekday, t.start, t.end, t.label)
                              .where(t.room_id.in_(ids[i:i + 500])).order_by(t.weekday, t.start)):
            out[r.room_id].append(Period(r.weekday, r.start, r.end, r.label))
    return out


class MinuteMasks:
    """The room's minute bitmaps by (date, hour): observed, present, occupied."""

    def __init__(self, hour_rows: Iterable[Any]) -> None:
        self.by_hour: dict[tuple[date, int], tuple[int, int, int]] = {
            (r.date, r.hour): (r.observed_mask, r.present_mask, r.occupied_mask) for r in hour_rows}

    def count(self, day: date, start_min: int, end_min: int, which: int) -> int:
        n = 0
        for hour in range(start_min // 60, (end_min - 1) // 60 + 1):
            masks = self.by_hour.get((day, hour))
            if masks is None:
                continue
            lo = max(start_min, hour * 60) - hour * 60
            hi = min(end_min, hour * 60 + 60) - hour * 60
            n += (masks[which] & (((1 << (hi - lo)) - 1) << lo)).bit_count()
        return n


def _booked_masks(periods: list[Period]) -> dict[int, dict[int, int]]:
    """weekday -> hour -> bitmap of booked minutes."""
    out: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for p in periods:
        # An hour at a time: the period's minutes of that hour as one run of bits.
        if p.end_min <= p.start_min:
            continue
        for hour in range(p.start_min // 60, (p.end_min - 1) // 60 + 1):
            lo = max(p.start_min, hour * 60) - hour * 60
            hi = min(p.end_min, hour * 60 + 60) - hour * 60
            out[p.weekday][hour] |= ((1 << (hi - lo)) - 1) << lo
    return out


def period_figures(masks: MinuteMasks, periods: list[Period], school_days: list[date]) -> dict[str, Any]:
    """Per booked period over the school days: scheduled and occupied minutes,
    utilisation, no-shows (and the list of them), periods without data."""
    rows: list[dict[str, Any]] = []
    no_shows: list[dict[str, Any]] = []
    per_day: dict[date, dict[str, float]] = defaultdict(lambda: {"scheduled": 0, "occupied": 0, "no_shows": 0})
    for p in periods:
        days = [day for day in school_days if day.weekday() == p.weekday]
        occupied = misses = without_data = 0
        for day in days:
            occ = masks.count(day, p.start_min, p.end_min, OCCUPIED)
            occupied += occ
            per_day[day]["scheduled"] += p.minutes
            per_day[day]["occupied"] += occ
            if 2 * masks.count(day, p.start_min, p.end_min, OBSERVED) < p.minutes:
                without_data += 1         # the node saw under half of it: not judged
                continue
            first_end = min(p.end_min, p.start_min + d.NO_SHOW_FIRST_MINUTES)
            first_seen = masks.count(day, p.start_min, first_end, OBSERVED)
            present_first = masks.count(day, p.start_min, first_end, PRESENT) > 0
            # The first-minutes rule needs those minutes observed (at least half of them).
            late = 2 * first_seen >= first_end - p.start_min and not present_first
            if occ < d.NO_SHOW_OCCUPIED_SHARE * p.minutes or late:
                misses += 1
                per_day[day]["no_shows"] += 1
                no_shows.append({"date": day.isoformat(), "weekday": p.weekday, "start": p.start, "end": p.end,
                                 "label": p.label, "occupied_minutes": occ,
                                 "occupied_share": round(occ / p.minutes, 4),
                                 "presence_in_first_10_minutes": present_first})
        scheduled = p.minutes * len(days)
        rows.append({"weekday": p.weekday, "start": p.start, "end": p.end, "label": p.label,
                     "school_days": len(days), "scheduled_minutes": scheduled, "occupied_minutes": occupied,
                     "utilisation": round(occupied / scheduled, 4) if scheduled else None,
                     "no_shows": misses, "without_data": without_data})
    no_shows.sort(key=lambda n: (n["date"], n["start"]))
    scheduled = sum(int(r["scheduled_minutes"]) for r in rows)
    occupied = sum(int(r["occupied_minutes"]) for r in rows)
    return {"periods": rows, "no_shows": no_shows, "per_day": per_day,
            "scheduled_minutes": scheduled, "scheduled_occupied_minutes": occupied,
            "scheduled_utilisation": round(occupied / scheduled, 4) if scheduled else None,
            "periods_without_data": sum(r["without_data"] for r in rows)}


def unscheduled_use(masks: MinuteMasks, periods: list[Period], school_days: list[date],
                    tz: ZoneInfo) -> list[dict[str, Any]]:
    """Runs of >= 10 consecutive occupied minutes outside every booked period, on any
    date (periods are booked on school days only); a run may cross hours and midnight."""
    booked = _booked_masks(periods)
    teaching = set(school_days)
    runs: list[tuple[date, int, int]] = []       # (start date, start minute of that day, length)
    last_abs = None
    for day, hour in sorted(masks.by_hour):
        free = masks.by_hour[(day, hour)][OCCUPIED]
        if day in teaching:
            free &= ~booked.get(day.weekday(), {}).get(hour, 0)
        base = day.toordinal() * 1440 + hour * 60
        while free:
            low = free & -free
            minute = low.bit_length() - 1
            free ^= low
            at = base + minute
            if last_abs is not None and at == last_abs + 1:
                runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
            else:
                runs.append((day, hour * 60 + minute, 1))
            last_abs = at
    out = []
    for day, start_min, length in runs:
        if length < d.UNSCHEDULED_MIN_MINUTES:
            continue
        start = datetime.combine(day, time(0), tz) + timedelta(minutes=start_min)
        out.append({"date": day.isoformat(), "start": start.isoformat(timespec="seconds"),
                    "end": (start + timedelta(minutes=length)).isoformat(timespec="seconds"),
                    "minutes": length})
    return out
