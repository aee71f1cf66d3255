"""Smart-campus coverage (DOMAIN.md) on a real server, SQLite and PostgreSQL: a synthetic
province slice of eight schools in three counties of two cities, each built to be
covered or not for a known reason (no nodes, nodes offline, data gaps, too few rooms
instrumented, a school holiday) -> coverage per county, city and province, the gap to
the 95% goal, each uncovered school's reason and live new-style spaces equal what the
policy gives by hand, for a school day and for an ISO week."""
import csv
import io
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from fleet_server.db.schema import windows
from fleet_server.metrics.rollup import pending, run_rollups
from fleet_server.virtual_nodes import SHANGHAI
from tests.utils.services import wait_until

MONDAY = date(2026, 3, 2)         # ISO week 2026-W10
WIN_S = 300                        # expected windows per school day: 36000 s / 300 = 120
DAY_WINDOWS = 36000 // WIN_S
# school: (county, teaching rooms, new-style room codes, rooms with a node,
#          windows each node delivers per weekday Mon..Fri)
FULL, HALF, NONE = DAY_WINDOWS, DAY_WINDOWS // 2, 0
SCHOOLS = {
    "A": (330106, 5, {"R5"}, 5, [FULL] * 5),                      # covered
    "B": (330106, 5, set(), 0, [NONE] * 5),                       # no nodes
    "C": (330106, 5, set(), 5, None),                             # 1 node delivers, 4 offline
    "D": (330106, 5, set(), 5, [HALF] * 5),                       # every node half: data gaps
    "E": (330106, 5, {"R5"}, 4, [FULL] * 5),                      # 4/5 instrumented: just covered
    "F": (330122, 2, set(), 2, [FULL] * 3 + [NONE] * 2),          # offline Thursday and Friday
    "G": (330122, 5, set(), 3, [FULL] * 5),                       # 3/5 instrumented
    "H": (330206, 2, {"R2"}, 2, [FULL] * 4 + [NONE]),             # school holiday on Friday
}


def at(day: date, hh: int, mm: int) -> int:
    return int(datetime(day.year, day.month, day.day, hh, mm, tzinfo=SHANGHAI).timestamp())


def post_csv(server, kind: str, text: str) -> None:
    r = server.http.post(f"/api/v1/import/{kind}", content=text.encode(), headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text


@pytest.fixture
def province(server):
    post_csv(server, "schools", "code,name,county_code,stage\n" + "".join(
        f"{code},覆盖测试{code}校,{county},primary\n" for code, (county, *_rest) in SCHOOLS.items()))
    rooms_csv = "school_code,room_code,name,type,teaching_space\n"
    for code, (_c, n_rooms, new_style, *_rest) in SCHOOLS.items():
        rooms_csv += "".join(f"{code},R{i},教室{i},{'new_style' if f'R{i}' in new_style else 'classroom'},\n"
                             for i in range(1, n_rooms + 1))
    rooms_csv += "E,LIB,图书馆,library,0\n"          # not a teaching space: outside the share
    post_csv(server, "rooms", rooms_csv)
    post_csv(server, "calendar", f"date,kind,school_code,label\n{MONDAY + timedelta(days=4)},holiday,H,校庆\n")
    school_ids = {s["code"]: s["id"] for s in server.get("/api/v1/schools", params={"limit": 100})["items"]}
    rows, n = [], 0
    for code, (_c, _n, _ns, with_node, per_day) in SCHOOLS.items():
        room_ids = {r["code"]: r["id"] for r in server.get(f"/api/v1/schools/{school_ids[code]}/rooms")}
        for i in range(1, with_node + 1):
            n += 1
            dev = f"cf-0000c0{n:06x}"
            r = server.http.put(f"/api/v1/devices/{dev}/room",
                                json={"room_id": room_ids[f"R{i}"], "from_ts": at(MONDAY, 0, 0)})
            assert r.status_code == 200
            counts = per_day if per_day is not None else [FULL if i == 1 else NONE] * 5
            for d, count in enumerate(counts):
                start = at(MONDAY + timedelta(days=d), 7, 30)
                rows += [{"device_id": dev, "seq": d * 1000 + k, "ts": start + k * WIN_S, "win": WIN_S,
                          "occupied_s": 100, "present": True, "co2_ppm": 800, "received_s": 0.0}
                         for k in range(count)]
    engine = server.app.state.engine
    with engine.begin() as conn:
        conn.execute(insert(windows), rows)
    run_rollups(engine)

    def drained():
        with engine.connect() as conn:
            return pending(conn)["pending_windows"] == 0
    wait_until(drained, 30, 0.05, "the rollup queue drained")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(windows)).scalar_one() == len(rows)
    return school_ids


