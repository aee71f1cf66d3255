"""School and room page models: every figure comes from the service functions the JSON
API calls (fleet_server.metrics.schools / rooms, registry, devices), so the page and
/api/v1/... agree by construction; the charts are drawn from those same dicts."""
from __future__ import annotations

import time
from collections import defaultdict
from datetime import date
from typing import Any

from sqlalchemy import Connection, select

from fleet_server.alerts import service as alert_svc
from fleet_server.db.metrics_schema import room_hour
from fleet_server.db.schema import devices
from fleet_server.metrics import rooms as room_svc
from fleet_server.metrics import schools as school_svc
from fleet_server.metrics.definitions import (
    CO2_BREACH_PPM, CO2_NOTICE_PPM, DESK_LUX_MIN, NOISE_UNOCCUPIED_MAX_DBA, TEMP_BAND_C,
)
from fleet_server.registry import service as registry
from fleet_server.services import devices as device_svc
from fleet_server.web import charts
from fleet_server.web.i18n import Formatter
from fleet_server.web.room_day import room_windows

MAX_ROOMS = 1000      # the school usage API's page limit
ALERTS_SHOWN = 20     # newest open alerts on the page; the CSV beside them has every one
ENV_SUMS = room_svc.ENVIRONMENT_SUMS


def live_rooms(conn: Connection, room_list: list[dict]) -> dict[str, Any]:
    """Today's live view: per room, its devices now and whether any online one last
    reported presence (the newest presence event, devices.present)."""
    # The rooms' devices in one query (not one per node), each as GET /devices/{id} has it.
    ids = sorted({i for room in room_list for i in room["device_ids"]})
    now_s = time.time()
    found: dict[str, dict] = {}
    for i in range(0, len(ids), 500):
        for row in conn.execute(device_svc._base_query(device_svc._COLUMNS)
                                .where(devices.c.device_id.in_(ids[i:i + 500]))):
            found[row.device_id] = device_svc._public(row, now_s)
    out, occupied, offline = [], 0, []
    for room in room_list:
        devs = [found[i] for i in room["device_ids"] if i in found]
        online = [d for d in devs if d["online"]]
        present = any(d["present"] for d in online) if online else None
        occupied += bool(present)
        offline += [{"room": room, "device": d} for d in devs if not d["online"]]
        out.append({"room": room, "devices": devs, "present": present})
    return {"rooms": out, "occupied_now": occupied, "rooms_with_node": sum(1 for r in out if r["devices"]),
            "offline": offline}


def room_environments(conn: Connection, school_id: int, first: date, last: date,
                      room_list: list[dict]) -> dict[int, dict]:
    """room id -> the environment summary /api/v1/rooms/{id}/environment gives for the
    range (the same rows in the same order through the same function)."""
    h = room_hour.c
    per_room: dict[int, list[Any]] = defaultdict(list)
    # Only the columns environment_summary reads (not the minute bitmaps).
    cols = [h.room_id, h.co2_max] + [getattr(h, name) for name in ENV_SUMS]
    for r in conn.execute(select(*cols).where(h.school_id == school_id, h.date.between(first, last))
                          .order_by(h.room_id, h.date, h.hour)).all():    # one fetch, not row by row
        per_room[r.room_id].append(r)
    return {room["id"]: room_svc.environment_summary(per_room.get(room["id"], []), room["lux_factor"])
            for room in room_list}


