"""Metrics over HTTP against a real server (uvicorn, Mosquitto, SQLite and PostgreSQL):
windows published over MQTT for a school day with a known pattern -> room usage,
environment, school usage and coverage equal the figures worked out by hand; CSV is
streamed; bad dates and ranges get 422; OpenAPI documents the endpoints."""
import csv
import io
import json
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from fleet_server.db.schema import windows
from fleet_server.metrics.rollup import pending, run_rollups
from fleet_server.virtual_nodes import SHANGHAI
from tests.utils.services import wait_until

SCHOOLS = "code,name,county_code,stage,day_start,day_end,weekdays\nM1,西湖区度量小学,330106,primary,07:30,17:30,12345\n"
ROOMS = """school_code,room_code,name,type,capacity,teaching_space
M1,A101,一年级(1)班,classroom,45,
M1,A102,一年级(2)班,classroom,45,
M1,L1,科学实验室,lab,40,
M1,B301,图书馆,library,120,0
"""
DEV_A, DEV_B, DEV_C = "cf-00000000c0a1", "cf-00000000c0b2", "cf-00000000c0c3"


def recent_weekday() -> date:
    """Within the decoder's 35 days, and a finished day."""
    d = datetime.now(SHANGHAI).date() - timedelta(days=2)
    while d.weekday() >= 5:
        d -= timedelta(days=1)
    return d


def at(day: date, hh: int, mm: int) -> int:
    return int(datetime(day.year, day.month, day.day, hh, mm, tzinfo=SHANGHAI).timestamp())


def window(seq: int, ts: int, occupied_s: int, co2: int) -> bytes:
    return json.dumps({"v": 1, "seq": seq, "ts": ts, "win": 60,
                       "occ": {"occupied_s": occupied_s, "present": occupied_s > 0},
                       "env": {"co2_ppm": co2, "temp_c": 22.0, "rh_pct": 50.0, "lux": 350.0,
                               "noise_dba": 52.0 if occupied_s else 40.0}}).encode()


def post_csv(server, kind: str, text: str) -> None:
    r = server.http.post(f"/api/v1/import/{kind}", content=text.encode(), headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text


@pytest.fixture
def school_day(server, publisher):
    """M1 on a recent weekday: A101 booked 08:00-08:40 (used) and 08:50-09:30 (empty),
    used 09:35-09:50 unbooked, observed 07:30-10:00; A102 occupied all school day; L1
    observed 07:30-08:30 and empty; B301 (not a teaching space) has no node."""
    day = recent_weekday()
    wd = day.isoweekday()
    post_csv(server, "schools", SCHOOLS)
    post_csv(server, "rooms", ROOMS)
    post_csv(server, "timetable", "school_code,room_code,weekday,start,end,label\n"
                                  f"M1,A101,{wd},08:00,08:40,第1节\nM1,A101,{wd},08:50,09:30,第2节\n")
    school_id = server.get("/api/v1/schools", params={"county": 330106})["items"][0]["id"]
    room = {r["code"]: r["id"] for r in server.get(f"/api/v1/schools/{school_id}/rooms")}
    for dev, code in ((DEV_A, "A101"), (DEV_B, "A102"), (DEV_C, "L1")):
        r = server.http.put(f"/api/v1/devices/{dev}/room", json={"room_id": room[code], "from_ts": at(day, 0, 0)})
        assert r.status_code == 200
    start = at(day, 7, 30)
    sent = []
    for i in range(150):
        minute = 7 * 60 + 30 + i
        used = 8 * 60 <= minute < 8 * 60 + 40 or 9 * 60 + 35 <= minute < 9 * 60 + 50
        co2 = 1200 if 8 * 60 <= minute < 8 * 60 + 40 else 600
        sent.append((DEV_A, window(i, start + 60 * i, 60 if used else 0, co2)))
    sent += [(DEV_B, window(i, start + 60 * i, 60, 900)) for i in range(600)]
    sent += [(DEV_C, window(i, start + 60 * i, 0, 450)) for i in range(60)]
    # QoS 1 like a node, without waiting for each PUBACK before the next.
    infos = [publisher.client.publish(f"campus/v1/{dev}/telemetry", payload, qos=1) for dev, payload in sent]
    for info in infos:
        info.wait_for_publish(10)
    engine = server.app.state.engine

    def stored():
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(windows)).scalar_one() == 810
    wait_until(stored, 30, 0.1, "810 windows stored")
    run_rollups(engine)       # not waiting for the server's own job, which may hold a batch in flight:

    def rolled_up():
        with engine.connect() as conn:
            return pending(conn)["pending_windows"] == 0
    wait_until(rolled_up, 30, 0.05, "the rollup queue drained")
    return {"day": day, "school_id": school_id, "room": room}


