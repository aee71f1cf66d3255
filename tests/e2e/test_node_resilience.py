"""The node through faults, on the real interpreter and a real Mosquitto: a broker
outage of 30 simulated minutes (with and without a reboot in the middle) loses no
window, and power cuts during outbox writes never lose a written record nor break
the next boot."""
import json
import random
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from fleet_server.db.schema import events, windows
from fleet_server.settings import Settings
from tests.utils.services import FleetServer, Mosquitto, wait_until


@pytest.fixture
def fault_broker(tmp_path):
    d = tmp_path / "broker"
    d.mkdir()
    broker = Mosquitto(d, persistent=True).start()
    yield broker
    broker.stop()


@pytest.fixture
def fault_server(fault_broker, tmp_path):
    srv = FleetServer(Settings(db=f"sqlite:///{tmp_path}/fleet.db", mqtt=fault_broker.url,
                               ingest_client_id=f"ingest-{uuid.uuid4().hex[:8]}")).start()
    yield srv
    srv.stop()


def stored(server, device_id):
    with server.app.state.engine.connect() as conn:
        w = conn.execute(select(windows.c.seq, windows.c.ts).where(windows.c.device_id == device_id)
                         .order_by(windows.c.ts)).all()
        e = conn.execute(select(events.c.seq).where(events.c.device_id == device_id)).all()
    return [tuple(r) for r in w], {r[0] for r in e}


def assert_contiguous_in_seq_order(rows):
    ts = [r[1] for r in rows]
    seqs = [r[0] for r in rows]
    gaps = [(a, b) for a, b in zip(ts, ts[1:]) if b - a != 60]
    assert not gaps, f"missing windows between {gaps[:5]}"
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def two_hours_ago():
    return datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)


@pytest.mark.parametrize("reboot_mid_outage", [False, True], ids=["outage", "outage+reboot"])
def test_broker_outage_of_30_sim_minutes_loses_no_window(fault_broker, fault_server, make_node, reboot_mid_outage):
    device_id = "cf-0000fa170%03x" % (1 if reboot_mid_outage else 0)
    node = make_node(start=two_hours_ago(), speed=120, device_id=device_id, broker=fault_broker)
    wait_until(lambda: len(stored(fault_server, device_id)[0]) >= 5, 30, what="first windows")

    fault_broker.stop()
    outage_start = time.monotonic()
    if reboot_mid_outage:
        time.sleep(7)
        node.kill()          # power cut in the middle of the outage
        node.start()
    time.sleep(max(0.0, 15 - (time.monotonic() - outage_start)))  # 15 s at 120x = 30 sim minutes
    fault_broker.start()

    # Everything written during the outage arrives; the stored timeline has no hole.
    def delivered():
        rows, _ = stored(fault_server, device_id)
        d = fault_server.device(device_id)
        return rows if d and d["online"] and d["outbox"] == 0 and len(rows) >= 40 else None
    wait_until(lambda: fault_server.http.post(f"/api/v1/devices/{device_id}/commands", json={"op": "sync"})
               and delivered(), 60, 1.0, "backlog delivered and outbox empty")
    rows, _ = stored(fault_server, device_id)
    assert_contiguous_in_seq_order(rows)
    assert len(rows) >= 5 + 30  # the 30 outage minutes are all there


def test_power_loss_during_outbox_writes_never_loses_a_written_record(mosquitto, server, make_node, tmp_path):
    device_id = "cf-0000fa170100"
    rng = random.Random(20261128)
    node = make_node(start=two_hours_ago() - timedelta(hours=10), speed=600, device_id=device_id,
                     extra_sim={"journal": "journal.txt"})
    for _ in range(50):
        time.sleep(rng.uniform(0.5, 1.5))
        node.kill()          # SIGKILL: the process dies wherever it is, mid-write included
        node.start()
    journal = node.node_dir / "journal.txt"

    def all_written_are_stored():
        written = {int(x) for x in journal.read_text().split()}
        rows, event_seqs = stored(server, device_id)
        have = {r[0] for r in rows} | event_seqs
        missing = written - have
        return (written, have) if not missing else None
    written, have = wait_until(all_written_are_stored, 60, 0.5, "every journalled record on the server")
    log = (node.node_dir / "node.log").read_text()
    assert "Traceback" not in log, log[-2000:]
    # The last boot runs normally: online, delivering, not in safe mode. (A kill inside
    # the boot bookkeeping itself can leave a boot uncounted, so >= rather than ==.)
    d = wait_until(lambda: (lambda x: x if x["online"] and x["boot"] >= 45 else None)(server.device(device_id)),
                   20, what="the node online after its last boot")
    boot_state = json.loads((node.node_dir / "boot.json").read_text())
    assert boot_state["crashes"] < 3, boot_state
    assert len(written) > 200