def figures(report: dict) -> tuple:
    return report["schools"], report["covered"], report["coverage"], report["gap_schools"]


def test_coverage_of_a_school_day_per_county_city_and_province(server, province):
    day = MONDAY.isoformat()
    p = server.get("/api/v1/coverage", params={"region": 330000, "date": day})
    assert p["policy"] == {"instrumented_share_min": 0.8, "live_share_min": 0.9, "delivered_min": 0.9,
                           "week_min_days": 4, "goal": 0.95, "new_style_goal": 1000}
    # Covered: A, E, F, H of 8. 95% of 8 needs 8.
    assert figures(p) == (8, 4, 0.5, 4) and p["meets_goal"] is False
    cities = {c["code"]: c for c in p["children"]}
    assert figures(cities[330100]) == (7, 3, round(3 / 7, 4), 4)
    assert figures(cities[330200]) == (1, 1, 1.0, 0) and cities[330200]["meets_goal"] is True
    assert cities[330300]["schools"] == 0 and cities[330300]["coverage"] is None
    hz = server.get("/api/v1/coverage", params={"region": 330100, "date": day})
    counties = {c["code"]: c for c in hz["children"]}
    assert figures(counties[330106]) == (5, 2, 0.4, 3)
    assert figures(counties[330122]) == (2, 1, 0.5, 1)
    # Uncovered, closest to qualifying first (shortfall below the 0.8 / 0.9 lines).
    items = p["uncovered"]["items"]
    assert [(s["code"], s["reason"]) for s in items] == [
        ("G", "not_enough_rooms_instrumented"), ("C", "nodes_offline"), ("D", "data_gaps"),
        ("B", "not_enough_rooms_instrumented")]
    by_code = {s["code"]: s for s in items}
    assert (by_code["G"]["instrumented_share"], by_code["G"]["live_share"]) == (0.6, 1.0)
    assert (by_code["C"]["instrumented_share"], by_code["C"]["live_share"]) == (1.0, 0.2)
    assert (by_code["D"]["live_share"], by_code["B"]["instrumented_share"]) == (0.0, 0.0)
    assert by_code["C"]["child_code"] == 330100
    assert p["uncovered_by_reason"] == {"not_enough_rooms_instrumented": 2, "nodes_offline": 1, "data_gaps": 1}
    # A's and H's new-style rooms are live; E's is not instrumented.
    assert p["new_style"] == {"live": 2, "goal": 1000, "gap": 998}
    assert "95%" in p["definitions"]["gap_schools"]
    page = server.get("/api/v1/coverage", params={"region": 330000, "date": day, "limit": 2, "offset": 1})
    assert page["uncovered"]["total"] == 4 and [s["code"] for s in page["uncovered"]["items"]] == ["C", "D"]


def test_the_policy_can_be_set_per_request_and_is_echoed(server, province):
    p = server.get("/api/v1/coverage", params={"region": 330122, "date": MONDAY.isoformat(),
                                               "instrumented_share_min": 0.6})
    assert p["policy"]["instrumented_share_min"] == 0.6
    assert figures(p) == (2, 2, 1.0, 0)            # G's 3/5 now qualifies


def test_a_week_needs_four_covered_school_days(server, province):
    p = server.get("/api/v1/coverage", params={"region": 330000, "week": "2026-W10"})
    assert p["period"] == {"week": "2026-W10", "from": "2026-03-02", "to": "2026-03-08"}
    # A and E every day; H on all 4 of its school days (Friday is its holiday); F only 3.
    assert figures(p) == (8, 3, 0.375, 5)
    cities = {c["code"]: c for c in p["children"]}
    assert figures(cities[330100]) == (7, 2, round(2 / 7, 4), 5)
    assert figures(cities[330200]) == (1, 1, 1.0, 0)
    first = p["uncovered"]["items"][0]
    assert (first["code"], first["school_days"], first["covered_days"], first["reason"]) == ("F", 5, 3, "nodes_offline")
    assert first["reason_days"] == {"nodes_offline": 2}
    assert p["new_style"]["live"] == 2
    friday = server.get("/api/v1/coverage", params={"region": 330200, "date": "2026-03-06"})
    assert friday["schools"] == 0 and friday["schools_without_school_days"] == 1


