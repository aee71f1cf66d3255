"""Alerts on a migrated SQLite and PostgreSQL: nodes and windows stored through the real
ingest store, the evaluator run at fixed times. A node offline for more than 30 minutes
of school hours raises an alert, nights, weekends and holidays do not count, coming back
resolves it; a CO2 breach while occupied raises one alert per episode with its peak and
resolves; a failed sensor in a status raises and recovers. Over HTTP (a real server):
list filters, ack, CSV, OpenAPI; a failed sensor published over MQTT."""
import csv
import io
import json
import time
from datetime import date, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from fleet_server.alerts.evaluator import evaluate
from fleet_server.db.alerts_schema import alerts
from fleet_server.db.registry_schema import rooms
from fleet_server.db.schema import metadata
from fleet_server.ingest.store import Received, store_batch
from fleet_server.protocol import Status, Window
from fleet_server.registry import service as registry
from fleet_server.virtual_nodes import SHANGHAI
from tests.utils.databases import load_registry, migrated_engine
from tests.utils.services import wait_until

MON = date(2026, 3, 2)                  # a Monday; Wednesday 2026-03-04 is a holiday below
TUE, WED, THU, FRI = (date(2026, 3, d) for d in (3, 4, 5, 6))
SAT, SUN, NEXT_MON = date(2026, 3, 7), date(2026, 3, 8), date(2026, 3, 9)
FAR_FUTURE_S = 4e9
SCHOOLS = """code,name,county_code,stage,day_start,day_end,weekdays
S1,西湖区告警小学,330106,primary,07:30,17:30,12345
S2,龙港市告警中学,330383,senior,07:30,17:30,12345
"""
ROOMS = """school_code,room_code,name,type,capacity
S1,A101,一年级(1)班,classroom,45
S1,A102,一年级(2)班,classroom,45
S2,C301,高一(1)班,classroom,50
"""
CALENDAR = "date,kind,school_code,label\n2026-03-04,holiday,,测试假日\n"


def at(day: date, hh: int, mm: int, ss: int = 0) -> int:
    return int(datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=SHANGHAI).timestamp())


def iso(day: date, hh: int, mm: int) -> str:
    return f"{day.isoformat()}T{hh:02d}:{mm:02d}:00+08:00"


def load_rooms(engine) -> dict[str, int]:
    load_registry(engine, ("schools", SCHOOLS), ("rooms", ROOMS), ("calendar", CALENDAR))
    with engine.connect() as conn:
        return {r.code: r.id for r in conn.execute(select(rooms.c.code, rooms.c.id))}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    with migrated_engine(request, tmp_path, "alerts") as eng:
        eng.room = load_rooms(eng)
        yield eng


def assign(engine, device_id: str, room_id: int, from_ts: int) -> None:
    with engine.begin() as conn:
        registry.assign_device(conn, device_id, room_id, from_ts, now_s=FAR_FUTURE_S)


def store(engine, received_s: float, *msgs) -> None:
    """Through the ingest's own store, received at `received_s` (server clock)."""
    with engine.begin() as conn:
        store_batch(conn, [Received(m, received_s) for m in msgs])


def birth(dev: str, ts: int, sensors: dict | None = None) -> Status:
    return Status(dev, True, ts=ts, fw="0.3.0", hw="s3-v1", boot=1, reset="power", uptime_s=60,
                  heap_free=60000, rssi=-60, ip="10.0.0.2", outbox=0, clock="ntp",
                  sensors=sensors or {"co2": "ok", "th": "ok"})


def will(dev: str) -> Status:
    return Status(dev, False)


def win(dev: str, seq: int, ts: int, *, occupied_s: int = 60, co2: int | None = 800) -> Window:
    return Window(dev, seq, ts, 60, occupied_s, occupied_s > 0, None, None, co2, 22.0, 50.0, 400.0, 45.0)


def run(engine, now_s: float):
    with engine.begin() as conn:
        return evaluate(conn, now_s)


def rows(engine, kind: str | None = None) -> list[dict]:
    stmt = select(alerts).order_by(alerts.c.opened_at, alerts.c.id)
    if kind is not None:
        stmt = stmt.where(alerts.c.kind == kind)
    with engine.connect() as conn:
        return [{**r._mapping, "detail": json.loads(r.detail)} for r in conn.execute(stmt)]


