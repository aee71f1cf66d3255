"""The batch writer (fleet_server/ingest/store.py) on SQLite and PostgreSQL: which
messages of a batch are new and which are redeliveries when both kinds are mixed in
one batch (and in one multi-row statement), and what the device row looks like after."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from fleet_server.db.engine import make_engine, migrate
from fleet_server.db.schema import devices
from fleet_server.ingest.store import ACCEPTED, DUPLICATE, Received, report_json, store_batch
from fleet_server.protocol import Event, Status, Window

DEV = "cf-00000000f001"
DEV2 = "cf-00000000f002"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path) -> Iterator[Engine]:
    name = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/store.db"
    else:
        pg = request.getfixturevalue("postgres")
        name = f"store_{uuid.uuid4().hex[:12]}"
        url = pg.create_database(name)
    eng = make_engine(url)
    migrate(eng)
    yield eng
    eng.dispose()
    if name:
        request.getfixturevalue("postgres").drop_database(name)


def win(dev: str, seq: int, ts: int, occupied: int = 30) -> Window:
    return Window(dev, seq, ts, 60, occupied, occupied > 0, 3, occupied, 700, 21.5, 40.0, 300.0, 45.0)


def store(engine: Engine, items: list[Received]) -> list[str]:
    with engine.begin() as conn:
        return store_batch(conn, items)


def device(engine: Engine, dev: str):
    with engine.connect() as conn:
        return conn.execute(select(devices).where(devices.c.device_id == dev)).one()


def test_a_batch_mixing_new_windows_and_redeliveries_tells_each_apart(engine):
    t0 = int(time.time()) // 60 * 60 - 6000
    rx = time.time()
    assert store(engine, [Received(win(DEV, s, t0 + 60 * s), rx) for s in (1, 2, 3)]) == [ACCEPTED] * 3
    batch = [Received(win(DEV, s, t0 + 60 * s), rx + 1) for s in (2, 4, 3, 5)]
    batch += [Received(win(DEV, 4, t0 + 240), rx + 1)]          # a repeat inside the batch
    batch += [Received(win(DEV2, 1, t0 + 60), rx + 1)]
    assert store(engine, batch) == [DUPLICATE, ACCEPTED, DUPLICATE, ACCEPTED, DUPLICATE, ACCEPTED]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT device_id, seq FROM windows ORDER BY device_id, seq")).all()
    assert [tuple(r) for r in rows] == [(DEV, 1), (DEV, 2), (DEV, 3), (DEV, 4), (DEV, 5), (DEV2, 1)]
    d = device(engine, DEV)
    assert d.windows_received == 5
    assert d.last_window_ts == t0 + 300 and json.loads(d.last_window)["seq"] == 5
    assert d.last_seen_s == pytest.approx(rx + 1)
    assert device(engine, DEV2).windows_received == 1


def test_a_batch_of_only_redeliveries_writes_nothing(engine):
    t0 = int(time.time()) // 60 * 60 - 6000
    first = [Received(win(DEV, s, t0 + 60 * s), time.time()) for s in range(1, 1201)]  # > one SQLite statement
    assert store(engine, first) == [ACCEPTED] * 1200
    assert store(engine, first[::-1]) == [DUPLICATE] * 1200
    assert device(engine, DEV).windows_received == 1200


def test_an_older_window_arriving_late_counts_but_does_not_replace_the_newest(engine):
    t0 = int(time.time()) // 60 * 60 - 6000
    store(engine, [Received(win(DEV, 10, t0 + 600, occupied=10), time.time())])
    store(engine, [Received(win(DEV, 9, t0 + 540, occupied=20), time.time())])   # from the node's outbox
    d = device(engine, DEV)
    assert d.windows_received == 2 and d.last_window_ts == t0 + 600
    assert json.loads(d.last_window)["occ"]["occupied_s"] == 10


def test_events_and_statuses_update_the_device_in_the_same_batch(engine):
    ts = int(time.time()) // 60 * 60 - 600
    rx = time.time()
    birth = Status(DEV, True, ts=ts, fw="1.2.0", hw="s3", boot=4, reset="power", uptime_s=9, heap_free=50000,
                   rssi=-60, ip="10.0.0.2", outbox=0, clock="ntp", sensors={"co2": "ok"})
    out = store(engine, [Received(birth, rx, retained=True), Received(Event(DEV, 1, ts, True), rx),
                         Received(Event(DEV, 2, ts + 5, False), rx), Received(Event(DEV, 1, ts, True), rx)])
    assert out == [ACCEPTED, ACCEPTED, ACCEPTED, DUPLICATE]
    d = device(engine, DEV)
    assert d.online is True and d.online_since_s == pytest.approx(rx) and d.fw == "1.2.0"
    assert d.present is False and d.present_ts == ts + 5
    assert json.loads(d.sensors) == {"co2": "ok"}
    assert d.last_seen_s == pytest.approx(rx)       # the events were live; the retained birth alone is not
    store(engine, [Received(Status(DEV, False), rx + 10)])
    d = device(engine, DEV)
    assert d.online is False and d.online_since_s == pytest.approx(rx + 10) and d.fw == "1.2.0"


opt_int = st.one_of(st.none(), st.integers(0, 2**31 - 1))
opt_float = st.one_of(st.none(), st.floats(-40, 200000, allow_nan=False), st.sampled_from([0.0, -0.0, 1e-7, 85.0]))


@given(st.builds(Window, st.just(DEV), st.integers(0, 2**31 - 1), st.integers(0, 2**40), st.integers(10, 900),
                 st.integers(0, 900), st.booleans(), opt_int, opt_int, opt_int, opt_float, opt_float, opt_float,
                 opt_float))
def test_last_window_json_is_exactly_what_json_dumps_makes_of_the_report(w):
    assert report_json(w) == json.dumps(w.as_report(), separators=(",", ":"))