def test_coverage_csv_has_a_row_per_school(server, province):
    r = server.http.get("/api/v1/coverage", params={"region": 330000, "date": MONDAY.isoformat(), "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = {row["code"]: row for row in csv.DictReader(io.StringIO(r.content.decode("utf-8-sig")))}
    assert sorted(rows) == list("ABCDEFGH")
    assert rows["A"]["covered"] == "True" and rows["B"]["reason"] == "not_enough_rooms_instrumented"


# -- trend over weeks ------------------------------------------------------------------

def deliver_full_days(server, devices: list[str], days: list[date]) -> None:
    """Each device delivers every window of those school days (seq past the fixture's)."""
    rows = [{"device_id": dev, "seq": 100_000 + day.toordinal() * 1000 + k, "ts": at(day, 7, 30) + k * WIN_S,
             "win": WIN_S, "occupied_s": 100, "present": True, "co2_ppm": 800, "received_s": 0.0}
            for dev in devices for day in days for k in range(DAY_WINDOWS)]
    engine = server.app.state.engine
    with engine.begin() as conn:
        conn.execute(insert(windows), rows)
    run_rollups(engine)

    def drained():       # the server's own rollup job may hold a batch it took meanwhile
        with engine.connect() as conn:
            return pending(conn)["pending_windows"] == 0
    wait_until(drained, 30, 0.05, "the rollup queue drained")


def devices_of(*numbers: int) -> list[str]:
    # The fixture numbers devices in SCHOOLS order: A 1-5, ..., E 16-19, ..., H 25-26.
    return [f"cf-0000c0{n:06x}" for n in numbers]


@pytest.fixture
def three_weeks(server, province):
    """W09: nothing installed yet. W10: the fixture's week. W11: A delivers Monday to
    Thursday (4 days: covered), H all week (covered), E Monday to Wednesday (3: not)."""
    w11 = MONDAY + timedelta(weeks=1)
    deliver_full_days(server, devices_of(1, 2, 3, 4, 5), [w11 + timedelta(days=i) for i in range(4)])
    deliver_full_days(server, devices_of(25, 26), [w11 + timedelta(days=i) for i in range(5)])
    deliver_full_days(server, devices_of(16, 17, 18, 19), [w11 + timedelta(days=i) for i in range(3)])
    return province


def test_trend_gives_each_iso_week_as_the_week_view_does(server, three_weeks):
    t = server.get("/api/v1/coverage/trend", params={"region": 330000, "week": "2026-W11", "weeks": 3})
    assert t["region"]["code"] == 330000 and t["policy"]["goal"] == 0.95
    assert [(w["week"], w["from"], w["to"]) for w in t["weeks"]] == [
        ("2026-W09", "2026-02-23", "2026-03-01"), ("2026-W10", "2026-03-02", "2026-03-08"),
        ("2026-W11", "2026-03-09", "2026-03-15")]
    assert [figures(w) for w in t["weeks"]] == [(8, 0, 0.0, 8), (8, 3, 0.375, 5), (8, 2, 0.25, 6)]
    assert all(w["goal"] == 0.95 and w["meets_goal"] is False for w in t["weeks"])
    for w in t["weeks"]:
        week = server.get("/api/v1/coverage", params={"region": 330000, "week": w["week"]})
        assert figures(week) == figures(w)
    hz = server.get("/api/v1/coverage/trend", params={"region": 330100, "week": "2026-W11", "weeks": 2})
    assert [figures(w) for w in hz["weeks"]] == [(7, 2, round(2 / 7, 4), 5), (7, 1, round(1 / 7, 4), 6)]


def test_trend_uses_the_policy_given(server, three_weeks):
    t = server.get("/api/v1/coverage/trend", params={"region": 330000, "week": "2026-W11", "weeks": 1,
                                                     "week_min_days": 3})
    assert t["policy"]["week_min_days"] == 3
    assert figures(t["weeks"][0]) == (8, 3, 0.375, 5)          # E's three days now count


def test_trend_csv_and_defaults(server, three_weeks):
    r = server.http.get("/api/v1/coverage/trend", params={"region": 330000, "week": "2026-W11", "weeks": 3,
                                                          "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [(x["week"], x["covered"], x["schools"], x["gap_schools"]) for x in rows] == [
        ("2026-W09", "0", "8", "8"), ("2026-W10", "3", "8", "5"), ("2026-W11", "2", "8", "6")]
    assert rows[0]["goal"] == "0.95" and rows[0]["instrumented_share_min"] == "0.8"
    assert rows[0]["week_min_days"] == "4"
    twelve = server.get("/api/v1/coverage/trend", params={"region": 330000, "week": "2026-W11"})
    assert len(twelve["weeks"]) == 12 and twelve["weeks"][0]["week"] == "2025-W52"
    assert [w["week"] for w in twelve["weeks"]][-2:] == ["2026-W10", "2026-W11"]
    now = server.get("/api/v1/coverage/trend", params={"region": 330000, "weeks": 1})
    assert len(now["weeks"]) == 1
    for params, status in (({"region": 330000, "weeks": 0}, 422), ({"region": 330000, "week": "2026-W60"}, 422),
                           ({"region": 339999}, 404)):
        assert server.http.get("/api/v1/coverage/trend", params=params).status_code == status


@pytest.mark.parametrize("delivered_min", [0.9, 0.5, 0.05, 1.0, 0.93])
def test_school_cover_day_gives_what_room_day_gives(server, three_weeks, monkeypatch, delivered_min):
    """Coverage read from school_cover_day (delivered_min on its 0.05 grid) equals coverage
    counted from room_day room by room, for every view; and the rollup job's
    incremental counts equal a full recount of room_day."""
    from fleet_server.db.metrics_schema import school_cover_day
    from fleet_server.metrics import coverage as cov
    from fleet_server.metrics import coverage_counts as cc
    from fleet_server.metrics.coverage_trend import coverage_trend
    from fleet_server.metrics.definitions import CoveragePolicy
    from fleet_server.metrics.schooltime import iso_week

    def rooms_of(code: str) -> dict[str, int]:
        return {r["code"]: r["id"] for r in server.get(f"/api/v1/schools/{three_weeks[code]}/rooms")}
    w11 = MONDAY + timedelta(weeks=1)
    # A node in E's library (not a teaching space), and A's R2 node moving to B's R1 on
    # W11's Friday: rooms the counts must leave out or judge room by room.
    lib, mover = "cf-0000c0ff0001", devices_of(2)[0]
    r = server.http.put(f"/api/v1/devices/{lib}/room",
                        json={"room_id": rooms_of("E")["LIB"], "from_ts": at(MONDAY, 0, 0)})
    assert r.status_code == 200
    r = server.http.put(f"/api/v1/devices/{mover}/room",
                        json={"room_id": rooms_of("B")["R1"], "from_ts": at(w11 + timedelta(days=4), 0, 0)})
    assert r.status_code == 200
    deliver_full_days(server, [lib], [w11 + timedelta(days=i) for i in range(5)])
    deliver_full_days(server, [mover], [w11 + timedelta(days=4)])

    engine = server.app.state.engine
    with engine.connect() as conn:
        kept = sorted(tuple(r) for r in conn.execute(select(school_cover_day)))
        recount = sorted(tuple(r) for r in conn.execute(cc.cover_select()))
        assert kept == recount and kept

    policy = CoveragePolicy(delivered_min=delivered_min)
    monday, sunday = iso_week(2026, 10)

    def views(conn):
        out = []
        for region in (330000, 330100, 330106, 330122, 330206):
            out.append(cov.coverage(conn, region, MONDAY, MONDAY, week=False, policy=policy))
            out.append(cov.coverage(conn, region, monday, sunday, week=True, policy=policy))
            out.append(cov.coverage(conn, region, w11, w11 + timedelta(days=6), week=True, policy=policy))
            out.append(cov.coverage(conn, region, w11 + timedelta(days=4), w11 + timedelta(days=4), week=False,
                                    policy=policy))
            out.append(coverage_trend(conn, region, w11, 3, policy=policy))
        return out

    with engine.connect() as conn:
        fast = views(conn)
        # PostgreSQL judges the schools with nothing to judge room by room inside the
        # database; without that, every school is judged in Python from the same counts.
        monkeypatch.setattr(cc, "JUDGE_IN_DB", False)
        in_python = views(conn)
        monkeypatch.setattr(cc, "cover_step", lambda _d: None)
        slow = views(conn)
    assert fast == in_python
    assert fast == slow
