"""Kept coverage days (fleet_server/metrics/coverage_kept.py, coverage_read.py), SQLite and
PostgreSQL: on test_coverage.py's synthetic province, every coverage view read from the
kept rows equals the view judged at request time (all schools kept, some kept, other
policy values); registry changes forget exactly the schools they touch; the rollup job
counts again the kept school-days it adds windows to; and after all that the kept rows
equal a count from scratch."""
from datetime import timedelta

import pytest
from sqlalchemy import select

from fleet_server.db.metrics_schema import coverage_day, coverage_kept, coverage_new_style, coverage_week
from fleet_server.db.registry_schema import schools
from fleet_server.metrics import coverage as cov
from fleet_server.metrics import coverage_kept as ck
from fleet_server.metrics import coverage_read, rollup
from fleet_server.metrics.coverage_keep import _lock_schools
from fleet_server.metrics.coverage_trend import coverage_trend
from fleet_server.metrics.definitions import CoveragePolicy
from tests.fleet_server.test_coverage import (  # noqa: F401  (fixtures)
    MONDAY, SCHOOLS, at, deliver_full_days, devices_of, post_csv, province, three_weeks,
)

W11 = MONDAY + timedelta(weeks=1)
POLICIES = (CoveragePolicy(), CoveragePolicy(instrumented_share_min=0.6, week_min_days=3),
            CoveragePolicy(live_share_min=0.5, week_min_days=5))


@pytest.fixture
def no_server_keeper(server, monkeypatch):
    """The server's rollup job keeps coverage every 5 s; these tests keep it themselves,
    from nothing kept (the job may have run while the fixtures were built)."""
    monkeypatch.setattr(rollup, "keep_coverage", lambda *a, **k: 0)
    with server.app.state.engine.begin() as conn:
        # After a keeper transaction under way (it holds the schools' locks; on SQLite
        # the write lock, which forget() waits for too).
        _lock_schools(conn, list(conn.execute(select(schools.c.id)).scalars()))
        ck.forget(conn)


def views(conn, policy: CoveragePolicy) -> list:
    out = []
    for region in (330000, 330100, 330106, 330122, 330206):
        for first, last, week in ((MONDAY, MONDAY, False), (MONDAY, MONDAY + timedelta(days=6), True),
                                  (W11, W11 + timedelta(days=6), True), (W11 + timedelta(days=4),) * 2 + (False,),
                                  (MONDAY - timedelta(days=2),) * 2 + (False,)):   # a Saturday
            out.append(cov.coverage(conn, region, first, last, week=week, policy=policy, limit=3))
            out.append(cov.coverage(conn, region, first, last, week=week, policy=policy, limit=2, offset=2))
        out.append(coverage_trend(conn, region, W11, 3, policy=policy))
    return out


def request_time(conn, monkeypatch, policy) -> list:
    with monkeypatch.context() as m:
        m.setattr(coverage_read, "applies", lambda _p: False)
        return views(conn, policy)


def kept_rows(conn) -> tuple[list, list, list]:
    return tuple(sorted(tuple(r) for r in conn.execute(select(table)))
                 for table in (coverage_day, coverage_new_style, coverage_week))


def kept_schools(conn) -> set[int]:
    return set(conn.execute(select(coverage_kept.c.school_id)).scalars())


def rooms_of(server, school_id: int) -> dict[str, int]:
    return {r["code"]: r["id"] for r in server.get(f"/api/v1/schools/{school_id}/rooms")}


def test_kept_views_equal_request_time_views(server, three_weeks, no_server_keeper, monkeypatch):
    ids = three_weeks
    engine = server.app.state.engine
    # A node in E's library (not a teaching space) and A's R2 node moving to B on W11's
    # Friday: rooms counted room by room.
    for dev, room, day in (("cf-0000c0ff0001", rooms_of(server, ids["E"])["LIB"], MONDAY),
                           (devices_of(2)[0], rooms_of(server, ids["B"])["R1"], W11 + timedelta(days=4))):
        r = server.http.put(f"/api/v1/devices/{dev}/room", json={"room_id": room, "from_ts": at(day, 0, 0)})
        assert r.status_code == 200
    deliver_full_days(server, ["cf-0000c0ff0001"], [W11 + timedelta(days=i) for i in range(5)])
    deliver_full_days(server, devices_of(2), [W11 + timedelta(days=4)])

    assert ck.keep_coverage(engine) == len(SCHOOLS)
    with engine.connect() as conn:
        assert kept_schools(conn) == set(ids.values())
        day = {r.school_id: r for r in conn.execute(select(coverage_day).where(coverage_day.c.date == MONDAY))}
        # (spaces, instrumented, live, offline) as SCHOOLS builds them, on W10's Monday.
        expect = {"A": (5, 5, 5, 0), "B": (5, 0, 0, 0), "C": (5, 5, 1, 4), "D": (5, 5, 0, 0),
                  "E": (5, 4, 4, 0), "F": (2, 2, 2, 0), "G": (5, 3, 3, 0), "H": (2, 2, 2, 0)}
        assert {code: (day[i].spaces, day[i].instrumented, day[i].live, day[i].offline)
                for code, i in ids.items()} == expect
        holiday = conn.execute(select(coverage_day).where(coverage_day.c.school_id == ids["H"],
                                                          coverage_day.c.date == MONDAY + timedelta(days=4))).first()
        assert holiday is None           # H's school holiday is not a school day
        for policy in POLICIES:
            assert views(conn, policy) == request_time(conn, monkeypatch, policy)
    # Some schools kept, some judged at request time, in one report.
    with engine.begin() as conn:
        ck.forget(conn, [ids["A"], ids["C"], ids["G"]])
    with engine.connect() as conn:
        assert kept_schools(conn) == set(ids.values()) - {ids["A"], ids["C"], ids["G"]}
        assert views(conn, CoveragePolicy()) == request_time(conn, monkeypatch, CoveragePolicy())
    # Another delivered_min is judged at request time: the same either way.
    with engine.connect() as conn:
        other = CoveragePolicy(delivered_min=0.5)
        assert views(conn, other) == request_time(conn, monkeypatch, other)