def test_migration_creates_exactly_the_declared_alert_tables(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in diff if "alert" in repr(d)] == []


def test_offline_in_school_hours_raises_after_30_minutes_and_resolves_when_back(engine):
    dev = "cf-00000000a001"
    assign(engine, dev, engine.room["A101"], at(MON, 0, 0))
    store(engine, at(MON, 8, 0), birth(dev, at(MON, 8, 0)))
    store(engine, at(MON, 8, 1), win(dev, 1, at(MON, 8, 0)))
    # Silent from 08:01: offline once 3 windows have passed (08:04); 30 school minutes at 08:34.
    for now in (at(MON, 8, 30), at(MON, 8, 34)):
        run(engine, now)
        assert rows(engine) == []
    assert run(engine, at(MON, 8, 35)).opened == 1
    [a] = rows(engine)
    assert (a["kind"], a["severity"], a["subject"], a["device_id"]) == ("offline", "warning", dev, dev)
    assert a["room_id"] == engine.room["A101"] and a["school_id"] is not None
    assert a["opened_at"] == at(MON, 8, 34) and a["resolved_at"] is None
    assert a["detail"] == {"offline_since": iso(MON, 8, 4), "cause": "silence", "school_minutes_offline": 31.0}

    again = run(engine, at(MON, 8, 35))                  # idempotent at the same time
    assert again.opened == again.resolved == 0 and len(rows(engine)) == 1

    store(engine, at(MON, 9, 0), win(dev, 2, at(MON, 8, 59)))
    assert run(engine, at(MON, 9, 0, 30)).resolved == 1
    [a] = rows(engine)
    assert a["resolved_at"] == at(MON, 9, 0, 30) and a["detail"]["resolution"] == "online"

    # Silent again from 09:00: a recurrence is a new alert; the old one stays resolved.
    run(engine, at(MON, 9, 40))
    old, new = rows(engine)
    assert old["id"] == a["id"] and old["resolved_at"] is not None
    assert new["resolved_at"] is None and new["opened_at"] == at(MON, 9, 33)
    assert new["detail"]["offline_since"] == iso(MON, 9, 3)


@pytest.mark.parametrize("went_offline,quiet_checks,raised_check,opened", [
    # night: 18:00 Monday; Tuesday 07:30-08:00 is the first half hour of school time
    ((MON, 18, 0), [(MON, 23, 59), (TUE, 7, 59)], (TUE, 8, 1), (TUE, 8, 0)),
    # weekend: 20 minutes on Friday (17:10-17:30), then nothing until Monday 07:30
    ((FRI, 17, 10), [(FRI, 23, 0), (SAT, 12, 0), (SUN, 17, 0), (NEXT_MON, 7, 39)], (NEXT_MON, 7, 41),
     (NEXT_MON, 7, 40)),
    # holiday: Wednesday is a holiday in the imported calendar
    ((TUE, 20, 0), [(WED, 10, 0), (WED, 16, 0), (THU, 7, 59)], (THU, 8, 1), (THU, 8, 0)),
], ids=["night", "weekend", "holiday"])
def test_offline_outside_school_hours_does_not_count(engine, went_offline, quiet_checks, raised_check, opened):
    dev, unassigned = "cf-00000000a002", "cf-00000000a0ff"
    day, hh, mm = went_offline
    assign(engine, dev, engine.room["A102"], at(MON, 0, 0))
    store(engine, at(day, hh, mm) - 600, birth(dev, at(day, hh, mm) - 600), birth(unassigned, at(day, hh, mm) - 600))
    store(engine, at(day, hh, mm), will(dev), will(unassigned))
    for check in quiet_checks:
        run(engine, at(*check))
        assert rows(engine) == [], check
    run(engine, at(*raised_check))
    [a] = rows(engine)                                  # never for a node in no room
    assert a["device_id"] == dev and a["opened_at"] == at(*opened)
    assert a["detail"]["cause"] == "will" and a["detail"]["offline_since"] == iso(day, hh, mm)


