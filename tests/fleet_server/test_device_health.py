"""Device health (DOMAIN.md "Device health") on SQLite and PostgreSQL: the device list
filtered by online state, assignment, school and GB/T 2260 region with room, school and
status; the firmware spread; per-day completeness against the assigned time only; the
status history (a repeat of the current status is not a new point) and health over
time: heap, RSSI, reboots, reset causes and sensor changes; CSV on every list."""
import csv
import io
import json
import time
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from fleet_server.db.schema import status_history
from fleet_server.ingest.store import Received, store_batch
from fleet_server.protocol import Status
from fleet_server.services import devices_health
from fleet_server.virtual_nodes import SHANGHAI
from tests.utils.databases import migrated_engine
from tests.utils.services import wait_until

SCHOOLS = """code,name,county_code,stage,day_start,day_end,weekdays
H1,西湖区健康小学,330106,primary,07:30,17:30,12345
N1,鄞州区健康中学,330212,junior,07:30,17:30,12345
"""
ROOMS = "school_code,room_code,name,type,capacity\nH1,A101,一年级(1)班,classroom,45\nN1,B101,初一(1)班,classroom,50\n"
DEV_A, DEV_B, DEV_C = "cf-00000000d0a1", "cf-00000000d0b2", "cf-00000000d0c3"


def today() -> date:
    return datetime.now(SHANGHAI).date()


def at(day: date, hh: int, mm: int = 0) -> int:
    return int(datetime(day.year, day.month, day.day, hh, mm, tzinfo=SHANGHAI).timestamp())


def birth(fw: str, boot: int, reset: str = "power", heap: int = 61000, rssi: int = -60, uptime_s: int = 60,
          sensors: dict | None = None, ts: int | None = None) -> bytes:
    return json.dumps({"v": 1, "online": True, "ts": ts or int(time.time()), "fw": fw, "hw": "s3-v1", "boot": boot,
                       "reset": reset, "uptime_s": uptime_s, "heap_free": heap, "rssi": rssi, "ip": "10.1.2.3",
                       "outbox": 0, "clock": "ntp",
                       "sensors": sensors or {"co2": "ok", "th": "ok", "mic": "ok"}}).encode()


def window(seq: int, ts: int, occupied_s: int = 30) -> bytes:
    return json.dumps({"v": 1, "seq": seq, "ts": ts, "win": 60,
                       "occ": {"occupied_s": occupied_s, "present": occupied_s > 0},
                       "env": {"co2_ppm": 700}}).encode()


def post_csv(server, kind: str, text: str) -> None:
    r = server.http.post(f"/api/v1/import/{kind}", content=text.encode(), headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text


def registry(server) -> dict[str, int]:
    post_csv(server, "schools", SCHOOLS)
    post_csv(server, "rooms", ROOMS)
    out = {}
    for county in (330106, 330212):
        school = server.get("/api/v1/schools", params={"county": county})["items"][0]
        out[school["code"]] = school["id"]
        out.update({r["code"]: r["id"] for r in server.get(f"/api/v1/schools/{school['id']}/rooms")})
    return out


def assign(server, device_id: str, room_id: int | None, from_ts: int) -> None:
    r = server.http.put(f"/api/v1/devices/{device_id}/room", json={"room_id": room_id, "from_ts": from_ts})
    assert r.status_code == 200, r.text


def read_csv(r) -> list[dict]:
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))


def ids(page: dict) -> list[str]:
    return [d["device_id"] for d in page["items"]]


