"""End to end: the real firmware on the MicroPython unix port publishes through a real
Mosquitto into the real fleet server, and what arrives is PROTOCOL.md to the letter."""
import json
import time
from datetime import datetime, timedelta

import pytest

from fleet_server.protocol import Window, decode
from fleet_server.virtual_nodes import SHANGHAI
from tests.utils.services import Recorder, wait_until

WINDOW_KEYS = {"v", "seq", "ts", "win", "occ", "env"}
OCC_KEYS = {"occupied_s", "present", "pir", "radar_s"}
ENV_KEYS = {"co2_ppm", "temp_c", "rh_pct", "lux", "noise_dba"}
STATUS_KEYS = {"v", "online", "ts", "fw", "hw", "boot", "reset", "uptime_s", "heap_free", "rssi", "ip",
               "outbox", "clock", "sensors"}
SENSOR_KEYS = {"co2", "th", "lux", "radar", "pir", "mic"}


def last_monday(at_hh: int, at_mm: int) -> datetime:
    """The most recent Monday (Asia/Shanghai) at hh:mm that is at least a day ago."""
    d = datetime.now(SHANGHAI).date() - timedelta(days=1)
    while d.weekday() != 0:
        d -= timedelta(days=1)
    return datetime(d.year, d.month, d.day, at_hh, at_mm, tzinfo=SHANGHAI)


@pytest.fixture
def recorder(mosquitto):
    recs = []

    def factory(topic: str) -> Recorder:
        rec = Recorder(mosquitto.host, mosquitto.port, topic)
        recs.append(rec)
        return rec

    yield factory
    for r in recs:
        r.close()


def test_virtual_node_windows_events_and_status_match_the_protocol(server, make_node, recorder):
    # 07:50 on a Monday: the first period's class arrives within minutes.
    start = last_monday(7, 50)
    device_id = "cf-0000beef0001"
    rec = recorder(f"campus/v1/{device_id}/#")
    node = make_node(start=start, speed=120, device_id=device_id)
    wait_until(lambda: len(rec.of("telemetry")) >= 12 and rec.of("event") and any(
        json.loads(p)["occ"]["occupied_s"] for p in rec.of("telemetry")), 40, what="an occupied window and its event")

    reports = [json.loads(p) for p in rec.of("telemetry")]
    for r in reports:
        assert set(r) == WINDOW_KEYS and set(r["occ"]) == OCC_KEYS and set(r["env"]) == ENV_KEYS, r
        assert r["v"] == 1 and r["win"] == 60 and r["ts"] % 60 == 0
        assert type(r["seq"]) is int and type(r["occ"]["occupied_s"]) is int and type(r["occ"]["present"]) is bool
        assert type(r["env"]["co2_ppm"]) is int and 0 <= r["occ"]["occupied_s"] <= 60
        assert isinstance(decode(f"campus/v1/{device_id}/telemetry", json.dumps(r).encode(), time.time()), Window)
    raw = rec.of("telemetry") + rec.of("event")
    assert all(len(p) <= 1024 for p in raw)
    # Consecutive aligned windows starting at the sim start; seq strictly increasing
    # over telemetry and events together.
    assert [r["ts"] for r in reports] == [int(start.timestamp()) + 60 * i for i in range(len(reports))]
    seqs = [json.loads(p)["seq"] for p in raw]
    assert len(set(seqs)) == len(seqs)
    assert [r["seq"] for r in reports] == sorted(r["seq"] for r in reports)

    event = json.loads(rec.of("event")[0])
    assert set(event) == {"v", "seq", "ts", "present"} and event["present"] is True
    # The event falls inside the first occupied window, which starts occupied.
    occupied = [r for r in reports if r["occ"]["occupied_s"] > 0]
    assert occupied and occupied[0]["ts"] <= event["ts"] < occupied[0]["ts"] + 60
    assert occupied[0]["occ"]["pir"] >= 1 and occupied[0]["env"]["lux"] > reports[0]["env"]["lux"]

    # Birth status is retained: a late subscriber gets it with the retain flag.
    late = recorder(f"campus/v1/{device_id}/status")
    wait_until(lambda: late.messages, 5, what="retained status")
    topic, payload, retained = late.messages[0]
    status = json.loads(payload)
    assert retained is True
    assert STATUS_KEYS <= set(status) and set(status["sensors"]) == SENSOR_KEYS
    assert status["online"] is True and status["boot"] == 1 and status["reset"] == "power"
    assert status["clock"] == "ntp" and status["hw"] == "sim"

    # The server stored each distinct window exactly once and shows the last one.
    def caught_up():
        d = server.device(device_id)
        return d if d and d["windows_received"] == len({r["seq"] for r in (json.loads(p) for p in rec.of("telemetry"))}) else None
    node.stop()  # freeze the count (graceful: publishes offline)
    d = wait_until(caught_up, 10, what="server to store every window")
    last = max((json.loads(p) for p in rec.of("telemetry")), key=lambda r: r["seq"])
    assert d["last_window"] == last
    assert d["fw"] == status["fw"]
    wait_until(lambda: server.device(device_id)["online"] is False, 10, what="offline after graceful stop")


