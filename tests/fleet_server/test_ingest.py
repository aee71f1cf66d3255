"""Ingest against a real Mosquitto and a real server: rejects are counted by reason
and never stop ingest, a redelivered window is stored once, unknown devices appear
as unassigned, and the migrated schema matches the table definitions."""
import json
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from fleet_server.db.schema import metadata, windows
from tests.utils.services import wait_until


def aligned_now(win: int = 60) -> int:
    t = int(time.time()) - 120
    return t - t % win


def window(seq: int, ts: int, **occ) -> bytes:
    doc = {"v": 1, "seq": seq, "ts": ts, "win": 60,
           "occ": {"occupied_s": 30, "present": True, "pir": 4, "radar_s": 28, **occ},
           "env": {"co2_ppm": 700, "temp_c": 21.5, "rh_pct": 45.0, "lux": 350, "noise_dba": 48.0}}
    return json.dumps(doc).encode()


def stored_windows(server, device_id: str) -> int:
    with server.app.state.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(windows)
                            .where(windows.c.device_id == device_id)).scalar_one()


BAD = [
    ("oversize", "telemetry", b'{"v":1,"pad":"' + b"x" * 1100 + b'"}'),
    ("not_json", "telemetry", b"\x00\x01garbage"),
    ("not_object", "event", b"[true]"),
    ("bad_version", "telemetry", window(1, 0).replace(b'"v": 1', b'"v": 2')),
    ("missing_field", "event", b'{"v":1,"seq":5,"present":true}'),
    ("wrong_type", "telemetry", None),  # filled in below: occupied_s as a string
    ("out_of_range", "telemetry", None),  # occupied_s > win
    ("bad_ts", "event", b'{"v":1,"seq":6,"ts":4102444800,"present":true}'),
]


def test_every_reject_reason_is_counted_and_ingest_keeps_going(server, publisher):
    dev = "cf-00000000bad1"
    ts = aligned_now()
    for reason, suffix, payload in BAD:
        if reason == "wrong_type":
            payload = window(2, ts, occupied_s="30")
        elif reason == "out_of_range":
            payload = window(3, ts, occupied_s=61)
        publisher.publish(f"campus/v1/{dev}/{suffix}", payload)
    publisher.publish("campus/v1/not-a-device/telemetry", window(4, ts))
    # Good traffic after all that is still stored.
    publisher.publish(f"campus/v1/{dev}/telemetry", window(10, ts))

    wait_until(lambda: server.metric("accepted", "telemetry") == 1, 10, what="the good window")
    for reason, _, _ in BAD:
        assert server.metric("rejected", reason) == 1, reason
    assert server.metric("rejected", "bad_topic") == 1
    assert stored_windows(server, dev) == 1
    assert server.device(dev)["windows_received"] == 1


def test_redelivered_window_is_stored_once_and_counted_as_duplicate(server, publisher):
    dev = "cf-00000000d0b1"
    ts = aligned_now()
    publisher.publish(f"campus/v1/{dev}/telemetry", window(7, ts))
    publisher.publish(f"campus/v1/{dev}/telemetry", window(7, ts))       # the same message again
    publisher.publish(f"campus/v1/{dev}/telemetry", window(8, ts + 60))
    wait_until(lambda: server.metric("duplicate", "telemetry") == 1, 10, what="the duplicate")
    wait_until(lambda: server.metric("accepted", "telemetry") == 2, 10, what="two windows")
    assert stored_windows(server, dev) == 2
    d = server.device(dev)
    assert d["windows_received"] == 2
    assert d["last_window"]["seq"] == 8 and d["last_window"]["ts"] == ts + 60


def test_unknown_wellformed_device_becomes_unassigned_and_goes_online_with_its_birth(server, publisher):
    dev = "cf-00000000ab01"
    birth = {"v": 1, "online": True, "ts": aligned_now(), "fw": "0.1.0", "hw": "s3-v1", "boot": 3,
             "reset": "power", "uptime_s": 5, "heap_free": 60000, "rssi": -60, "ip": "10.0.0.9",
             "outbox": 0, "clock": "ntp", "sensors": {"co2": "ok", "pir": "ok", "radar": "missing"}}
    publisher.publish(f"campus/v1/{dev}/status", json.dumps(birth), retain=True)
    d = wait_until(lambda: server.device(dev), 10, what="the device")
    assert d["assigned"] is False and d["room_id"] is None
    assert d["online"] is True and d["fw"] == "0.1.0" and d["sensors"]["radar"] == "missing"
    assert d["windows_received"] == 0
    listed = server.get("/api/v1/devices", params={"limit": 1000})["items"]
    assert dev in {x["device_id"] for x in listed}
    # The will marks it offline.
    publisher.publish(f"campus/v1/{dev}/status", b'{"v":1,"online":false}', retain=True)
    wait_until(lambda: server.device(dev)["online"] is False, 10, what="offline after the will")
    publisher.publish(f"campus/v1/{dev}/status", b"", retain=True)  # clear the retained message


def test_device_list_is_paginated(server, publisher):
    ts = aligned_now()
    for i in range(5):
        publisher.publish(f"campus/v1/cf-00000000c0{i:02x}/telemetry", window(1, ts))
    wait_until(lambda: server.get("/api/v1/devices")["total"] >= 5, 10, what="five devices")
    page = server.get("/api/v1/devices", params={"limit": 2, "offset": 1})
    assert page["limit"] == 2 and page["offset"] == 1 and len(page["items"]) == 2
    assert server.http.get("/api/v1/devices", params={"limit": 0}).status_code == 422
    assert server.http.get("/api/v1/devices/not-a-device").status_code == 422
    assert server.http.get("/api/v1/devices/cf-ffffffffffff").status_code == 404


def test_health_and_openapi(server):
    h = server.get("/api/v1/health")
    assert h == {"status": "ok", "version": h["version"], "database": "ok", "mqtt": "connected"}
    paths = server.get("/openapi.json")["paths"]
    assert {"/api/v1/health", "/api/v1/devices", "/api/v1/devices/{device_id}"} <= set(paths)


def test_migrations_create_exactly_the_declared_schema(server):
    with server.app.state.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


@pytest.mark.parametrize("args,needle", [
    (["serve", "--mqtt", "amqp://x"], "MQTT URL must be"),
    (["serve", "--bind", "localhost:http"], "not a number"),
    (["ingest", "--mqtt", "embedded://127.0.0.1:1883"], "external broker"),
    (["demo", "--nodes", "0"], "nodes"),
])
def test_bad_cli_arguments_get_a_one_line_explanation(args, needle):
    from typer.testing import CliRunner

    from fleet_server.cli import app
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert needle in result.output