def test_device_list_filters_by_state_assignment_school_and_region_with_firmware_spread(server, publisher):
    reg = registry(server)
    assign(server, DEV_A, reg["A101"], int(time.time()) - 3600)
    assign(server, DEV_C, reg["B101"], int(time.time()) - 3600)
    ts = int(time.time()) // 60 * 60 - 60
    publisher.publish(f"campus/v1/{DEV_A}/status", birth("0.3.0", 4, sensors={"co2": "ok", "mic": "failed"}))
    publisher.publish(f"campus/v1/{DEV_A}/telemetry", window(1, ts, 42))
    publisher.publish(f"campus/v1/{DEV_B}/status", birth("0.3.0", 1))
    publisher.publish(f"campus/v1/{DEV_B}/telemetry", window(1, ts))
    publisher.publish(f"campus/v1/{DEV_C}/status", birth("0.2.0", 9))
    wait_until(lambda: (server.device(DEV_C) or {}).get("fw"), 10, what="C's birth applied before its will")
    publisher.publish(f"campus/v1/{DEV_C}/status", json.dumps({"v": 1, "online": False}))
    wait_until(lambda: (server.device(DEV_A) or {}).get("last_window") and (server.device(DEV_B) or {}).get("fw")
               and (server.device(DEV_C) or {}).get("fw") and not server.device(DEV_C)["online"], 20,
               what="three devices with their statuses")

    assert ids(server.get("/api/v1/devices")) == [DEV_A, DEV_B, DEV_C]
    assert ids(server.get("/api/v1/devices", params={"state": "online"})) == [DEV_A, DEV_B]
    assert ids(server.get("/api/v1/devices", params={"state": "offline"})) == [DEV_C]
    unassigned = server.get("/api/v1/devices", params={"assigned": "false"})
    assert (unassigned["total"], ids(unassigned)) == (1, [DEV_B])
    assert ids(server.get("/api/v1/devices", params={"assigned": "true"})) == [DEV_A, DEV_C]
    assert ids(server.get("/api/v1/devices", params={"school_id": reg["N1"]})) == [DEV_C]
    assert ids(server.get("/api/v1/devices", params={"region": 330100})) == [DEV_A]        # 杭州市
    assert ids(server.get("/api/v1/devices", params={"region": 330212})) == [DEV_C]        # 鄞州区
    assert ids(server.get("/api/v1/devices", params={"region": 330000})) == [DEV_A, DEV_C]  # the province
    assert ids(server.get("/api/v1/devices", params={"region": 330000, "state": "online"})) == [DEV_A]
    assert server.http.get("/api/v1/devices", params={"region": 999999}).status_code == 404
    assert server.http.get("/api/v1/devices", params={"state": "asleep"}).status_code == 422

    a = server.get(f"/api/v1/devices/{DEV_A}")
    assert a["online"] is True and a["since"].endswith("+08:00") and a["last_window_at"].endswith("+08:00")
    assert datetime.fromisoformat(a["last_window_at"]).timestamp() == ts
    assert a["room"] == {"id": reg["A101"], "code": "A101", "name": "一年级(1)班"}
    assert a["school"] == {"id": reg["H1"], "code": "H1", "name": "西湖区健康小学", "county_code": 330106}
    assert (a["fw"], a["hw"], a["rssi"], a["heap_free"], a["boot"]) == ("0.3.0", "s3-v1", -60, 61000, 4)
    assert a["sensors"] == {"co2": "ok", "mic": "failed"} and a["sensors_failed"] == ["mic"]
    assert a["last_window"]["occ"]["occupied_s"] == 42
    c = server.get(f"/api/v1/devices/{DEV_C}")
    assert c["online"] is False and abs(datetime.fromisoformat(c["since"]).timestamp() - time.time()) < 60

    rows = read_csv(server.http.get("/api/v1/devices", params={"assigned": "true", "format": "csv"}))
    assert [(r["device_id"], r["school_code"], r["room_code"], r["online"], r["sensors_failed"]) for r in rows] == [
        (DEV_A, "H1", "A101", "True", "mic"), (DEV_C, "N1", "B101", "False", "")]

    spread = server.get("/api/v1/devices/firmware")
    assert spread["total"] == 3 and spread["versions"] == [
        {"fw": "0.3.0", "devices": 2, "online": 2, "share": 0.6667},
        {"fw": "0.2.0", "devices": 1, "online": 0, "share": 0.3333}]
    assert server.get("/api/v1/devices/firmware", params={"region": 330200})["versions"] == [
        {"fw": "0.2.0", "devices": 1, "online": 0, "share": 1.0}]
    fw_rows = read_csv(server.http.get("/api/v1/devices/firmware", params={"format": "csv"}))
    assert [(r["fw"], r["devices"]) for r in fw_rows] == [("0.3.0", "2"), ("0.2.0", "1")]
    assert server.http.get("/api/v1/devices/firmware", params={"region": 999999}).status_code == 404
    paths = server.get("/openapi.json")["paths"]
    assert {"/api/v1/devices/firmware", "/api/v1/devices/{device_id}/completeness",
            "/api/v1/devices/{device_id}/health"} <= set(paths)