def test_room_usage_matches_the_published_day(server, school_day):
    day, room = school_day["day"].isoformat(), school_day["room"]
    u = server.get(f"/api/v1/rooms/{room['A101']}/usage", params={"from": day, "to": day})
    assert u["from"] == u["to"] == day and u["school_days"] == 1
    assert (u["available_minutes"], u["occupied_minutes"], u["observed_minutes"]) == (600.0, 55.0, 150.0)
    assert u["utilisation"] == round(55 / 600, 4) and u["occupied_hours"] == 0.92
    assert u["data_completeness"] == 0.25
    assert [(p["start"], p["occupied_minutes"], p["utilisation"], p["no_shows"]) for p in u["periods"]] == [
        ("08:00", 40, 1.0, 0), ("08:50", 0, 0.0, 1)]
    assert [(n["date"], n["start"], n["end"], n["presence_in_first_10_minutes"]) for n in u["no_shows"]] == [
        (day, "08:50", "09:30", False)]
    assert u["unscheduled_use"] == [{"date": day, "start": f"{day}T09:35:00+08:00",
                                     "end": f"{day}T09:50:00+08:00", "minutes": 15}]
    assert (u["scheduled_minutes"], u["scheduled_occupied_minutes"]) == (80, 40)
    assert u["peak_period"]["start"] == "08:00"
    cells = {(c["weekday"], c["hour"]): c for c in u["heatmap"]}
    wd = school_day["day"].weekday()
    assert (cells[(wd, 8)]["occupied_minutes"], cells[(wd, 8)]["observed_minutes"]) == (40.0, 60.0)
    assert cells[(wd, 9)]["utilisation"] == 0.25 and cells[(wd, 7)]["utilisation"] == 0.0
    assert "occupied minutes within available / available minutes" == u["definitions"]["utilisation"]
    assert u["rollups"] == {"pending_windows": 0, "parked_windows": 0}


def test_room_environment_counts_minutes_over_thresholds_and_the_worst_hour(server, school_day):
    day, room = school_day["day"].isoformat(), school_day["room"]
    e = server.get(f"/api/v1/rooms/{room['A101']}/environment", params={"from": day, "to": day})
    assert e["minutes_over_1000_ppm"] == 40.0 and e["minutes_over_1500_ppm"] == 0.0
    assert e["co2_mean_ppm"] == (1200 * 40 + 600 * 110) // 150 and e["co2_max_ppm"] == 1200
    assert e["worst_hour"] == {"start": f"{day}T08:00:00+08:00", "end": f"{day}T09:00:00+08:00",
                               "co2_mean_ppm": 1000, "co2_max_ppm": 1200}
    assert (e["temp_in_band_share"], e["rh_in_band_share"], e["lux_ok_share"]) == (1.0, 1.0, 1.0)
    assert e["desk_lux_mean"] == 350.0
    assert e["noise_laeq_unoccupied_dba"] == 40.0 and e["minutes_noise_over_45_dba"] == 0.0
    assert e["thresholds"]["co2_breach_ppm"] == 1500 and "worst_hour" in e["definitions"]


def test_school_usage_ranks_rooms_and_flags_never_and_over_used(server, school_day):
    day, room = school_day["day"].isoformat(), school_day["room"]
    s = server.get(f"/api/v1/schools/{school_day['school_id']}/usage",
                   params={"from": day, "to": day, "limit": 2, "offset": 1})
    assert (s["rooms_total"], s["rooms_with_data"]) == (4, 3)
    assert s["utilisation"] == round((55 + 600) / (600 * 3), 4)
    assert s["rooms"]["total"] == 4 and [r["code"] for r in s["rooms"]["items"]] == ["A101", "L1"]
    assert [r["code"] for r in s["rooms_over_used"]] == ["A102"]
    assert [r["code"] for r in s["rooms_never_used"]] == ["L1"]
    assert [r["code"] for r in s["rooms_without_data"]] == ["B301"]
    # A102 has no timetable: its whole occupied day is unscheduled use.
    assert s["no_show_count"] == 1 and s["unscheduled_minutes"] == 15 + 600
    assert s["environment"]["minutes_over_1000_ppm"] == 40.0
    first = server.get(f"/api/v1/schools/{school_day['school_id']}/usage", params={"from": day, "to": day})
    assert [r["code"] for r in first["rooms"]["items"]] == ["A102", "A101", "L1", "B301"]
    assert first["rooms"]["items"][0]["room_id"] == room["A102"]


