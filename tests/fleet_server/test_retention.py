"""Retention on a migrated SQLite and PostgreSQL: raw windows, events and status history
older than the retention are deleted in bounded transactions, newer ones stay; the
rollups are identical before and after, the deletion queues nothing for the rollup job,
and a parked window deleted from `windows` is still rolled up once its room is known;
the daily job prunes at start; `campusfleet db prune`; the setting's bounds."""
import time

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from typer.testing import CliRunner

from fleet_server.cli import app as cli
from fleet_server.db.engine import make_engine, migrate
from fleet_server.db.metrics_schema import room_day, room_hour, rollup_queue, school_day
from fleet_server.db.registry_schema import rooms
from fleet_server.db.schema import devices, events, status_history, windows
from fleet_server.ingest.store import Received, store_batch
from fleet_server.metrics.retention import DAY_S, RetentionJob, prune
from fleet_server.metrics.rollup import pending, rebuild_rollups, run_rollups
from fleet_server.protocol import Event, Status, Window
from fleet_server.registry import service as registry
from fleet_server.settings import Settings
from tests.utils.databases import database_url, load_registry
from tests.utils.services import wait_until

SCHOOLS = "code,name,county_code,stage,day_start,day_end,weekdays\nT1,西湖区保留小学,330106,primary,07:30,17:30,12345\n"
ROOMS = "school_code,room_code,name,type,capacity\nT1,A101,一年级(1)班,classroom,45\n"
DEV = "cf-00000000e001"          # assigned: its windows are rolled up
PARKED = "cf-00000000e002"       # assigned only after the prune: its old windows wait parked
# `now` for prune(): today's UTC midnight. The data is dated relative to it, so the
# daily job, which runs on the real clock, sees the same ages to within a day.
NOW_S = float(int(time.time()) // DAY_S * DAY_S)
OLD_DAYS, NEW_DAYS = 450, 10     # either side of the default 400-day retention
OLD_WINDOWS = NEW_WINDOWS = 30


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    with database_url(request, tmp_path, "retention") as url:
        yield url


def day_start(days_ago: int) -> int:
    return int(NOW_S - days_ago * DAY_S) // 86400 * 86400


@pytest.fixture
def engine(db_url):
    """Windows, events and statuses 450 and 10 days old; DEV's rolled up, PARKED's parked."""
    eng = make_engine(db_url)
    migrate(eng)
    load_registry(eng, ("schools", SCHOOLS), ("rooms", ROOMS))
    with eng.connect() as conn:
        room = conn.execute(select(rooms.c.id)).scalar_one()
    with eng.begin() as conn:
        registry.assign_device(conn, DEV, room, day_start(OLD_DAYS + 1), now_s=NOW_S)
    batch = []
    for age in (OLD_DAYS, NEW_DAYS):
        t0 = day_start(age) + 2 * 3600          # 10:00 in Shanghai
        rx = float(t0 + 3600)
        for dev in (DEV, PARKED):
            seq0 = 0 if age == OLD_DAYS else 1000
            batch += [Received(Window(dev, seq0 + i, t0 + 60 * i, 60, 30, True, 1, 30, 800, 22.0, 45.0,
                                      320.0, 48.0), rx) for i in range(OLD_WINDOWS)]
            batch.append(Received(Event(dev, seq0 + 500, t0 + 5, True), rx))
            batch.append(Received(Status(dev, True, ts=t0, fw="0.3.0", boot=age, heap_free=60000, rssi=-60), rx))
    with eng.begin() as conn:
        store_batch(conn, batch)
    run_rollups(eng)
    yield eng
    eng.dispose()


def count(engine, table, **where) -> int:
    q = select(func.count()).select_from(table)
    for k, v in where.items():
        q = q.where(table.c[k] == v)
    with engine.connect() as conn:
        return conn.execute(q).scalar_one()


def rollup_snapshot(engine) -> dict:
    with engine.connect() as conn:
        return {t.name: sorted(tuple(r) for r in conn.execute(select(t))) for t in (room_hour, room_day, school_day)}


def test_prune_deletes_only_raw_rows_older_than_the_retention_in_bounded_chunks(engine):
    before = rollup_snapshot(engine)
    assert sum(r[3] for r in before["room_day"]) == 2 * OLD_WINDOWS       # DEV's windows, both days
    with engine.connect() as conn:
        assert pending(conn) == {"pending_windows": 0, "parked_windows": 2 * OLD_WINDOWS}
        windows_received = conn.execute(select(devices.c.windows_received)
                                        .where(devices.c.device_id == DEV)).scalar_one()

    result = prune(engine, days=400, now_s=NOW_S, chunk_rows=7)

    assert (result.windows, result.events, result.status_history) == (2 * OLD_WINDOWS, 2, 2)
    # 60 old windows in chunks of 7 (both devices share one key query): 9 transactions
    # for windows, then one each for events and status history.
    assert result.transactions == 9 + 1 + 1
    assert result.cutoff_s == NOW_S - 400 * DAY_S
    for table in (windows, events):
        with engine.connect() as conn:
            oldest = conn.execute(select(func.min(table.c.ts))).scalar_one()
        assert oldest >= result.cutoff_s
    assert count(engine, windows) == 2 * NEW_WINDOWS
    assert count(engine, events) == 2 and count(engine, status_history) == 2
    assert count(engine, status_history, boot=NEW_DAYS) == 2
    # Rollups untouched, and the deletes queued nothing: the job has nothing to do.
    assert rollup_snapshot(engine) == before
    with engine.connect() as conn:
        assert pending(conn) == {"pending_windows": 0, "parked_windows": 2 * OLD_WINDOWS}
    assert run_rollups(engine).windows == 0
    assert rollup_snapshot(engine) == before
    # The device row is the fleet's record, not raw data: kept, counter unchanged.
    with engine.connect() as conn:
        assert conn.execute(select(devices.c.windows_received)
                            .where(devices.c.device_id == DEV)).scalar_one() == windows_received
    # Running again finds nothing more.
    again = prune(engine, days=400, now_s=NOW_S, chunk_rows=7)
    assert (again.windows, again.events, again.status_history) == (0, 0, 0)


def test_a_parked_window_pruned_from_raw_storage_is_still_rolled_up_when_assigned(engine):
    prune(engine, days=400, now_s=NOW_S)
    assert count(engine, windows, device_id=PARKED) == NEW_WINDOWS
    with engine.connect() as conn:
        room = conn.execute(select(rooms.c.id)).scalar_one()
    # Installed before it was registered: a back-dated assignment covers both days.
    with engine.begin() as conn:
        registry.assign_device(conn, PARKED, room, day_start(OLD_DAYS + 1), now_s=NOW_S)
    result = run_rollups(engine)
    assert (result.unparked, result.windows) == (2 * OLD_WINDOWS, 2 * OLD_WINDOWS)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rollup_queue)).scalar_one() == 0
        per_day = dict(conn.execute(select(room_day.c.date, room_day.c.windows)).all())
    # Each day now holds both devices' 30 windows, the pruned day included.
    assert sorted(per_day.values()) == [2 * OLD_WINDOWS, 2 * OLD_WINDOWS]


