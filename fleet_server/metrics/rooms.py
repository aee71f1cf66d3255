"""Per-room figures for a range of school-local dates, read from the room-hour rollups
and the registry: usage (utilisation, heatmap, periods, no-shows, unscheduled use) and
environment (minutes over thresholds, worst hour, share of occupied time in band)."""
from __future__ import annotations

import math
from collections import defaultdict
from functools import reduce
from operator import add, attrgetter, itemgetter
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from fleet_server.db.metrics_schema import room_hour
from fleet_server.db.registry_schema import rooms, schools
from fleet_server.metrics import definitions as d
from fleet_server.metrics.periods import (
    MinuteMasks, Period, load_periods, period_figures, unscheduled_minutes, unscheduled_use,
)
from fleet_server.metrics.rollup import pending
from fleet_server.metrics.schooltime import SchoolHours, dates, load_hours, school_days


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def minutes(seconds: float) -> float:
    return round(seconds / 60, 1)


def get_room(conn: Connection, room_id: int) -> dict[str, Any] | None:
    r = conn.execute(select(rooms.c.id, rooms.c.code, rooms.c.name, rooms.c.type, rooms.c.school_id,
                            rooms.c.capacity, rooms.c.new_style, rooms.c.lux_factor, rooms.c.teaching_space,
                            schools.c.code.label("school_code"), schools.c.name.label("school_name"))
                     .join(schools, schools.c.id == rooms.c.school_id).where(rooms.c.id == room_id)).first()
    return None if r is None else dict(r._mapping)


def usage_figures(hours: SchoolHours, teaching_days: list[date], first: date, last: date,
                  hour_rows: list[Any], periods: list[Period]) -> dict[str, Any]:
    """Every usage figure of one room from its room-hour rows in [first, last]."""
    teaching = set(teaching_days)
    by_day: dict[date, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    cells: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    by_hour: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])     # school days, school hours
    for r in hour_rows:
        sums = by_day[r.date]
        sums["occupied_all"] += r.occupied_s
        if r.date in teaching:
            sums["occupied"] += r.in_school_occupied_s
            sums["observed"] += r.in_school_observed_s
            by_hour[r.hour][0] += r.in_school_occupied_s
            by_hour[r.hour][1] += r.in_school_observed_s
        cell = cells[(r.date.weekday(), r.hour)]
        cell[0] += r.occupied_s
        cell[1] += r.observed_s
    masks = MinuteMasks(hour_rows)
    booked = period_figures(masks, periods, teaching_days)
    unscheduled = unscheduled_use(masks, periods, teaching_days, hours.tz)
    unscheduled_by_day: dict[str, int] = defaultdict(int)
    for run in unscheduled:
        unscheduled_by_day[run["date"]] += run["minutes"]
    days = []
    for day in dates(first, last):
        f = by_day.get(day, {})
        available = hours.day_s if day in teaching else 0
        b = booked["per_day"].get(day, {})
        days.append({"date": day.isoformat(), "school_day": day in teaching,
                     "available_minutes": minutes(available), "occupied_minutes": minutes(f.get("occupied", 0)),
                     "utilisation": ratio(f.get("occupied", 0), available),
                     "observed_minutes": minutes(f.get("observed", 0)),
                     "occupied_minutes_all_hours": minutes(f.get("occupied_all", 0)),
                     "scheduled_minutes": b.get("scheduled", 0),
                     "scheduled_occupied_minutes": b.get("occupied", 0), "no_shows": b.get("no_shows", 0),
                     "unscheduled_minutes": unscheduled_by_day.get(day.isoformat(), 0)})
    available_s = hours.day_s * len(teaching_days)
    occupied_s = sum(f.get("occupied", 0) for f in by_day.values())
    observed_s = sum(f.get("observed", 0) for f in by_day.values())
    judged = [p for p in booked["periods"] if p["utilisation"] is not None]
    if judged:
        best = max(judged, key=lambda p: p["utilisation"])
        peak = {"kind": "period", "weekday": best["weekday"], "start": best["start"], "end": best["end"],
                "label": best["label"], "utilisation": best["utilisation"]}
    elif any(v[1] for v in by_hour.values()):
        hour, (occ, obs) = max(((h, v) for h, v in by_hour.items() if v[1]), key=lambda hv: hv[1][0] / hv[1][1])
        peak = {"kind": "hour", "hour": hour, "utilisation": ratio(occ, obs)}
    else:
        peak = None
    return {
        "school_days": len(teaching_days),
        "available_minutes": minutes(available_s),
        "occupied_minutes": minutes(occupied_s),
        "utilisation": ratio(occupied_s, available_s),
        "occupied_hours": round(occupied_s / 3600, 2),
        "observed_minutes": minutes(observed_s),
        "data_completeness": ratio(observed_s, available_s),
        "occupied_minutes_all_hours": minutes(sum(f.get("occupied_all", 0) for f in by_day.values())),
        "peak_period": peak,
        "scheduled_minutes": booked["scheduled_minutes"],
        "scheduled_occupied_minutes": booked["scheduled_occupied_minutes"],
        "scheduled_utilisation": booked["scheduled_utilisation"],
        "no_show_count": len(booked["no_shows"]),
        "periods_without_data": booked["periods_without_data"],
        "unscheduled_minutes": sum(run["minutes"] for run in unscheduled),
        "periods": booked["periods"],
        "no_shows": booked["no_shows"],
        "unscheduled_use": unscheduled,
        "heatmap": [{"weekday": wd, "hour": h, "occupied_minutes": minutes(occ), "observed_minutes": minutes(obs),
                     "utilisation": ratio(occ, obs)} for (wd, h), (occ, obs) in sorted(cells.items()) if obs],
        "days": days,
    }