def test_changes_forget_the_schools_they_touch_and_rollups_count_again(server, three_weeks, no_server_keeper,
                                                                      monkeypatch):
    ids = three_weeks
    engine = server.app.state.engine
    ck.keep_coverage(engine)
    everyone = set(ids.values())
    with engine.connect() as conn:
        assert kept_schools(conn) == everyone
        k = conn.execute(select(coverage_kept).where(coverage_kept.c.school_id == ids["A"])).first()
        assert k.kept_from == MONDAY - timedelta(weeks=ck.BEFORE_WEEKS)      # MONDAY: the first data
        assert k.kept_to == ck.school_today() + timedelta(days=ck.AHEAD_DAYS)

    # Re-importing the same rooms changes nothing, so nothing is forgotten.
    post_csv(server, "rooms", "school_code,room_code,name,type,teaching_space\nA,R1,教室1,classroom,\n")
    with engine.connect() as conn:
        assert kept_schools(conn) == everyone
    # A node assigned in B: B is counted again, nobody else.
    r = server.http.put("/api/v1/devices/cf-0000c0ff0002/room",
                        json={"room_id": rooms_of(server, ids["B"])["R1"], "from_ts": at(W11, 0, 0)})
    assert r.status_code == 200
    # A room added to G, a holiday for D, new hours for E.
    post_csv(server, "rooms", "school_code,room_code,name,type,teaching_space\nG,R9,教室9,classroom,\n")
    post_csv(server, "calendar", f"date,kind,school_code,label\n{W11 + timedelta(days=2)},holiday,D,运动会\n")
    post_csv(server, "schools", "code,name,county_code,stage,day_start,day_end\n"
                                "E,覆盖测试E校,330106,primary,08:00,17:30\n")
    with engine.connect() as conn:
        assert kept_schools(conn) == everyone - {ids["B"], ids["G"], ids["D"], ids["E"]}

    # F's nodes deliver W10's Thursday after all (late windows): the rollup job counts
    # F's kept day again in its transaction.
    thursday = MONDAY + timedelta(days=3)
    with engine.connect() as conn:
        before = conn.execute(select(coverage_day).where(coverage_day.c.school_id == ids["F"],
                                                         coverage_day.c.date == thursday)).first()
    assert (before.instrumented, before.live, before.offline) == (2, 0, 2)
    deliver_full_days(server, devices_of(20, 21), [thursday])
    with engine.connect() as conn:
        after = conn.execute(select(coverage_day).where(coverage_day.c.school_id == ids["F"],
                                                        coverage_day.c.date == thursday)).first()
        assert (after.instrumented, after.live, after.offline) == (2, 2, 0)
        assert views(conn, CoveragePolicy()) == request_time(conn, monkeypatch, CoveragePolicy())

    # A province-wide calendar day forgets everyone.
    post_csv(server, "calendar", f"date,kind,school_code,label\n{W11 + timedelta(days=1)},holiday,,台风停课\n")
    with engine.connect() as conn:
        assert kept_schools(conn) == set()

    # Kept again, the rows equal a count from scratch (an empty table, then the keeper).
    assert ck.keep_coverage(engine) == len(SCHOOLS)
    with engine.connect() as conn:
        incremental = kept_rows(conn)
        assert views(conn, CoveragePolicy()) == request_time(conn, monkeypatch, CoveragePolicy())
    with engine.begin() as conn:
        ck.forget(conn)
    ck.keep_coverage(engine)
    with engine.connect() as conn:
        assert kept_rows(conn) == incremental and all(incremental)


def test_the_keeper_goes_on_where_it_stopped(server, three_weeks, no_server_keeper, monkeypatch):
    engine = server.app.state.engine
    monkeypatch.setattr(ck, "CHUNK_SCHOOLS", {"postgresql": 3, "sqlite": 3})
    # A spent budget still counts one transaction's schools, then stops.
    assert ck.keep_coverage(engine, budget_s=0) == 3
    assert ck.keep_coverage(engine, budget_s=0) == 3
    assert ck.keep_coverage(engine) == 2
    assert ck.keep_coverage(engine) == 0
    # The next day only the new day is counted; nothing else is rewritten.
    with engine.connect() as conn:
        rows = kept_rows(conn)
    tomorrow = ck.school_today() + timedelta(days=1)
    assert ck.keep_coverage(engine, today=tomorrow) == len(SCHOOLS)
    with engine.connect() as conn:
        k = set(conn.execute(select(coverage_kept.c.kept_to)).scalars())
        assert k == {tomorrow + timedelta(days=ck.AHEAD_DAYS)}
        new_rows = kept_rows(conn)
    added = set(new_rows[0]) - set(rows[0])
    assert set(rows[0]) <= set(new_rows[0])
    assert {r[0] for r in added} <= {tomorrow + timedelta(days=ck.AHEAD_DAYS)}