def test_school_usage_room_rows_equal_each_rooms_own_usage(server, school_day):
    """The school report computes its room rows in one pass over the school's
    room-hours; each must equal that room's own usage report, to the last digit,
    over a school day and over a range with a weekend and days without data."""
    day = school_day["day"]
    for first, last in ((day, day), (day - timedelta(days=6), day + timedelta(days=2))):
        params = {"from": first.isoformat(), "to": last.isoformat()}
        s = server.get(f"/api/v1/schools/{school_day['school_id']}/usage", params=params)
        assert s["rooms"]["total"] == 4
        for row in s["rooms"]["items"]:
            own = server.get(f"/api/v1/rooms/{row['room_id']}/usage", params=params)
            for key in ("utilisation", "occupied_minutes", "occupied_hours", "available_minutes",
                        "observed_minutes", "data_completeness", "scheduled_minutes", "scheduled_occupied_minutes",
                        "scheduled_utilisation", "no_show_count", "unscheduled_minutes",
                        "occupied_minutes_all_hours"):
                assert row[key] == own[key], (row["code"], first, key)


def test_minute_rules_follow_runs_across_hours_and_midnight():
    """Unscheduled use joins occupied minutes across an hour and across midnight, and
    leaves out booked minutes only on school days; a period's no-show reads its own
    minutes whichever hours they fall in."""
    from types import SimpleNamespace

    from fleet_server.metrics.periods import MinuteMasks, Period, period_figures, unscheduled_use

    def minutes(lo: int, hi: int) -> int:          # minutes [lo, hi) of an hour as a bitmap
        return ((1 << (hi - lo)) - 1) << lo

    def row(day: date, hour: int, occupied: int) -> SimpleNamespace:
        return SimpleNamespace(date=day, hour=hour, observed_mask=minutes(0, 60), present_mask=occupied,
                               occupied_mask=occupied)

    monday = date(2026, 3, 2)
    tuesday = monday + timedelta(days=1)
    masks = MinuteMasks([row(monday, 23, minutes(55, 60)), row(tuesday, 0, minutes(0, 7)),
                         row(tuesday, 8, minutes(40, 60)), row(tuesday, 9, minutes(0, 5)),
                         row(tuesday, 10, minutes(0, 9))])
    periods = [Period(1, "08:00", "08:45", "第1节"), Period(1, "09:30", "10:10", "第2节")]
    tz = SHANGHAI
    runs = unscheduled_use(masks, periods, [monday, tuesday], tz)
    assert [(r["start"], r["minutes"]) for r in runs] == [
        ("2026-03-02T23:55:00+08:00", 12),        # 23:55 Monday to 00:07 Tuesday
        ("2026-03-03T08:45:00+08:00", 20)]        # after the booked 08:00-08:45, over 09:00
    # Not a school day: the booked minutes count as unscheduled use too.
    assert [r["minutes"] for r in unscheduled_use(masks, periods, [monday], tz)] == [12, 25]
    f = period_figures(masks, periods, [monday, tuesday])
    assert [(p["start"], p["occupied_minutes"], p["no_shows"]) for p in f["periods"]] == [
        ("08:00", 5, 1), ("09:30", 9, 1)]
    assert f["no_show_count"] == 2 and f["scheduled_minutes"] == 85 and f["scheduled_occupied_minutes"] == 14
    assert masks.count(tuesday, 8 * 60 + 30, 9 * 60 + 30, 2) == 25