def test_co2_breach_is_one_alert_per_episode_with_its_peak(engine):
    dev, empty_room_dev = "cf-00000000b001", "cf-00000000b002"
    assign(engine, dev, engine.room["A101"], at(MON, 0, 0))
    assign(engine, empty_room_dev, engine.room["A102"], at(MON, 0, 0))
    t = lambda mm: at(MON, 10, mm)  # noqa: E731
    store(engine, t(2), win(dev, 1, t(0), co2=1200), win(dev, 2, t(1), co2=1600),
          # Unoccupied: CO2 is judged on occupied time only (DOMAIN.md).
          win(empty_room_dev, 1, t(1), occupied_s=0, co2=2400))
    run(engine, t(2) + 30)
    [a] = rows(engine, "co2_breach")
    assert (a["room_id"], a["opened_at"], a["last_seen_at"]) == (engine.room["A101"], t(1), t(2))
    assert a["resolved_at"] is None
    assert a["detail"]["peak_co2_ppm"] == 1600 and a["severity"] == "critical"

    store(engine, t(4), win(dev, 3, t(2), co2=1900), win(dev, 4, t(3), co2=1700))
    run(engine, t(4) + 30)
    [a2] = rows(engine, "co2_breach")                  # the same episode, grown
    assert a2["id"] == a["id"] and a2["last_seen_at"] == t(4) and a2["resolved_at"] is None
    assert (a2["detail"]["peak_co2_ppm"], a2["detail"]["windows"], a2["device_id"]) == (1900, 3, dev)

    store(engine, t(5), win(dev, 5, t(4), co2=1400))    # below the threshold: the episode ends
    assert run(engine, t(5) + 30).resolved == 1
    [a3] = rows(engine, "co2_breach")
    assert a3["resolved_at"] == t(4) and a3["detail"] == {
        "peak_co2_ppm": 1900, "threshold_ppm": 1500, "windows": 3, "start": iso(MON, 10, 1),
        "end": iso(MON, 10, 4), "ended": "clear"}
    run(engine, t(6))                                   # its windows are still in the lookback
    assert len(rows(engine, "co2_breach")) == 1

    # A recurrence is a new episode; when the node then goes quiet it ends at its last window.
    store(engine, t(11), win(dev, 6, t(10), co2=1650))
    run(engine, t(11) + 30)
    store(engine, t(12), win(dev, 7, t(11), co2=1550))
    run(engine, t(12) + 30)
    first, second = rows(engine, "co2_breach")
    assert first["id"] == a["id"] and second["resolved_at"] is None and second["opened_at"] == t(10)
    run(engine, t(30))
    _, second = rows(engine, "co2_breach")
    assert second["resolved_at"] == t(12) and second["detail"]["ended"] == "no_data"
    assert second["detail"]["peak_co2_ppm"] == 1650 and second["detail"]["windows"] == 2


def test_failed_sensor_raises_from_a_status_and_resolves_on_recovery(engine):
    dev = "cf-00000000c001"
    assign(engine, dev, engine.room["C301"], at(MON, 0, 0))
    store(engine, at(MON, 9, 0), birth(dev, at(MON, 9, 0), {"co2": "ok", "mic": "failed", "lux": "failed",
                                                            "radar": "missing"}))
    assert run(engine, at(MON, 9, 1)).opened == 2
    assert run(engine, at(MON, 9, 2)).opened == 0
    found = {a["subject"]: a for a in rows(engine, "sensor_failed")}
    assert set(found) == {f"{dev}/mic", f"{dev}/lux"}
    assert all(a["opened_at"] == at(MON, 9, 0) and a["room_id"] == engine.room["C301"] for a in found.values())

    store(engine, at(MON, 9, 10), birth(dev, at(MON, 9, 10), {"co2": "ok", "mic": "ok", "lux": "failed"}))
    run(engine, at(MON, 9, 11))
    found = {a["subject"]: a for a in rows(engine, "sensor_failed")}
    assert found[f"{dev}/mic"]["resolved_at"] == at(MON, 9, 10) and found[f"{dev}/mic"]["detail"]["state"] == "ok"
    assert found[f"{dev}/lux"]["resolved_at"] is None

    store(engine, at(MON, 9, 20), birth(dev, at(MON, 9, 20), {"co2": "ok", "mic": "ok", "lux": "missing"}))
    run(engine, at(MON, 9, 21))
    assert all(a["resolved_at"] is not None for a in rows(engine, "sensor_failed"))
    # Failing again later: a new alert for that sensor.
    store(engine, at(MON, 10, 0), birth(dev, at(MON, 10, 0), {"co2": "ok", "mic": "failed"}))
    run(engine, at(MON, 10, 1))
    mic = [a for a in rows(engine, "sensor_failed") if a["subject"] == f"{dev}/mic"]
    assert [a["resolved_at"] is None for a in mic] == [False, True]