def usage_totals(hours: SchoolHours, teaching_days: list[date], per_day: dict[date, list[float]],
                 masks: MinuteMasks, periods: list[Period]) -> dict[str, Any]:
    """The totals of usage_figures without its per-day, per-period, heatmap and list
    parts: what a school report needs of each of its rooms. per_day: date -> [occupied_s
    of all hours, in-school occupied_s (school days), in-school observed_s (school days)],
    summed over the room's rows in (date, hour) order as usage_figures sums them, so the
    figures are the same numbers."""
    available_s = hours.day_s * len(teaching_days)
    occupied_s = sum(x[1] for x in per_day.values())
    observed_s = sum(x[2] for x in per_day.values())
    booked = period_figures(masks, periods, teaching_days, detail=False)
    return {
        "utilisation": ratio(occupied_s, available_s),
        "occupied_minutes": minutes(occupied_s),
        "occupied_hours": round(occupied_s / 3600, 2),
        "available_minutes": minutes(available_s),
        "observed_minutes": minutes(observed_s),
        "data_completeness": ratio(observed_s, available_s),
        "scheduled_minutes": booked["scheduled_minutes"],
        "scheduled_occupied_minutes": booked["scheduled_occupied_minutes"],
        "scheduled_utilisation": booked["scheduled_utilisation"],
        "no_show_count": booked["no_show_count"],
        "unscheduled_minutes": unscheduled_minutes(masks, periods, teaching_days),
        "occupied_minutes_all_hours": minutes(sum(x[0] for x in per_day.values())),
    }


def _hour_rows(conn: Connection, room_id: int, first: date, last: date) -> list[Any]:
    h = room_hour.c
    return list(conn.execute(select(room_hour).where(h.room_id == room_id, h.date.between(first, last))
                             .order_by(h.date, h.hour)))


def room_usage(conn: Connection, room_id: int, first: date, last: date) -> dict[str, Any] | None:
    room = get_room(conn, room_id)
    if room is None:
        return None
    hours = load_hours(conn, [room["school_id"]])[room["school_id"]]
    teaching_days = school_days(conn, {hours.school_id: hours}, first, last)[hours.school_id]
    figures = usage_figures(hours, teaching_days, first, last, _hour_rows(conn, room_id, first, last),
                            load_periods(conn, [room_id]).get(room_id, []))
    return {"room": room, "from": first.isoformat(), "to": last.isoformat(), "school_hours": hours.as_dict(),
            **figures, "rollups": pending(conn), "definitions": d.USAGE}


# -- environment ----------------------------------------------------------------------

THRESHOLDS = {"co2_notice_ppm": d.CO2_NOTICE_PPM, "co2_breach_ppm": d.CO2_BREACH_PPM,
              "temp_band_c": list(d.TEMP_BAND_C), "rh_band_pct": list(d.RH_BAND_PCT),
              "desk_lux_min": d.DESK_LUX_MIN, "noise_unoccupied_max_dba": d.NOISE_UNOCCUPIED_MAX_DBA}


