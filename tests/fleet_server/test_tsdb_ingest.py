"""The time-series sink wired into ingest: windows published over real Mosquitto reach a
real VictoriaMetrics through `campusfleet ingest`, with its writer process and with its
writer thread, once each even when the broker delivers a window twice, with the values
the SQL database stored."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.utils.loadgen import LoadGenerator, window_payload
from tests.utils.services import Mosquitto, Publisher, wait_until
from tests.utils.victoria import VictoriaMetrics

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def victoria(tmp_path) -> Iterator[VictoriaMetrics]:
    vm = VictoriaMetrics(tmp_path / "vm").start()
    yield vm
    vm.stop()


@pytest.fixture
def broker(tmp_path) -> Iterator[Mosquitto]:
    (tmp_path / "broker").mkdir()
    b = Mosquitto(tmp_path / "broker", persistent=True).start()
    yield b
    b.stop()


def co2_points(vm: VictoriaMetrics) -> dict[tuple[str, int], float]:
    return {(dev, ts): v for (name, dev), pts in vm.samples('{__name__="campus_window_co2_ppm"}').items()
            for ts, v in pts.items()}


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_ingest_writes_each_stored_window_to_victoriametrics_once(broker, victoria, tmp_path, writer):
    n, m = 600, 6
    db_url = f"sqlite:///{tmp_path / 'fleet.db'}"
    cid = f"ingest-tsdb-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "worker.log"
    cmd = [sys.executable, "-m", "fleet_server.cli", "ingest", "--mqtt", broker.url, "--db", db_url,
           "--client-id", cid, "--writer-process" if writer == "process" else "--writer-thread"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAMPUSFLEET_TSDB_URL": victoria.url,
           "CAMPUSFLEET_TSDB_ORG": "campus"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: "ingest subscribed to" in log.read_text(errors="replace") or proc.poll() is not None,
                   60, 0.05, "the ingest worker to subscribe")
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        gen = LoadGenerator(broker.host, broker.port, n, m, connections=2,
                            client_prefix=f"pub-{uuid.uuid4().hex[:6]}").start()
        try:
            gen.go()
            gen.join(120)
        finally:
            gen.stop()
        engine = create_engine(db_url)

        def stored() -> int:
            try:
                with engine.connect() as conn:
                    return conn.execute(text("SELECT count(*) FROM windows")).scalar_one()
            except Exception:  # noqa: BLE001 - schema not there yet
                return 0
        wait_until(lambda: stored() >= n, 60, 0.1, f"{n} windows stored")
        # A window the broker delivers again (the first one of a device): a duplicate in
        # SQL, so it must not be offered to the TSDB a second time either.
        with engine.connect() as conn:
            dev, seq, ts = conn.execute(text(
                "SELECT device_id, seq, ts FROM windows ORDER BY device_id, seq LIMIT 1")).one()
        again = window_payload(seq, ts, 0)
        pub = Publisher(broker.host, broker.port, f"again-{uuid.uuid4().hex[:6]}")
        pub.publish(f"campus/v1/{dev}/telemetry", again)
        pub.close()
        wait_until(lambda: len(co2_points(victoria)) >= n, 30, 0.2, f"{n} points in VictoriaMetrics")
        with engine.connect() as conn:
            sql = {(d, int(t)): float(c) for d, t, c in conn.execute(text(
                "SELECT device_id, ts, co2_ppm FROM windows"))}
        engine.dispose()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]
    assert co2_points(victoria) == sql     # the same windows, the same values
    output = log.read_text(errors="replace")
    summary = dict(re.findall(r"(\w+)=(\d+)", re.findall(rf"^ingest {cid}: (.*)$", output, re.M)[-1]))
    assert int(summary["accepted"]) == n and int(summary["duplicate"]) >= 1
    if writer == "process":
        # The writer process logs what its sink did when it exits.
        m_ = re.search(r"tsdb sink: \{'written': (\d+), 'dropped': (\d+), 'failed': (\d+)", output)
        assert m_ and m_.groups() == (str(n), "0", "0"), output[-2000:]
