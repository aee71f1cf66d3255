"""Per-school usage for a range of school-local dates: the room figures rolled up, rooms
ranked by utilisation, rooms never used and over-used, and the school's environment,
all read from the rollups (room_hour, school_day) and the registry."""
from __future__ import annotations

from datetime import date
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, select

from fleet_server.db.fetch import fetch_all
from fleet_server.db.metrics_schema import room_hour, school_day
from fleet_server.db.registry_schema import rooms
from fleet_server.metrics import definitions as d
from fleet_server.metrics.periods import OBSERVED, OCCUPIED, PRESENT, MinuteMasks, load_periods
from fleet_server.metrics.rollup import pending
from fleet_server.metrics.rooms import ENVIRONMENT_SUMS, environment_summary, minutes, ratio, usage_totals
from fleet_server.metrics.schooltime import load_hours, school_days
from fleet_server.registry import service as registry

ROOM_FIGURES = ("utilisation", "occupied_minutes", "occupied_hours", "available_minutes", "observed_minutes",
                "data_completeness", "scheduled_minutes", "scheduled_occupied_minutes", "scheduled_utilisation",
                "no_show_count", "unscheduled_minutes", "occupied_minutes_all_hours")

_HOUR_COLUMNS = ("room_id", "date", "hour", "occupied_s", "observed_s", "in_school_occupied_s",
                 "in_school_observed_s", "observed_mask", "present_mask", "occupied_mask")

Cells = dict[tuple[int, int], list[float]]