ENVIRONMENT_SUMS = ("observed_s", "occupied_s", "co2_sum", "co2_n_s", "co2_over_1000_s", "co2_over_1500_s",
             "temp_occ_s", "temp_in_band_s", "rh_occ_s", "rh_in_band_s", "lux_sum", "lux_occ_s",
             "lux_low_s", "noise_energy_sum", "noise_n_s", "noise_over_45_s")


def environment_summary(rows: Sequence[Any], lux_factor: float | None) -> dict[str, Any]:
    """Environment figures from rollup rows (room_hour, room_day or school_day): sums
    first, then ratios. lux_factor None: desk lux mean is not shown (mixed rooms)."""
    # Each sum adds its column row by row from 0.0 (reduce, not sum(): the same float
    # additions in the same order on every Python). The columns are read by position
    # (a result row's attribute lookup costs far more than its index).
    co2_max = None
    if rows:
        fields = getattr(rows[0], "_fields", None)
        values: Callable[[Any], tuple]
        if fields is not None:
            values = itemgetter(*(fields.index(name) for name in (*ENVIRONMENT_SUMS, "co2_max")))
        else:
            values = attrgetter(*ENVIRONMENT_SUMS, "co2_max")
        columns = list(zip(*map(values, rows)))
        s = dict(zip(ENVIRONMENT_SUMS, (reduce(add, column, 0.0) for column in columns)))
        for value in columns[-1]:
            if value is not None and (co2_max is None or value > co2_max):
                co2_max = value
    else:
        s = dict.fromkeys(ENVIRONMENT_SUMS, 0.0)
    laeq = round(10 * math.log10(s["noise_energy_sum"] / s["noise_n_s"]), 1) if s["noise_energy_sum"] else None
    desk = (round(s["lux_sum"] / s["lux_occ_s"] * lux_factor, 1)
            if lux_factor is not None and s["lux_occ_s"] else None)
    return {
        "observed_minutes": minutes(s["observed_s"]), "occupied_minutes": minutes(s["occupied_s"]),
        "co2_mean_ppm": round(s["co2_sum"] / s["co2_n_s"]) if s["co2_n_s"] else None, "co2_max_ppm": co2_max,
        "minutes_over_1000_ppm": minutes(s["co2_over_1000_s"]),
        "minutes_over_1500_ppm": minutes(s["co2_over_1500_s"]),
        "temp_in_band_share": ratio(s["temp_in_band_s"], s["temp_occ_s"]),
        "rh_in_band_share": ratio(s["rh_in_band_s"], s["rh_occ_s"]),
        "desk_lux_mean": desk, "minutes_below_300_lux": minutes(s["lux_low_s"]),
        "lux_ok_share": ratio(s["lux_occ_s"] - s["lux_low_s"], s["lux_occ_s"]),
        "noise_laeq_unoccupied_dba": laeq, "minutes_noise_over_45_dba": minutes(s["noise_over_45_s"]),
    }


def worst_hour(rows: Sequence[Any], tz: ZoneInfo) -> dict[str, Any] | None:
    scored = [(r.co2_sum / r.co2_n_s, r) for r in rows if r.co2_n_s]
    if not scored:
        return None
    mean, r = max(scored, key=lambda sr: (sr[0], sr[1].date, sr[1].hour))
    start = datetime.combine(r.date, time(r.hour), tz)
    return {"start": start.isoformat(timespec="seconds"),
            "end": (start + timedelta(hours=1)).isoformat(timespec="seconds"),
            "co2_mean_ppm": round(mean), "co2_max_ppm": r.co2_max}


def room_environment(conn: Connection, room_id: int, first: date, last: date) -> dict[str, Any] | None:
    room = get_room(conn, room_id)
    if room is None:
        return None
    hours = load_hours(conn, [room["school_id"]])[room["school_id"]]
    rows = _hour_rows(conn, room_id, first, last)
    per_day: dict[date, list[Any]] = defaultdict(list)
    for r in rows:
        per_day[r.date].append(r)
    days = [{"date": day.isoformat(), **environment_summary(per_day.get(day, []), room["lux_factor"])}
            for day in dates(first, last)]
    return {"room": room, "from": first.isoformat(), "to": last.isoformat(), "school_hours": hours.as_dict(),
            "thresholds": THRESHOLDS, **environment_summary(rows, room["lux_factor"]),
            "worst_hour": worst_hour(rows, hours.tz), "days": days, "rollups": pending(conn),
            "definitions": d.ENVIRONMENT}
