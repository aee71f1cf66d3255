"""Rollups on a migrated SQLite and PostgreSQL: windows stored through the real ingest
store are summed into room_hour / room_day / school_day exactly as computed by hand;
running again changes nothing; late and redelivered windows count once; a device moved
between rooms splits its windows at the move; windows before any assignment wait for a
back-dated one; two jobs at once never double count; `campusfleet rollup`."""
import threading
import time
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from sqlalchemy import select, text
from typer.testing import CliRunner

from fleet_server.cli import app as cli
from fleet_server.db.engine import alembic_config, make_engine, migrate
from fleet_server.db.metrics_schema import room_day, room_hour, rollup_queue, school_day
from fleet_server.db.registry_schema import rooms
from fleet_server.db.schema import windows
from fleet_server.ingest.store import Received, store_batch
from fleet_server.metrics.rollup import (
    ensure_queue_trigger, pending, queue_trigger_present, rebuild_rollups, run_rollups,
)
from fleet_server.protocol import Window
from fleet_server.registry import service as registry
from fleet_server.registry.importer import import_csv
from tests.utils.databases import load_registry, migrated_engine

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 3, 2)          # a Monday
FAR_FUTURE_S = 4e9              # `now` for assignments dated in the test's past
SCHOOLS = """code,name,county_code,stage,day_start,day_end,weekdays
R1,西湖区测试小学,330106,primary,07:30,17:30,12345
"""
ROOMS = """school_code,room_code,name,type,capacity,lux_factor
R1,A101,一年级(1)班,classroom,45,1.0
R1,A102,一年级(2)班,classroom,45,1.0
"""


def at(hh: int, mm: int, day: date = DAY) -> int:
    return int(datetime(day.year, day.month, day.day, hh, mm, tzinfo=SHANGHAI).timestamp())


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    with migrated_engine(request, tmp_path, "rollup") as eng:
        load_registry(eng, ("schools", SCHOOLS), ("rooms", ROOMS))
        yield eng