# -- over HTTP ------------------------------------------------------------------------

def post_csv(server, kind: str, text: str) -> None:
    r = server.http.post(f"/api/v1/import/{kind}", content=text.encode(), headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text


@pytest.fixture
def alerting_server(server):
    """The server with its own alert job stopped (the tests evaluate at fixed times),
    three alerts: A offline in S1 (open), A's mic failed (open), a CO2 episode in S2
    (resolved)."""
    server.app.state.alerts.stop()
    for kind, text in (("schools", SCHOOLS), ("rooms", ROOMS), ("calendar", CALENDAR)):
        post_csv(server, kind, text)
    schools = {s["code"]: s["id"] for s in server.get("/api/v1/schools")["items"]}
    room = {r["code"]: r["id"] for sid in schools.values() for r in server.get(f"/api/v1/schools/{sid}/rooms")}
    dev_a, dev_b = "cf-00000000d001", "cf-00000000d002"
    for dev, code in ((dev_a, "A101"), (dev_b, "C301")):
        r = server.http.put(f"/api/v1/devices/{dev}/room", json={"room_id": room[code], "from_ts": at(MON, 0, 0)})
        assert r.status_code == 200, r.text
    engine = server.app.state.engine
    store(engine, at(MON, 8, 0), birth(dev_a, at(MON, 8, 0), {"co2": "ok", "mic": "failed"}),
          birth(dev_b, at(MON, 8, 0)))
    store(engine, at(MON, 10, 3), win(dev_b, 1, at(MON, 10, 0), co2=1800), win(dev_b, 2, at(MON, 10, 1), co2=2100),
          win(dev_b, 3, at(MON, 10, 2), co2=900))
    run(engine, at(MON, 10, 3, 30))
    return {"school": schools, "dev_a": dev_a, "dev_b": dev_b}


def test_alerts_list_filters_and_pagination(server, alerting_server):
    s = alerting_server
    page = server.get("/api/v1/alerts")
    assert page["total"] == 3 and (page["limit"], page["offset"]) == (100, 0)
    kinds = [a["kind"] for a in page["items"]]
    assert kinds == ["co2_breach", "offline", "sensor_failed"]      # newest first
    co2 = page["items"][0]
    assert co2["school_id"] == s["school"]["S2"] and co2["room_code"] == "C301" and co2["state"] == "resolved"
    assert (co2["opened_at"], co2["resolved_at"]) == (iso(MON, 10, 0), iso(MON, 10, 2))
    assert co2["detail"]["peak_co2_ppm"] == 2100
    offline = page["items"][1]
    assert offline["opened_at"] == iso(MON, 8, 33) and offline["state"] == "open"   # silent from 08:00

    def ids(**params) -> list[str]:
        return sorted(a["kind"] for a in server.get("/api/v1/alerts", params=params)["items"])
    assert ids(kind="co2_breach") == ["co2_breach"]
    assert ids(state="open") == ["offline", "sensor_failed"] and ids(state="resolved") == ["co2_breach"]
    assert ids(school_id=s["school"]["S1"]) == ["offline", "sensor_failed"]
    assert ids(region=330300) == ["co2_breach"]            # 温州市 (city) holds 龙港市 330383
    assert ids(region=330106) == ["offline", "sensor_failed"]
    assert len(ids(region=330000)) == 3
    assert ids(device_id=s["dev_a"]) == ["offline", "sensor_failed"]
    second = server.get("/api/v1/alerts", params={"limit": 1, "offset": 1})
    assert second["total"] == 3 and [a["kind"] for a in second["items"]] == ["offline"]
    assert server.http.get("/api/v1/alerts", params={"region": 110000}).status_code == 404
    assert server.http.get("/api/v1/alerts", params={"state": "closed"}).status_code == 422
    assert server.http.get("/api/v1/alerts", params={"device_id": "nope"}).status_code == 422


def test_ack_is_idempotent_and_moves_the_alert_to_acked(server, alerting_server):
    offline = server.get("/api/v1/alerts", params={"kind": "offline"})["items"][0]
    r = server.http.post(f"/api/v1/alerts/{offline['id']}/ack", json={"by": "王老师", "note": "电工已联系"})
    assert r.status_code == 200, r.text
    acked = r.json()
    assert (acked["state"], acked["acked_by"], acked["ack_note"]) == ("acked", "王老师", "电工已联系")
    assert acked["acked_at"].endswith("+08:00")
    again = server.http.post(f"/api/v1/alerts/{offline['id']}/ack", json={"by": "someone else"}).json()
    assert (again["acked_by"], again["acked_at"]) == ("王老师", acked["acked_at"])
    assert again["ack_note"] == "电工已联系"
    assert [a["kind"] for a in server.get("/api/v1/alerts", params={"state": "acked"})["items"]] == ["offline"]
    assert [a["kind"] for a in server.get("/api/v1/alerts", params={"state": "open"})["items"]] == ["sensor_failed"]
    assert server.http.post("/api/v1/alerts/999999/ack", json={"by": "x"}).status_code == 404
    assert server.http.post(f"/api/v1/alerts/{offline['id']}/ack", json={}).status_code == 422


def test_alerts_csv_and_openapi(server, alerting_server):
    r = server.http.get("/api/v1/alerts", params={"format": "csv", "state": "all"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.startswith("\ufeff")
    table = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert [row["kind"] for row in table] == ["co2_breach", "offline", "sensor_failed"]
    assert json.loads(table[0]["detail"])["peak_co2_ppm"] == 2100 and table[0]["school_name"] == "龙港市告警中学"
    assert table[1]["resolved_at"] == "" and table[1]["opened_at"] == iso(MON, 8, 33)
    paths = server.get("/openapi.json")["paths"]
    assert "/api/v1/alerts" in paths and "/api/v1/alerts/{alert_id}/ack" in paths
    params = {p["name"] for p in paths["/api/v1/alerts"]["get"]["parameters"]}
    assert {"state", "kind", "school_id", "region", "device_id", "format", "limit", "offset"} <= params


def test_failed_sensor_published_over_mqtt_raises_and_recovers(server, publisher):
    server.app.state.alerts.stop()
    dev = "cf-00000000e001"
    engine = server.app.state.engine

    def send(sensors: dict) -> None:
        doc = {"v": 1, "online": True, "ts": int(time.time()), "fw": "0.3.0", "hw": "s3-v1", "boot": 3,
               "reset": "power", "uptime_s": 5, "heap_free": 60000, "rssi": -60, "ip": "10.0.0.9", "outbox": 0,
               "clock": "ntp", "sensors": sensors}
        publisher.publish(f"campus/v1/{dev}/status", json.dumps(doc), retain=True)
        wait_until(lambda: (server.device(dev) or {}).get("sensors") == sensors, 10, 0.05, "status stored")

    send({"co2": "ok", "mic": "failed"})
    run(engine, time.time())
    [a] = server.get("/api/v1/alerts", params={"kind": "sensor_failed"})["items"]
    assert (a["device_id"], a["state"], a["detail"]["sensor"], a["room_id"]) == (dev, "open", "mic", None)
    send({"co2": "ok", "mic": "ok"})
    run(engine, time.time())
    [a] = server.get("/api/v1/alerts", params={"kind": "sensor_failed"})["items"]
    assert a["state"] == "resolved" and a["detail"]["state"] == "ok"
    publisher.publish(f"campus/v1/{dev}/status", b"", retain=True)   # clear the retained status