def test_rebuilding_rollups_after_a_prune_keeps_the_pruned_days_and_rebuilds_the_rest(engine):
    before = rollup_snapshot(engine)
    prune(engine, days=400, now_s=NOW_S)
    # A rebuild re-derives only the days that still have every raw window: the old day
    # keeps its rollups (its windows are gone), the recent day comes out the same.
    result = rebuild_rollups(engine)
    assert result.windows == NEW_WINDOWS          # DEV's recent day (PARKED's wait parked)
    assert rollup_snapshot(engine) == before
    with engine.connect() as conn:
        assert pending(conn) == {"pending_windows": 0, "parked_windows": OLD_WINDOWS + NEW_WINDOWS}


def test_a_longer_retention_keeps_everything(engine):
    result = prune(engine, days=OLD_DAYS + 5, now_s=NOW_S)
    assert (result.windows, result.events, result.status_history) == (0, 0, 0)
    assert count(engine, windows) == 4 * OLD_WINDOWS


def test_retention_job_prunes_when_it_starts(engine):
    job = RetentionJob(engine, days=100, interval_s=3600).start()
    try:
        wait_until(lambda: job.last is not None, 30, 0.05, "the first prune")
    finally:
        job.stop()
    assert job.last.windows == 2 * OLD_WINDOWS
    assert count(engine, windows) == 2 * NEW_WINDOWS


def test_cli_db_prune(engine, db_url):
    days = 100
    out = CliRunner().invoke(cli, ["db", "prune", "--db", db_url, "--days", str(days)])
    assert out.exit_code == 0, out.output
    assert f"pruned data older than {days} days: 60 windows, 2 events, 2 statuses; rollups kept" in out.output
    assert count(engine, windows) == 2 * NEW_WINDOWS
    bad = CliRunner().invoke(cli, ["db", "prune", "--db", db_url, "--days", "0"])
    assert bad.exit_code != 0 and count(engine, windows) == 2 * NEW_WINDOWS


def test_retention_days_setting_defaults_to_400_and_refuses_zero(monkeypatch):
    assert Settings().retention_days == 400
    monkeypatch.setenv("CAMPUSFLEET_RETENTION_DAYS", "30")
    assert Settings().retention_days == 30
    monkeypatch.setenv("CAMPUSFLEET_RETENTION_DAYS", "0")
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(ValueError):
        prune(make_engine("sqlite://"), days=0)