def test_commands_are_acked_identify_sync_reboot_unknown_and_expired(server, make_node, recorder, publisher):
    device_id = "cf-0000beef0002"
    rec = recorder(f"campus/v1/{device_id}/#")
    make_node(start=last_monday(7, 0), speed=60, device_id=device_id)
    wait_until(lambda: server.device(device_id) and server.device(device_id)["online"], 20, what="node online")

    def acked(cmd_id):
        for c in server.get(f"/api/v1/devices/{device_id}/commands"):
            if c["id"] == cmd_id and c["acked"]:
                return c
        return None

    r = server.http.post(f"/api/v1/devices/{device_id}/commands", json={"op": "identify", "args": {"s": 30}})
    assert r.status_code == 202
    c = wait_until(lambda: acked(r.json()["id"]), 15, what="identify ack")
    assert c["ok"] is True and c["err"] is None and c["op"] == "identify"

    births = len(rec.of("status"))
    r = server.http.post(f"/api/v1/devices/{device_id}/commands", json={"op": "sync"})
    c = wait_until(lambda: acked(r.json()["id"]), 15, what="sync ack")
    assert c["ok"] is True
    wait_until(lambda: len(rec.of("status")) > births, 10, what="status after sync")

    r = server.http.post(f"/api/v1/devices/{device_id}/commands", json={"op": "identify", "args": {"s": "long"}})
    assert wait_until(lambda: acked(r.json()["id"]), 15, what="bad args ack")["err"] == "bad_args"

    # Raw commands a server would never send, straight onto the cmd topic.
    topic = f"campus/v1/{device_id}/cmd"
    publisher.publish(topic, json.dumps({"v": 1, "id": "c-dance", "op": "dance", "exp": int(time.time()) + 600}))
    publisher.publish(topic, json.dumps({"v": 1, "id": "c-old", "op": "identify", "args": {"s": 5}, "exp": 1000}))
    assert wait_until(lambda: acked("c-dance"), 15, what="unknown op ack")["err"] == "unknown_op"
    assert wait_until(lambda: acked("c-old"), 15, what="expired ack")["err"] == "expired"

    # A repeated id is acked again, not run again.
    n_acks = len(rec.of("ack"))
    publisher.publish(topic, json.dumps({"v": 1, "id": "c-dance", "op": "dance"}))
    wait_until(lambda: len(rec.of("ack")) > n_acks, 10, what="repeat ack")
    assert json.loads(rec.of("ack")[-1])["err"] == "unknown_op"

    # Reboot: acked, then the node boots again (boot 2, reset soft) and seq goes on.
    wait_until(lambda: len(rec.of("telemetry")) >= 2, 15, what="windows before the reboot")
    seq_before = max(json.loads(p)["seq"] for p in rec.of("telemetry"))
    r = server.http.post(f"/api/v1/devices/{device_id}/commands", json={"op": "reboot"})
    assert wait_until(lambda: acked(r.json()["id"]), 15, what="reboot ack")["ok"] is True
    wait_until(lambda: any(json.loads(p).get("boot") == 2 for p in rec.of("status")), 15, what="second boot")
    reboot_status = next(json.loads(p) for p in rec.of("status") if json.loads(p).get("boot") == 2)
    assert reboot_status["reset"] == "soft"
    n = len(rec.of("telemetry"))
    wait_until(lambda: len(rec.of("telemetry")) > n + 2, 15, what="windows after reboot")
    after = [json.loads(p)["seq"] for p in rec.of("telemetry")[n:]]
    assert min(after) > seq_before


def test_killed_node_goes_offline_by_its_will(server, make_node):
    device_id = "cf-0000beef0003"
    node = make_node(start=last_monday(7, 0), speed=60, device_id=device_id)
    wait_until(lambda: server.device(device_id) and server.device(device_id)["online"], 20, what="node online")
    node.kill()  # no goodbye: the broker publishes the will
    d = wait_until(lambda: (lambda x: x if x["online"] is False else None)(server.device(device_id)), 10,
                   what="offline by will")
    assert d["since"] is not None


def test_node_refuses_a_bad_config_with_a_clear_message(make_node):
    node = make_node(start=last_monday(7, 0), window_s=5, device_id="cf-0000beef0004")
    assert node.proc.wait(10) == 2
    log = (node.node_dir / "node.log").read_text()
    assert "window_s must be an integer 10..900" in log


def test_virtual_node_reports_all_sensors_ok_and_heap_figures(server, make_node):
    device_id = "cf-0000beef0005"
    make_node(start=last_monday(6, 0), speed=600, device_id=device_id, status_s=600)
    d = wait_until(lambda: (lambda x: x if x and x["windows_received"] >= 60 else None)(server.device(device_id)),
                   40, what="60 windows")
    assert d["online"] and d["sensors"] == {name: "ok" for name in SENSOR_KEYS}
    assert 0 < d["heap_free"]
    w = d["last_window"]
    assert all(w["env"][k] is not None for k in ENV_KEYS), w
