"""The two databases (SQLite and PostgreSQL) behind the same server: a value that one of
them cannot store is rejected by the decoder instead of wedging ingest in a retry loop,
a redelivered ack in the same batch is stored once, several processes may migrate one
PostgreSQL at the same time, and a plain postgresql:// URL uses the driver we ship."""
import json
import subprocess
import sys
import time
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text

from fleet_server.db.engine import make_engine
from fleet_server.db.schema import metadata, windows
from fleet_server.protocol import Rejected, decode
from tests.utils.services import wait_until

INT32_MAX = 2**31 - 1


def aligned_now(win: int = 60) -> int:
    t = int(time.time()) - 120
    return t - t % win


def birth(**over) -> dict:
    return {"v": 1, "online": True, "ts": aligned_now(), "fw": "0.1.0", "hw": "s3-v1", "boot": 1,
            "reset": "power", "uptime_s": 5, "heap_free": 60000, "rssi": -60, "ip": "10.0.0.9",
            "outbox": 0, "clock": "ntp", **over}


# Each one was accepted by the decoder and then refused by PostgreSQL (the first three)
# or by both databases (the lone surrogate), failing its whole batch on every retry.
UNSTORABLE = [
    ("status", birth(heap_free=2**31)),           # INTEGER column: 2**31 - 1 at most
    ("status", birth(fw="0.1.0\u0000")),           # PostgreSQL text cannot hold NUL
    ("status", birth(ip="10.0.0.\ud800")),         # lone surrogate: not UTF-8
    ("ack", {"v": 1, "id": "c-\u0000", "ok": True, "err": None, "ts": aligned_now()}),
    ("ack", {"v": 1, "id": "c-1", "ok": False, "err": "bad\u0000", "ts": aligned_now()}),
]


@pytest.mark.parametrize("suffix,doc", UNSTORABLE, ids=["heap_free", "nul", "surrogate", "ack_id", "ack_err"])
def test_decoder_rejects_values_a_database_cannot_store(suffix, doc):
    with pytest.raises(Rejected) as e:
        decode(f"campus/v1/cf-00000000d001/{suffix}", json.dumps(doc).encode(), time.time())
    assert e.value.reason == "out_of_range"


def test_largest_storable_values_decode():
    s = decode("campus/v1/cf-00000000d001/status", json.dumps(birth(heap_free=INT32_MAX, fw="\u00e9" * 32)).encode(),
               time.time())
    assert s.heap_free == INT32_MAX and s.fw == "\u00e9" * 32


def test_unstorable_values_are_rejected_and_good_messages_in_the_same_batch_are_stored(server, publisher):
    dev = "cf-00000000d0c1"
    ts = aligned_now()
    # Published back to back, so they share ingest batches with the good messages below.
    for suffix, doc in UNSTORABLE:
        publisher.publish(f"campus/v1/{dev}/{suffix}", json.dumps(doc))
    publisher.publish(f"campus/v1/{dev}/status", json.dumps(birth(heap_free=INT32_MAX, fw="\u00e9" * 32)))
    window = {"v": 1, "seq": 1, "ts": ts, "win": 60, "occ": {"occupied_s": 30, "present": True}}
    publisher.publish(f"campus/v1/{dev}/telemetry", json.dumps(window))
    # The same ack twice in one batch (a QoS 1 redelivery): one command row, last wins.
    ack = {"v": 1, "id": "c-dup", "ok": False, "err": "unknown_op", "ts": ts}
    publisher.publish(f"campus/v1/{dev}/ack", json.dumps(ack))
    publisher.publish(f"campus/v1/{dev}/ack", json.dumps(ack))

    wait_until(lambda: server.metric("accepted", "telemetry") == 1, 10, what="the good window")
    wait_until(lambda: server.metric("accepted", "ack") == 2, 10, what="both acks")
    assert server.metric("rejected", "out_of_range") == len(UNSTORABLE)
    # (statuses are not counted here: the session broker also hands ingest the statuses
    # other tests left retained)
    d = wait_until(lambda: (lambda x: x if x and x["heap_free"] == INT32_MAX else None)(server.device(dev)),
                   10, what="the good status")
    assert d["heap_free"] == INT32_MAX and d["fw"] == "\u00e9" * 32 and d["ip"] == "10.0.0.9"
    assert d["windows_received"] == 1
    with server.app.state.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(windows)
                            .where(windows.c.device_id == dev)).scalar_one() == 1
    cmds = server.get(f"/api/v1/devices/{dev}/commands")
    assert [(c["id"], c["op"], c["ok"], c["err"]) for c in cmds] == [("c-dup", None, False, "unknown_op")]
    health = server.get("/api/v1/health")
    assert health["database"] == "ok"


def test_processes_migrating_one_postgresql_at_once_all_succeed(postgres):
    """The API server and each ingest worker run the migrations when they start; here
    four `campusfleet db upgrade` processes start on one new database at once."""
    url = postgres.create_database(f"mig_{uuid.uuid4().hex[:12]}")
    cmd = [sys.executable, "-m", "fleet_server.cli", "db", "upgrade", "--db", url]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              stdin=subprocess.DEVNULL) for _ in range(4)]
    results = [(p.wait(120), p.stdout.read()) for p in procs]
    assert [rc for rc, _ in results] == [0] * len(procs), "\n".join(out[-1500:] for rc, out in results if rc)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_plain_postgresql_url_runs_on_psycopg(postgres, scheme):
    url = postgres.create_database(f"url_{uuid.uuid4().hex[:12]}")
    plain = url.replace("postgresql+psycopg://", f"{scheme}://", 1)
    engine = make_engine(plain)
    try:
        assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar_one() == url.rsplit("/", 1)[1]
    finally:
        engine.dispose()