def test_csv_exports_are_streamed_tables(server, school_day):
    day = school_day["day"]
    first = (day - timedelta(days=2)).isoformat()
    r = server.http.get(f"/api/v1/rooms/{school_day['room']['A101']}/usage",
                        params={"from": first, "to": day.isoformat(), "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [row["date"] for row in rows][-1] == day.isoformat() and len(rows) == 3
    assert rows[-1]["occupied_minutes"] == "55.0" and rows[-1]["no_shows"] == "1"
    env = server.http.get(f"/api/v1/rooms/{school_day['room']['A101']}/environment",
                          params={"from": day.isoformat(), "to": day.isoformat(), "format": "csv"})
    [env_row] = list(csv.DictReader(io.StringIO(env.content.decode("utf-8-sig"))))
    assert env_row["minutes_over_1000_ppm"] == "40.0"
    school = server.http.get(f"/api/v1/schools/{school_day['school_id']}/usage",
                             params={"from": day.isoformat(), "to": day.isoformat(), "format": "csv"})
    assert [row["code"] for row in csv.DictReader(io.StringIO(school.content.decode("utf-8-sig")))] == [
        "A102", "A101", "L1", "B301"]


def test_coverage_api_reports_a_school_with_data_gaps(server, school_day):
    day = school_day["day"].isoformat()
    c = server.get("/api/v1/coverage", params={"region": 330106, "date": day})
    assert c["policy"]["goal"] == 0.95 and c["policy"]["instrumented_share_min"] == 0.8
    assert (c["schools"], c["covered"], c["coverage"], c["gap_schools"]) == (1, 0, 0.0, 1)
    [school] = c["uncovered"]["items"]
    # Three teaching spaces, all instrumented; only A102's node delivered >= 90%.
    assert (school["instrumented_share"], school["live_share"], school["reason"]) == (1.0, 0.3333, "data_gaps")
    city = server.get("/api/v1/coverage", params={"region": 330100, "date": day})
    xihu = next(ch for ch in city["children"] if ch["code"] == 330106)
    assert (xihu["schools"], xihu["covered"]) == (1, 0)


@pytest.mark.parametrize("params,needle", [
    ({"from": "2026-13-01", "to": "2026-03-03"}, "not a date"),
    ({"from": "20260301", "to": "2026-03-03"}, "not a date"),
    ({"from": "2026-03-05", "to": "2026-03-03"}, "before"),
    ({"from": "2025-01-01", "to": "2026-03-03"}, "at most 400"),
])
def test_bad_dates_and_ranges_get_422(server, params, needle):
    for path in ("/api/v1/rooms/1/usage", "/api/v1/rooms/1/environment", "/api/v1/schools/1/usage"):
        r = server.http.get(path, params=params)
        assert r.status_code == 422 and needle in r.json()["detail"], (path, r.text)


def test_unknown_things_get_404_and_coverage_checks_its_period(server):
    assert server.http.get("/api/v1/rooms/999/usage").status_code == 404
    assert server.http.get("/api/v1/rooms/999/environment").status_code == 404
    assert server.http.get("/api/v1/schools/999/usage", params={"format": "csv"}).status_code == 404
    assert server.http.get("/api/v1/coverage", params={"region": 339999}).status_code == 404
    assert server.http.get("/api/v1/coverage", params={"region": 330000, "week": "2026-W60"}).status_code == 422
    assert server.http.get("/api/v1/coverage", params={"region": 330000, "week": "2026-W10",
                                                        "date": "2026-03-02"}).status_code == 422
    week = server.get("/api/v1/coverage", params={"region": 330000, "week": "2026-W10"})
    assert week["period"] == {"week": "2026-W10", "from": "2026-03-02", "to": "2026-03-08"}
    assert len(week["children"]) == 11 and week["new_style"] == {"live": 0, "goal": 1000, "gap": 1000}


def test_openapi_documents_the_metrics_endpoints(server):
    spec = server.get("/openapi.json")
    paths = spec["paths"]
    for path in ("/api/v1/rooms/{room_id}/usage", "/api/v1/rooms/{room_id}/environment",
                 "/api/v1/schools/{school_id}/usage", "/api/v1/coverage"):
        content = paths[path]["get"]["responses"]["200"]["content"]
        assert {"application/json", "text/csv"} <= set(content), path
    params = {p["name"] for p in paths["/api/v1/rooms/{room_id}/usage"]["get"]["parameters"]}
    assert {"from", "to", "format"} <= params
    assert "utilisation" in spec["components"]["schemas"]["RoomUsage"]["properties"]