def school_page(conn: Connection, school_id: int, first: date, last: date, fmt: Formatter) -> dict | None:
    # The usage and each room's environment from one read of the room-hours.
    usage = school_svc.school_usage(conn, school_id, first, last, limit=MAX_ROOMS, offset=0, room_environment=True)
    if usage is None:
        return None
    env = usage.pop("room_environment")
    room_list = registry.list_rooms(conn, school_id)
    live = live_rooms(conn, room_list)
    ranked = usage["rooms"]["items"]
    bars = [charts.Bar(f'{r["code"]} {r["name"]}', r["utilisation"] if r["has_data"] else None,
                       f'room.{r["room_id"]}.utilisation', f'/rooms/{r["room_id"]}') for r in ranked]
    cells = usage["heatmap"]
    start_h = int(usage["school_hours"]["day_start"][:2])
    end_h = int(usage["school_hours"]["day_end"][:2])
    hours = range(min([start_h] + [c["hour"] for c in cells]), max([end_h] + [c["hour"] for c in cells]) + 1)
    weekdays = sorted({int(x) - 1 for x in usage["school_hours"]["weekdays"]} | {c["weekday"] for c in cells})
    # Open alerts of the school, newest first: GET /api/v1/alerts?school_id=&state=open.
    alerts = alert_svc.list_alerts(conn, state="open", school_id=school_id, limit=ALERTS_SHOWN, offset=0)
    return {
        "usage": usage, "live": live, "env": env, "ranked": ranked, "alerts": alerts,
        "rooms_by_id": {r["id"]: r for r in room_list},
        "bars_svg": charts.ranked_bars(bars, fmt, title=fmt.t("rooms_ranked")),
        "heatmap_svg": charts.heatmap(cells, fmt, hours=hours, weekdays=weekdays, title=fmt.t("heatmap")),
        "legend_svg": charts.heatmap_legend(fmt),
    }


def room_page(conn: Connection, room_id: int, day: date, fmt: Formatter) -> dict | None:
    usage = room_svc.room_usage(conn, room_id, day, day)
    if usage is None:
        return None
    env = room_svc.room_environment(conn, room_id, day, day)
    room = usage["room"]
    hours = usage["school_hours"]
    wins = room_windows(conn, room_id=room_id, day=day, timezone=hours["timezone"])
    start_s = int(hours["day_start"][:2]) * 3600
    end_s = (int(hours["day_end"][:2]) + (1 if hours["day_end"][3:] != "00" else 0)) * 3600
    if wins:
        start_s = min(start_s, wins[0]["t"] // 3600 * 3600)
        end_s = max(end_s, (wins[-1]["t"] + wins[-1]["win"] + 3599) // 3600 * 3600)

    def series(key: str, scale: float = 1.0) -> list[tuple[float, float]]:
        return [(w["t"] + w["win"] / 2, w[key] * scale) for w in wins if w[key] is not None]

    co2 = series("co2_ppm")
    temp = series("temp_c")
    lux = series("lux", room["lux_factor"])
    noise = series("noise_dba")
    t = fmt.t
    charts_ = [
        ("presence", charts.presence_strip([(w["t"], w["win"], w["occupied"]) for w in wins], fmt,
                                           title=t("presence"), start_s=start_s, end_s=end_s)),
        ("co2", charts.timeline(co2, fmt, title=t("co2"), unit="ppm", y_min=400,
                                y_max=max([2000] + [v for _, v in co2]), start_s=start_s, end_s=end_s,
                                bands=[charts.Band(None, CO2_NOTICE_PPM, "ok", ""),
                                       charts.Band(CO2_NOTICE_PPM, CO2_BREACH_PPM, "notice",
                                                   f'{t("notice")} >{CO2_NOTICE_PPM}'),
                                       charts.Band(CO2_BREACH_PPM, None, "breach",
                                                   f'{t("breach")} >{CO2_BREACH_PPM}')])),
        ("temperature", charts.timeline(temp, fmt, title=t("temperature"), unit="°C",
                                        y_min=min([10.0] + [v for _, v in temp]),
                                        y_max=max([32.0] + [v for _, v in temp]), start_s=start_s, end_s=end_s,
                                        bands=[charts.Band(TEMP_BAND_C[0], TEMP_BAND_C[1], "ok",
                                                           f'{t("band")} {TEMP_BAND_C[0]:g}–{TEMP_BAND_C[1]:g}')])),
        ("light", charts.timeline(lux, fmt, title=t("light"), unit="lx", y_min=0,
                                  y_max=max([800.0] + [v for _, v in lux]), start_s=start_s, end_s=end_s,
                                  lines=[(DESK_LUX_MIN, f'{t("threshold")} {DESK_LUX_MIN:g}')])),
        ("noise", charts.timeline(noise, fmt, title=t("noise"), unit="dB(A)", y_min=20,
                                  y_max=max([80.0] + [v for _, v in noise]), start_s=start_s, end_s=end_s,
                                  lines=[(NOISE_UNOCCUPIED_MAX_DBA, f'{t("threshold")} {NOISE_UNOCCUPIED_MAX_DBA:g}')])),
    ]
    return {"usage": usage, "env": env, "room": room, "charts": charts_, "windows": len(wins)}
