"""Per-school usage for a range of school-local dates: the room figures rolled up, rooms
ranked by utilisation, rooms never used and over-used, and the school's environment,
all read from the rollups (room_hour, school_day) and the registry."""
from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

from sqlalchemy import Connection, select

from fleet_server.db.metrics_schema import room_hour, school_day
from fleet_server.db.registry_schema import rooms
from fleet_server.metrics import definitions as d
from fleet_server.metrics.periods import load_periods
from fleet_server.metrics.rollup import pending
from fleet_server.metrics.rooms import environment_summary, minutes, ratio, usage_figures
from fleet_server.metrics.schooltime import load_hours, school_days
from fleet_server.registry import service as registry

ROOM_FIGURES = ("utilisation", "occupied_minutes", "occupied_hours", "available_minutes", "observed_minutes",
                "data_completeness", "scheduled_minutes", "scheduled_occupied_minutes", "scheduled_utilisation",
                "no_show_count", "unscheduled_minutes", "occupied_minutes_all_hours")

_HOUR_COLUMNS = ("room_id", "date", "hour", "observed_s", "occupied_s", "in_school_observed_s",
                 "in_school_occupied_s", "observed_mask", "present_mask", "occupied_mask")


def room_rows(conn: Connection, school_id: int, first: date, last: date
              ) -> tuple[dict[str, Any], list[dict[str, Any]], list[Any]]:
    """(school hours, one figures row per room of the school, the school's room-hour rows)."""
    hours = load_hours(conn, [school_id])[school_id]
    teaching_days = school_days(conn, {school_id: hours}, first, last)[school_id]
    h = room_hour.c
    # One read of the school's room-hours, with only the columns the usage figures, the
    # minute rules and the heatmap use (not the environment sums).
    hour_rows = conn.execute(select(*(h[name] for name in _HOUR_COLUMNS))
                             .where(h.school_id == school_id, h.date.between(first, last))
                             .order_by(h.room_id, h.date, h.hour)).all()
    by_room: dict[int, list[Any]] = defaultdict(list)
    for r in hour_rows:
        by_room[r.room_id].append(r)
    c = rooms.c
    room_list = conn.execute(select(c.id, c.code, c.name, c.type, c.new_style, c.teaching_space)
                             .where(c.school_id == school_id).order_by(c.code)).all()
    periods = load_periods(conn, [x.id for x in room_list])
    out = []
    for room in room_list:
        f = usage_figures(hours, teaching_days, first, last, by_room.get(room.id, []), periods.get(room.id, []))
        out.append({"room_id": room.id, "code": room.code, "name": room.name, "type": room.type,
                    "new_style": room.new_style, "teaching_space": room.teaching_space,
                    "has_data": f["observed_minutes"] > 0, **{k: f[k] for k in ROOM_FIGURES}})
    return {"hours": hours, "school_days": teaching_days}, out, hour_rows


def ranked(room_list: list[dict]) -> list[dict]:
    """Rooms with data by utilisation, highest first; then the rooms without data."""
    with_data = sorted((x for x in room_list if x["has_data"]), key=lambda x: (-(x["utilisation"] or 0), x["code"]))
    return with_data + [x for x in room_list if not x["has_data"]]


def school_usage(conn: Connection, school_id: int, first: date, last: date, *, limit: int = 100,
                 offset: int = 0) -> dict[str, Any] | None:
    school = registry.get_school(conn, school_id)
    if school is None:
        return None
    ctx, room_list, hour_rows = room_rows(conn, school_id, first, last)
    hours, teaching_days = ctx["hours"], ctx["school_days"]
    with_data = [x for x in room_list if x["has_data"]]
    available_s = hours.day_s * len(teaching_days)
    occupied_s = sum(x["occupied_minutes"] for x in with_data) * 60
    cells: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for r in hour_rows:
        cell = cells[(r.date.weekday(), r.hour)]
        cell[0] += r.occupied_s
        cell[1] += r.observed_s
    s = school_day.c
    env_rows = conn.execute(select(school_day).where(s.school_id == school_id, s.date.between(first, last))).all()
    order = ranked(room_list)
    scheduled = sum(x["scheduled_minutes"] for x in room_list)
    scheduled_occ = sum(x["scheduled_occupied_minutes"] for x in room_list)
    return {
        "school": school, "from": first.isoformat(), "to": last.isoformat(), "school_hours": hours.as_dict(),
        "school_days": len(teaching_days),
        "available_minutes_per_room": minutes(available_s),
        "rooms_total": len(room_list), "rooms_with_data": len(with_data),
        "occupied_minutes": round(occupied_s / 60, 1),
        "occupied_hours": round(occupied_s / 3600, 2),
        "utilisation": ratio(occupied_s, available_s * len(with_data)),
        "scheduled_minutes": scheduled, "scheduled_occupied_minutes": scheduled_occ,
        "scheduled_utilisation": ratio(scheduled_occ, scheduled),
        "no_show_count": sum(x["no_show_count"] for x in room_list),
        "unscheduled_minutes": sum(x["unscheduled_minutes"] for x in room_list),
        "rooms_never_used": [{"room_id": x["room_id"], "code": x["code"], "name": x["name"]}
                             for x in with_data if x["occupied_minutes"] == 0],
        "rooms_over_used": [{"room_id": x["room_id"], "code": x["code"], "name": x["name"],
                             "utilisation": x["utilisation"]}
                            for x in order if x["has_data"] and (x["utilisation"] or 0) > d.OVER_USED_UTILISATION],
        "rooms_without_data": [{"room_id": x["room_id"], "code": x["code"], "name": x["name"]}
                               for x in room_list if not x["has_data"]],
        "heatmap": [{"weekday": wd, "hour": h, "occupied_minutes": minutes(occ), "observed_minutes": minutes(obs),
                     "utilisation": ratio(occ, obs)} for (wd, h), (occ, obs) in sorted(cells.items()) if obs],
        "environment": environment_summary(env_rows, None),
        "rooms": {"total": len(order), "limit": limit, "offset": offset, "items": order[offset:offset + limit]},
        "rollups": pending(conn),
        "definitions": d.SCHOOL_USAGE,
    }


def school_usage_rows(conn: Connection, school_id: int, first: date, last: date) -> list[dict] | None:
    """Every room of the school, ranked, for the CSV export."""
    if registry.get_school(conn, school_id) is None:
        return None
    _, room_list, _ = room_rows(conn, school_id, first, last)
    return ranked(room_list)
