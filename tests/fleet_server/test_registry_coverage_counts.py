"""The coverage counts the registry keeps (school_spaces, school_node_spans, new_style_day;
docs/metrics.md "Coverage counts"), on SQLite and PostgreSQL: after every kind of change
(rooms imported and re-flagged, a device assigned, moved, corrected at its own instant,
taken out of service, two nodes in one room) they equal a full recount; and spans merge
back-to-back and overlapping assignments."""
import uuid
from datetime import date

import pytest
from sqlalchemy import insert, select

from fleet_server.db.engine import make_engine, migrate
from fleet_server.db.metrics_schema import new_style_day, room_day
from fleet_server.db.registry_schema import OPEN_TS, rooms, school_node_spans, school_spaces, schools
from fleet_server.metrics import coverage_keep as keep
from fleet_server.registry import service as svc
from fleet_server.registry.importer import import_csv
from tests.utils.registry_samples import ROOMS, SCHOOLS

KEPT = (school_spaces, school_node_spans, new_style_day)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    pg, name = None, None
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres")
        name = f"counts_{uuid.uuid4().hex[:12]}"
        url = pg.create_database(name)
    else:
        url = f"sqlite:///{tmp_path}/counts.db"
    eng = make_engine(url)
    migrate(eng)
    with eng.begin() as conn:
        svc.load_regions(conn)
    yield eng
    eng.dispose()
    if pg is not None:
        pg.drop_database(name)


def run_import(engine, kind, text):
    with engine.begin() as conn:
        result = import_csv(conn, kind, text)
        assert result.errors == []


def kept(conn) -> dict[str, list[tuple]]:
    return {t.name: sorted(tuple(r) for r in conn.execute(select(t))) for t in KEPT}


def assert_as_recounted(engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        now = kept(conn)
        keep.refresh_all_schools(conn)
        keep.refresh_all_new_style(conn)
        recount = kept(conn)
        conn.rollback()
    assert now == recount
    return now


def test_merge_spans():
    assert keep.merge_spans([]) == []
    assert keep.merge_spans([(10, 20), (20, None)]) == [(10, OPEN_TS)]           # back to back
    assert keep.merge_spans([(30, 40), (10, 35), (50, 60)]) == [(10, 40), (50, 60)]
    assert keep.merge_spans([(10, None), (15, 20)]) == [(10, OPEN_TS)]           # two nodes at once
    assert keep.merge_spans([(10, 10)]) == []
    assert keep.covers([(10, 40)], 10, 40) and not keep.covers([(10, 40)], 9, 40)


def test_counts_follow_every_registry_change(engine):
    run_import(engine, "schools", SCHOOLS)
    run_import(engine, "rooms", ROOMS)
    with engine.connect() as conn:
        room = {r.code: (r.id, r.school_id) for r in conn.execute(select(rooms.c.code, rooms.c.id, rooms.c.school_id))}
        s1 = conn.execute(select(schools.c.id).where(schools.c.code == "S1")).scalar()
    # S1: A101, A102, B201 teaching (B301 library is not); S2: N1.
    counts = assert_as_recounted(engine)
    assert (s1, 3) in counts["school_spaces"]

    t = 1_780_000_000
    with engine.begin() as conn:
        svc.assign_device(conn, "cf-0000000c0001", room["A101"][0], t)
        svc.assign_device(conn, "cf-0000000c0002", room["A102"][0], t)
        svc.assign_device(conn, "cf-0000000c0003", room["B301"][0], t)           # a library: not teaching
    counts = assert_as_recounted(engine)
    assert (s1, True, t, OPEN_TS, 2) in counts["school_node_spans"]
    assert (s1, False, t, OPEN_TS, 1) in counts["school_node_spans"]

    with engine.begin() as conn:
        svc.assign_device(conn, "cf-0000000c0001", room["B201"][0], t + 3600)    # moved
        svc.assign_device(conn, "cf-0000000c0004", room["A101"][0], t + 3600)    # replaced at once
        svc.assign_device(conn, "cf-0000000c0005", room["N1"][0], t + 60)
        svc.assign_device(conn, "cf-0000000c0005", room["A102"][0], t + 60)      # corrected at its instant
        svc.assign_device(conn, "cf-0000000c0002", None, t + 7200)               # out of service
    counts = assert_as_recounted(engine)
    spans = {row[:4]: row[4] for row in counts["school_node_spans"] if row[0] == s1 and row[1]}
    # A101: two nodes back to back, one span; A102: its own node to t+7200 and the
    # corrected one from t+60 (overlapping: one span); B201 from the move.
    assert spans == {(s1, True, t, OPEN_TS): 2, (s1, True, t + 3600, OPEN_TS): 1}

    # new_style_day follows the rollups and the rooms' flags.
    with engine.begin() as conn:
        conn.execute(insert(room_day), [
            {"room_id": room[code][0], "date": date(2026, 3, 2), "school_id": room[code][1], "windows": 1,
             "in_school_observed_s": 30000.0 + i} for i, code in enumerate(("A101", "B201", "N1"))])
        keep.refresh_new_style_rooms(conn, [room["A101"][0], room["B201"][0], room["N1"][0]])
    counts = assert_as_recounted(engine)
    assert [r[0] for r in counts["new_style_day"]] == sorted([room["B201"][0], room["N1"][0]])
    run_import(engine, "rooms", ROOMS.replace("S1,B201,科学实验室,lab,B,综合楼,48,92,1,0.92,",
                                              "S1,B201,科学实验室,lab,B,综合楼,48,92,0,0.92,")
               .replace("S1,A101,一年级(1)班,classroom,A,教学楼,45,68,,1.0,",
                        "S1,A101,一年级(1)班,classroom,A,教学楼,45,68,1,1.0,")
               .replace("S1,A102,一年级(2)班,classroom,A,,44,66,0,0.9,1", "S1,A102,一年级(2)班,classroom,A,,44,66,0,0.9,0"))
    counts = assert_as_recounted(engine)
    assert [r[0] for r in counts["new_style_day"]] == sorted([room["A101"][0], room["N1"][0]])
    assert (s1, 2) in counts["school_spaces"]                       # A102 no longer a teaching space