def room_ids(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {r.code: r.id for r in conn.execute(select(rooms.c.code, rooms.c.id))}


def assign(engine, device_id: str, room_id: int | None, from_ts: int) -> None:
    with engine.begin() as conn:
        registry.assign_device(conn, device_id, room_id, from_ts, now_s=FAR_FUTURE_S)


def store(engine, *wins: Window, received_s: float | None = None) -> None:
    """Through the ingest's own store (INSERT .. ON CONFLICT DO NOTHING), as the server does."""
    with engine.begin() as conn:
        store_batch(conn, [Received(w, received_s or time.time()) for w in wins])


def win(device_id: str, seq: int, ts: int, occupied_s: int, *, w: int = 60, co2=None, temp=None, rh=None,
        lux=None, noise=None) -> Window:
    return Window(device_id, seq, ts, w, occupied_s, occupied_s > 0, None, None, co2, temp, rh, lux, noise)


def dump(engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {t.name: sorted(tuple(r) for r in conn.execute(select(t))) for t in (room_hour, room_day, school_day)}


def hour_row(engine, room_id: int, hour: int, day: date = DAY) -> dict:
    with engine.connect() as conn:
        r = conn.execute(select(room_hour).where(room_hour.c.room_id == room_id, room_hour.c.date == day,
                                                 room_hour.c.hour == hour)).first()
    return dict(r._mapping) if r else {}


def bits(*minutes: int) -> int:
    return sum(1 << m for m in minutes)


def test_rollups_equal_the_sums_computed_by_hand(engine):
    rid = room_ids(engine)["A101"]
    dev = "cf-0000000000a1"
    assign(engine, dev, rid, at(0, 0))
    store(engine,
          # 07:29 is before school hours; 07:30 inside. Both occupied.
          win(dev, 1, at(7, 29), 60, co2=1100, temp=20.0, rh=50.0, lux=250.0, noise=50.0),
          win(dev, 2, at(7, 30), 30, co2=1600, temp=30.0, rh=85.0, lux=400.0, noise=40.0),
          # Unoccupied: their noise is judged; no CO2 reading in the second.
          win(dev, 3, at(8, 0), 0, co2=500, noise=50.0),
          win(dev, 4, at(8, 1), 0, noise=40.0),
          # A 7-minute window from 08:57 crosses into 09:00: 180 s in hour 8, 240 s in hour 9.
          win(dev, 5, at(8, 57), 210, w=420, co2=900))
    result = run_rollups(engine)
    assert (result.windows, result.parked) == (5, 0)

    h7 = hour_row(engine, rid, 7)
    assert h7["windows"] == 2 and h7["observed_s"] == 120 and h7["occupied_s"] == 90
    assert h7["in_school_observed_s"] == 60 and h7["in_school_occupied_s"] == 30
    assert h7["co2_sum"] == 1100 * 60 + 1600 * 60 and h7["co2_n_s"] == 120 and h7["co2_max"] == 1600
    assert h7["co2_over_1000_s"] == 90 and h7["co2_over_1500_s"] == 30       # occupied seconds only
    assert (h7["temp_occ_s"], h7["temp_in_band_s"], h7["rh_occ_s"], h7["rh_in_band_s"]) == (90, 60, 90, 60)
    assert (h7["lux_sum"], h7["lux_occ_s"], h7["lux_low_s"]) == (250 * 60 + 400 * 30, 90, 60)
    assert h7["noise_n_s"] == 0                                              # occupied: not judged
    assert (h7["observed_mask"], h7["present_mask"], h7["occupied_mask"]) == (bits(29, 30),) * 3

    h8 = hour_row(engine, rid, 8)
    assert h8["windows"] == 3 and h8["observed_s"] == 60 + 60 + 180 and h8["occupied_s"] == 90
    assert h8["in_school_observed_s"] == 300 and h8["in_school_occupied_s"] == 90
    assert h8["co2_sum"] == 500 * 60 + 900 * 180 and h8["co2_n_s"] == 240 and h8["co2_max"] == 900
    assert h8["noise_energy_sum"] == pytest.approx(10 ** 5 * 60 + 10 ** 4 * 60)
    assert h8["noise_n_s"] == 120 and h8["noise_over_45_s"] == 60
    assert h8["observed_mask"] == bits(0, 1, 57, 58, 59)
    assert h8["present_mask"] == h8["occupied_mask"] == bits(57, 58, 59)

    h9 = hour_row(engine, rid, 9)
    assert h9["windows"] == 0 and h9["observed_s"] == 240 and h9["occupied_s"] == 120
    assert h9["occupied_mask"] == bits(0, 1, 2, 3)

    with engine.connect() as conn:
        day = conn.execute(select(room_day).where(room_day.c.room_id == rid)).one()._mapping
        school = conn.execute(select(school_day)).one()._mapping
    for figures in (day, school):
        assert figures["windows"] == 5 and figures["observed_s"] == 120 + 300 + 240
        assert figures["occupied_s"] == 90 + 90 + 120 and figures["in_school_occupied_s"] == 30 + 90 + 120
        assert figures["co2_max"] == 1600 and figures["noise_n_s"] == 120
    assert day["date"] == DAY and day["school_id"] == school["school_id"]


def test_running_again_and_redelivery_change_nothing(engine):
    rid = room_ids(engine)["A101"]
    dev = "cf-0000000000a2"
    assign(engine, dev, rid, at(0, 0))
    store(engine, *(win(dev, i, at(8, i), 40, co2=800) for i in range(30)))
    assert run_rollups(engine).windows == 30
    before = dump(engine)
    assert run_rollups(engine).windows == 0
    # The broker redelivers ten of them: the store keeps one row, nothing is queued.
    store(engine, *(win(dev, i, at(8, i), 40, co2=800) for i in range(10)))
    with engine.connect() as conn:
        assert pending(conn) == {"pending_windows": 0, "parked_windows": 0}
    assert run_rollups(engine).windows == 0
    assert dump(engine) == before


def test_a_late_window_is_counted_once(engine):
    rid = room_ids(engine)["A101"]
    dev = "cf-0000000000a3"
    assign(engine, dev, rid, at(0, 0))
    now = time.time()
    store(engine, *(win(dev, i, at(9, i), 60) for i in range(1, 10)), received_s=now)
    run_rollups(engine)
    # The window for 09:00 (seq 0) arrives after the later ones were rolled up: older ts,
    # newer received_s, lower seq.
    store(engine, win(dev, 0, at(9, 0), 60), received_s=now + 3600)
    assert run_rollups(engine).windows == 1
    h9 = hour_row(engine, rid, 9)
    assert h9["windows"] == 10 and h9["occupied_s"] == 600 and h9["occupied_mask"] == bits(*range(10))
    store(engine, win(dev, 0, at(9, 0), 60), received_s=now + 7200)    # and once more
    run_rollups(engine)
    assert hour_row(engine, rid, 9)["windows"] == 10


def test_a_device_moved_between_rooms_splits_its_windows_at_the_move(engine):
    ids = room_ids(engine)
    dev = "cf-0000000000a4"
    assign(engine, dev, ids["A101"], at(0, 0))
    store(engine, *(win(dev, i, at(9, 56 + i), 60) for i in range(4)))        # 09:56-09:59
    run_rollups(engine)
    assign(engine, dev, ids["A102"], at(10, 0))                               # moved at 10:00
    store(engine, *(win(dev, 4 + i, at(10, i), 30) for i in range(3)))       # 10:00-10:02
    # One more before the move arrives late: it still belongs to the old room.
    store(engine, win(dev, 99, at(9, 55), 60))
    run_rollups(engine)
    a, b = hour_row(engine, ids["A101"], 9), hour_row(engine, ids["A102"], 10)
    assert a["windows"] == 5 and a["occupied_s"] == 300 and a["occupied_mask"] == bits(55, 56, 57, 58, 59)
    assert b["windows"] == 3 and b["occupied_s"] == 90 and b["present_mask"] == bits(0, 1, 2)
    assert hour_row(engine, ids["A101"], 10) == {} and hour_row(engine, ids["A102"], 9) == {}


def test_windows_before_any_assignment_wait_for_a_backdated_one(engine):
    rid = room_ids(engine)["A102"]
    dev = "cf-0000000000a5"
    store(engine, *(win(dev, i, at(11, i), 60) for i in range(5)))
    result = run_rollups(engine)
    assert (result.windows, result.parked) == (0, 5)
    assert run_rollups(engine).parked == 0          # nothing changed: not retried
    # The technician registers the node, back-dated to when it was installed.
    assign(engine, dev, rid, at(10, 0))
    result = run_rollups(engine)
    assert (result.unparked, result.windows, result.parked) == (5, 5, 0)
    assert hour_row(engine, rid, 11)["occupied_s"] == 300
    with engine.connect() as conn:
        assert pending(conn) == {"pending_windows": 0, "parked_windows": 0}


def test_two_jobs_at_once_never_double_count(engine):
    ids = room_ids(engine)
    devs = [f"cf-0000000001{i:02x}" for i in range(4)]
    for i, dev in enumerate(devs):
        assign(engine, dev, ids["A101" if i % 2 else "A102"], at(0, 0))
    for dev in devs:
        store(engine, *(win(dev, i, at(7, 30) + 60 * i, 45) for i in range(600)))
    counts: list[int] = []
    errors: list[BaseException] = []

    def job():
        try:
            counts.append(run_rollups(engine, batch=150).windows)
        except BaseException as e:   # reported below
            errors.append(e)
    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    counts.append(run_rollups(engine).windows)        # whatever a job left behind
    assert sum(counts) == 2400
    with engine.connect() as conn:
        totals = conn.execute(select(school_day.c.windows, school_day.c.occupied_s)).one()
    assert tuple(totals) == (2400, 2400 * 45)


def test_rebuild_gives_the_same_sums_as_the_incremental_runs(engine):
    rid = room_ids(engine)["A101"]
    dev = "cf-0000000000a6"
    assign(engine, dev, rid, at(0, 0))
    for part in range(3):
        store(engine, *(win(dev, part * 20 + i, at(13, part * 20 + i), 10 * part, co2=700 + part) for i in range(20)))
        run_rollups(engine)
    before = dump(engine)
    assert rebuild_rollups(engine).windows == 60
    assert dump(engine) == before


def test_the_queue_trigger_is_recreated_when_lost(engine):
    drop = ("DROP TRIGGER trg_windows_rollup_queue" if engine.dialect.name == "sqlite"
            else "DROP TRIGGER trg_windows_rollup_queue ON windows")
    with engine.begin() as conn:
        assert queue_trigger_present(conn)
        conn.execute(text(drop))
        assert not queue_trigger_present(conn)
        assert ensure_queue_trigger(conn) is True
        assert queue_trigger_present(conn) and ensure_queue_trigger(conn) is False


def test_the_migration_queues_windows_stored_before_it(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path}/old.db")
    migrate(eng, "0002")
    with eng.begin() as conn:
        conn.execute(windows.insert(), [{"device_id": "cf-0000000000b1", "seq": i, "ts": at(8, i), "win": 60,
                                         "occupied_s": 60, "present": True, "received_s": 0.0} for i in range(3)])
    migrate(eng)
    with eng.connect() as conn:
        assert sorted(conn.execute(select(rollup_queue.c.seq, rollup_queue.c.parked))) == [
            (0, False), (1, False), (2, False)]
    with eng.begin() as conn:
        cfg = alembic_config(eng)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    migrate(eng)
    with eng.connect() as conn:
        assert queue_trigger_present(conn)
    eng.dispose()


def test_cli_rollup_runs_once_and_rebuilds(tmp_path):
    url = f"sqlite:///{tmp_path}/cli.db"
    eng = make_engine(url)
    migrate(eng)
    with eng.begin() as conn:
        registry.load_regions(conn)
    for kind, csv_text in (("schools", SCHOOLS), ("rooms", ROOMS)):
        with eng.connect() as conn:
            assert import_csv(conn, kind, csv_text).errors == []
            conn.commit()
    rid = room_ids(eng)["A101"]
    assign(eng, "cf-0000000000c1", rid, at(0, 0))
    store(eng, *(win("cf-0000000000c1", i, at(14, i), 20) for i in range(7)),
          win("cf-0000000000c2", 0, at(14, 0), 20))          # never assigned: parked
    runner = CliRunner()
    first = runner.invoke(cli, ["rollup", "--db", url])
    assert first.exit_code == 0, first.output
    assert "rolled up 7 windows" in first.output and "1 parked" in first.output
    assert "rolled up 0 windows" in runner.invoke(cli, ["rollup", "--db", url]).output
    before = dump(eng)
    rebuilt = runner.invoke(cli, ["rollup", "--db", url, "--rebuild"])
    assert rebuilt.exit_code == 0 and "rolled up 7 windows" in rebuilt.output
    assert dump(eng) == before and hour_row(eng, rid, 14)["occupied_s"] == 140
    eng.dispose()


def _cover_equals_recount(engine) -> list[tuple]:
    """school_cover_day as the job kept it, after checking it against a full recount."""
    from fleet_server.db.metrics_schema import school_cover_day
    from fleet_server.metrics.coverage_counts import cover_select
    with engine.connect() as conn:
        kept = sorted(tuple(r) for r in conn.execute(select(school_cover_day)))
        assert kept == sorted(tuple(r) for r in conn.execute(cover_select()))
    return kept


def test_school_cover_day_follows_room_day_with_concurrent_jobs_and_a_rebuild(engine):
    ids = room_ids(engine)
    devs = [f"cf-0000000002{i:02x}" for i in range(4)]
    for i, dev in enumerate(devs):
        assign(engine, dev, ids["A101" if i % 2 else "A102"], at(0, 0))
    # A101's two nodes over the whole school day; A102's two 100 + 300 minutes (2/3 of it).
    for i, dev in enumerate(devs):
        n = 600 if i % 2 else 100 + 100 * i
        store(engine, *(win(dev, k, at(7, 30) + 60 * k, 30) for k in range(n)))
    errors: list[BaseException] = []

    def job():
        try:
            run_rollups(engine, batch=97)
        except BaseException as e:   # reported below
            errors.append(e)
    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    run_rollups(engine)
    kept = _cover_equals_recount(engine)
    row = {k: v for k, v in zip(("date", "school_id", "day_s", "seen"), kept[0][:4])}
    assert len(kept) == 1 and row["day_s"] == 36000 and row["seen"] == 2
    live = dict(zip(range(5, 101, 5), kept[0][4:]))
    assert (live[65], live[70], live[100]) == (2, 1, 1)
    assert rebuild_rollups(engine).windows == 1600
    assert _cover_equals_recount(engine) == kept