def room_rows(conn: Connection, school_id: int, first: date, last: date, *, environment: bool = False
              ) -> tuple[dict[str, Any], list[dict[str, Any]], Cells]:
    """(school hours and days, one figures row per room of the school, the school's
    weekday x hour cells: (weekday, hour) -> [occupied_s, observed_s]). environment:
    the first also has "environment", room id -> the room's environment summary over
    the range from the same read (GET /rooms/{id}/environment's figures)."""
    hours = load_hours(conn, [school_id])[school_id]
    teaching_days = school_days(conn, {school_id: hours}, first, last)[school_id]
    teaching = set(teaching_days)
    h = room_hour.c
    # One read of the school's room-hours, with only the columns the usage figures, the
    # minute rules and the heatmap use (not the environment sums), and one pass over
    # them (rows unpacked, not read by name): per room and date the usage sums (in the
    # order usage_figures adds them) and the day's minute bitmaps; the heatmap cells.
    columns = [h[name] for name in _HOUR_COLUMNS]
    if environment:
        columns += [h[name] for name in (*ENVIRONMENT_SUMS, "co2_max")]
    stmt = select(*columns).where(h.school_id == school_id, h.date.between(first, last)).order_by(
        h.room_id, h.date, h.hour)
    # One fetch, not row by row; for the usage figures alone as plain tuples (binary on
    # PostgreSQL), with the environment as rows (environment_summary reads them by name).
    result = conn.execute(stmt).all() if environment else fetch_all(conn, stmt)
    per_room: dict[int, tuple[dict[date, list[float]], dict[date, list[int]]]] = {}
    # Heatmap cells by weekday * 24 + hour, each summed in row order.
    cell_occ, cell_obs = [0.0] * (7 * 24), [0.0] * (7 * 24)
    weekday: dict[date, int] = {}
    room_key = day_key = None
    sums: list[float] = []
    masks: list[int] = []
    in_school = False
    wd24 = 0
    env_rows: dict[int, list[Any]] = {}
    usage_values = itemgetter(*range(len(_HOUR_COLUMNS)))
    for row in result:
        room_id, day, hour, occ_s, obs_s, school_occ_s, school_obs_s, m_obs, m_pres, m_occ = (
            usage_values(row) if environment else row)
        if environment:
            env_rows.setdefault(room_id, []).append(row)
        if room_id != room_key or day != day_key:
            sums_by_day, masks_by_day = per_room.setdefault(room_id, ({}, {}))
            if day in sums_by_day:
                sums, masks = sums_by_day[day], masks_by_day[day]
            else:
                sums = sums_by_day[day] = [0.0, 0.0, 0.0]
                masks = masks_by_day[day] = [0, 0, 0]
            in_school = day in teaching
            if day not in weekday:
                weekday[day] = day.weekday()
            wd24 = weekday[day] * 24
            room_key, day_key = room_id, day
        sums[0] += occ_s
        if in_school:
            sums[1] += school_occ_s
            sums[2] += school_obs_s
        shift = hour * 60
        masks[OBSERVED] |= m_obs << shift
        masks[PRESENT] |= m_pres << shift
        masks[OCCUPIED] |= m_occ << shift
        cell_occ[wd24 + hour] += occ_s
        cell_obs[wd24 + hour] += obs_s
    cells: Cells = {(i // 24, i % 24): [cell_occ[i], cell_obs[i]] for i in range(7 * 24) if cell_obs[i]}
    c = rooms.c
    room_list = conn.execute(select(c.id, c.code, c.name, c.type, c.new_style, c.teaching_space, c.lux_factor)
                             .where(c.school_id == school_id).order_by(c.code)).all()
    periods = load_periods(conn, [x.id for x in room_list])
    out = []
    for room in room_list:
        sums_by_day, masks_by_day = per_room.get(room.id, ({}, {}))
        f = usage_totals(hours, teaching_days, sums_by_day, MinuteMasks.of_days(masks_by_day),
                         periods.get(room.id, []))
        out.append({"room_id": room.id, "code": room.code, "name": room.name, "type": room.type,
                    "new_style": room.new_style, "teaching_space": room.teaching_space,
                    "has_data": f["observed_minutes"] > 0, **{k: f[k] for k in ROOM_FIGURES}})
    ctx: dict[str, Any] = {"hours": hours, "school_days": teaching_days}
    if environment:
        ctx["environment"] = {room.id: environment_summary(env_rows.get(room.id, []), room.lux_factor)
                              for room in room_list}
    return ctx, out, cells


def ranked(room_list: list[dict]) -> list[dict]:
    """Rooms with data by utilisation, highest first; then the rooms without data."""
    with_data = sorted((x for x in room_list if x["has_data"]), key=lambda x: (-(x["utilisation"] or 0), x["code"]))
    return with_data + [x for x in room_list if not x["has_data"]]


def school_usage(conn: Connection, school_id: int, first: date, last: date, *, limit: int = 100,
                 offset: int = 0, room_environment: bool = False) -> dict[str, Any] | None:
    """GET /schools/{id}/usage's reply. room_environment (the school page): also
    "room_environment", room id -> that room's GET /rooms/{id}/environment summary
    for the range, from the one read of the room-hours."""
    school = registry.get_school(conn, school_id)
    if school is None:
        return None
    ctx, room_list, cells = room_rows(conn, school_id, first, last, environment=room_environment)
    hours, teaching_days = ctx["hours"], ctx["school_days"]
    with_data = [x for x in room_list if x["has_data"]]
    available_s = hours.day_s * len(teaching_days)
    occupied_s = sum(x["occupied_minutes"] for x in with_data) * 60
    s = school_day.c
    env_rows = conn.execute(select(school_day).where(s.school_id == school_id, s.date.between(first, last))).all()
    order = ranked(room_list)
    scheduled = sum(x["scheduled_minutes"] for x in room_list)
    scheduled_occ = sum(x["scheduled_occupied_minutes"] for x in room_list)
    out = {
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
    if room_environment:
        out["room_environment"] = ctx["environment"]
    return out


def school_usage_rows(conn: Connection, school_id: int, first: date, last: date) -> list[dict] | None:
    """Every room of the school, ranked, for the CSV export."""
    if registry.get_school(conn, school_id) is None:
        return None
    _, room_list, _ = room_rows(conn, school_id, first, last)
    return ranked(room_list)