def test_completeness_expects_windows_only_while_the_device_is_assigned(server, publisher):
    reg = registry(server)
    day = today() - timedelta(days=3)
    # In A101 from noon of `day` to noon of the next day, then taken out of service.
    assign(server, DEV_A, reg["A101"], at(day, 12))
    assign(server, DEV_A, None, at(day + timedelta(days=1), 12))
    # 10 windows before the assignment (not counted), then 12:00-14:00 with every 4th missing.
    sent = [(i, at(day, 11) + 60 * i) for i in range(10)]
    sent += [(100 + i, at(day, 12) + 60 * i) for i in range(120) if i % 4 != 3]
    infos = [publisher.client.publish(f"campus/v1/{DEV_A}/telemetry", window(seq, ts), qos=1) for seq, ts in sent]
    for info in infos:
        info.wait_for_publish(10)
    wait_until(lambda: (server.device(DEV_A) or {}).get("windows_received") == 100, 20, what="100 windows stored")

    span = {"from": (day - timedelta(days=1)).isoformat(), "to": (day + timedelta(days=2)).isoformat()}
    c = server.get(f"/api/v1/devices/{DEV_A}/completeness", params=span)
    assert (c["basis"], c["window_s"], c["timezone"]) == ("assignments", 60, "Asia/Shanghai")
    assert [(d["expected"], d["received"], d["share"]) for d in c["days"]] == [
        (0, 0, None),              # before the assignment
        (720, 90, 0.125),          # assigned from noon: 720 of 1440 windows expected
        (720, 0, 0.0),             # until noon
        (0, 0, None)]              # out of service
    assert (c["expected"], c["received"], c["share"]) == (1440, 90, 0.0625)
    assert not any(d["pruned"] for d in c["days"])
    rows = read_csv(server.http.get(f"/api/v1/devices/{DEV_A}/completeness", params={**span, "format": "csv"}))
    assert [(r["date"], r["expected"], r["received"]) for r in rows][1] == (day.isoformat(), "720", "90")

    # A device never assigned is expected to report from when it was first seen.
    publisher.publish(f"campus/v1/{DEV_B}/telemetry", window(1, int(time.time()) // 60 * 60 - 60))
    wait_until(lambda: server.device(DEV_B), 10, what="a second device")
    b = server.get(f"/api/v1/devices/{DEV_B}/completeness", params=span | {"to": today().isoformat()})
    assert b["basis"] == "first_seen" and all(d["expected"] == 0 for d in b["days"][:-1])
    assert server.http.get("/api/v1/devices/cf-ffffffffffff/completeness").status_code == 404
    assert server.http.get(f"/api/v1/devices/{DEV_A}/completeness", params={"from": "yesterday"}).status_code == 422


def test_health_over_time_counts_reboots_reset_causes_and_sensor_failures(server, publisher):
    topic = f"campus/v1/{DEV_A}/status"
    t0 = int(time.time())
    steps = [
        birth("0.3.0", 5, heap=61000, rssi=-60, uptime_s=60, ts=t0),
        birth("0.3.0", 5, heap=61000, rssi=-60, uptime_s=60, ts=t0),  # the same status again: no new point
        birth("0.3.0", 5, heap=58000, rssi=-64, uptime_s=360, sensors={"co2": "ok", "th": "ok", "mic": "failed"}),
        json.dumps({"v": 1, "online": False}).encode(),              # the will
        birth("0.3.1", 6, reset="wdt", heap=60500, rssi=-70, uptime_s=5),
    ]
    for n, payload in enumerate(steps, 1):
        publisher.publish(topic, payload)
        # One at a time, so each is stored in its own batch.
        wait_until(lambda: server.metric("accepted", "status") == n, 10, 0.05, f"status {n} stored")
    span = {"from": (today() - timedelta(days=1)).isoformat(), "to": today().isoformat()}
    h = server.get(f"/api/v1/devices/{DEV_A}/health", params=span)
    assert [(p["online"], p["boot"], p["heap_free"]) for p in h["points"]] == [
        (True, 5, 61000), (True, 5, 58000), (False, None, None), (True, 6, 60500)]
    assert (h["reboots"], h["reset_causes"], h["offline_events"]) == (1, {"wdt": 1}, 1)
    assert [(b["boot"], b["reset"]) for b in h["boots"]] == [(6, "wdt")]
    assert [(s["sensor"], s["from"], s["to"]) for s in h["sensor_changes"] if s["from"] is not None] == [
        ("mic", "ok", "failed"), ("mic", "failed", "ok")]
    day = next(d for d in h["days"] if d["statuses"])
    assert (day["heap_free_min"], day["rssi_min"], day["reboots"], day["offline"]) == (58000, -70, 1, 1)
    rows = read_csv(server.http.get(f"/api/v1/devices/{DEV_A}/health", params={**span, "format": "csv"}))
    assert [(r["online"], r["fw"], r["reset"]) for r in rows][-1] == ("True", "0.3.1", "wdt")
    assert len(rows) == 4 and rows[1]["sensors"] == "co2=ok;mic=failed;th=ok"
    assert server.http.get("/api/v1/devices/cf-ffffffffffff/health").status_code == 404


# -- the store: a status equal to the current one is a redelivery, not a new point ----

@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    with migrated_engine(request, tmp_path, "health") as eng:
        yield eng


def test_status_history_skips_redeliveries_inside_and_across_batches(engine):
    rx = time.time() - 600
    s5 = Status(DEV_A, True, ts=int(rx), fw="0.3.0", boot=5, reset="power", uptime_s=60, heap_free=61000, rssi=-60,
                sensors={"co2": "ok"})
    s5_later = Status(DEV_A, True, ts=int(rx) + 300, fw="0.3.0", boot=5, reset="power", uptime_s=360,
                      heap_free=59000, rssi=-62, sensors={"co2": "ok"})
    will = Status(DEV_A, False)
    s7 = Status(DEV_A, True, ts=int(rx) + 400, fw="0.3.0", boot=7, reset="brownout", uptime_s=3, heap_free=60000,
                rssi=-61, sensors={"co2": "failed"})
    batches = [
        [Received(s5, rx)],
        [Received(s5, rx + 1), Received(s5, rx + 2, retained=True)],        # QoS 1 redelivery, retained copy
        [Received(s5_later, rx + 300), Received(will, rx + 350), Received(will, rx + 351), Received(s7, rx + 400)],
        [Received(s7, rx + 401, retained=True)],
        [Received(will, rx + 500)],
        [Received(will, rx + 501)],                                          # offline already
    ]
    for batch in batches:
        with engine.begin() as conn:
            store_batch(conn, batch)
    with engine.connect() as conn:
        rows = conn.execute(select(status_history.c.received_s, status_history.c.online, status_history.c.boot)
                            .order_by(status_history.c.received_s)).all()
        assert [(r.received_s - rx, r.online, r.boot) for r in rows] == [
            (0, True, 5), (300, True, 5), (350, False, None), (400, True, 7), (500, False, None)]
        h = devices_health.health(conn, DEV_A, today() - timedelta(days=1), today())
        assert conn.execute(select(func.count()).select_from(status_history)).scalar_one() == 5
    assert (h["reboots"], h["reset_causes"], h["offline_events"]) == (2, {"brownout": 1}, 2)
    assert [(s["sensor"], s["from"], s["to"]) for s in h["sensor_changes"]] == [
        ("co2", None, "ok"), ("co2", "ok", "failed")]
