"""No loss and no double count through real faults, on SQLite and PostgreSQL: the
ingest worker (`campusfleet ingest`, its own process) killed with SIGKILL in the middle
of a 50,000-message run and started again; two workers sharing the load through the
MQTT v5 shared subscription; Mosquitto stopped and started again in the middle of a
run. Every run publishes distinct (device_id, seq) windows with QoS 1, so the stored
rows must equal the published ones exactly, and so must every device's
`windows_received` (the counter that would show a double count)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from fleet_server.db.engine import normalise_url
from tests.utils.loadgen import LoadGenerator, device_ids
from tests.utils.services import Mosquitto, wait_until

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """`campusfleet ingest` in its own process, its output in a log file."""

    def __init__(self, broker_url: str, db_url: str, client_id: str, log: Path, *, shared: bool = False) -> None:
        self.client_id = client_id
        self.log = log
        cmd = [sys.executable, "-m", "fleet_server.cli", "ingest", "--mqtt", broker_url, "--db", db_url,
               "--client-id", client_id] + (["--shared"] if shared else [])
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONPATH": str(ROOT)})

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_subscribed(self, timeout_s: float = 60) -> None:
        def subscribed() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"ingest worker exited ({self.proc.returncode}):\n{self.output()[-3000:]}")
            return "ingest subscribed to" in self.output()
        wait_until(subscribed, timeout_s, 0.05, f"{self.client_id} to subscribe")

    def kill9(self) -> None:
        """SIGKILL the worker, then wait until its writer process (which finishes the
        commit it is in, if any, and exits on the closed pipe) is gone too."""
        writer = writer_child(self.proc.pid)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        wait_until(lambda: process_gone(writer), 30, 0.05, f"writer process {writer} gone")

    def stop(self) -> dict[str, int]:
        """SIGTERM, wait, and return the summary line the worker prints at exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"{self.client_id} did not stop on SIGTERM") from None
        found = re.findall(rf"^ingest {re.escape(self.client_id)}: (.*)$", self.output(), re.M)
        assert found, f"no summary line from {self.client_id}:\n{self.output()[-3000:]}"
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found[-1])}


@pytest.fixture
def broker(tmp_path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own, persistent like a production broker. Not the
    session-wide one: ingest sessions outlive their workers (that is the point), and
    a stopped member of the share group would go on taking its turn of the messages."""
    (tmp_path / "broker").mkdir()
    b = Mosquitto(tmp_path / "broker", persistent=True).start()
    yield b
    b.stop()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(10)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ingest.db"
        return
    pg = request.getfixturevalue("postgres")
    name = f"delivery_{uuid.uuid4().hex[:12]}"
    url = pg.create_database(name)
    yield url
    pg.drop_database(name)


@pytest.fixture
def db(db_url) -> Iterator[Engine]:
    engine = create_engine(normalise_url(db_url), poolclass=NullPool)
    yield engine
    engine.dispose()


def stored(db: Engine) -> int:
    try:
        with db.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM windows")).scalar_one()
    except Exception:  # noqa: BLE001 - the worker may not have created the schema yet
        return 0


def assert_exactly_once(db: Engine, published: int, devices: list[str]) -> None:
    """Stored windows == published, each device has exactly its own windows, and each
    device's counter agrees with its rows."""
    assert published % len(devices) == 0
    with db.connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM windows")).scalar_one()
        per_device = dict(conn.execute(text("SELECT device_id, count(*) FROM windows GROUP BY device_id")).all())
        counters = dict(conn.execute(text("SELECT device_id, windows_received FROM devices")).all())
    assert total == published
    assert per_device == {d: published // len(devices) for d in devices}
    assert counters == per_device, "windows_received disagrees with the stored rows (a double count)"


def wait_stored(db: Engine, at_least: int, timeout_s: float) -> None:
    wait_until(lambda: stored(db) >= at_least, timeout_s, 0.05, f"{at_least} windows stored")


@pytest.mark.slow
def test_kill9_of_the_worker_mid_run_loses_nothing_and_counts_nothing_twice(broker, db_url, db, workers, tmp_path):
    n, m = 50_000, 500
    cid = f"ingest-kill-{uuid.uuid4().hex[:6]}"
    first = Worker(broker.url, db_url, cid, tmp_path / "first.log")
    workers.append(first)
    first.wait_subscribed()
    gen = LoadGenerator(broker.host, broker.port, n, m, connections=4,
                        client_prefix=f"pub-{uuid.uuid4().hex[:6]}").start()
    try:
        gen.go()
        wait_stored(db, n // 3, 120)
        first.kill9()                              # mid-batch, nothing flushed
        at_kill = stored(db)
        assert n // 3 <= at_kill < n, at_kill
        second = Worker(broker.url, db_url, cid, tmp_path / "second.log")  # same id: same session
        workers.append(second)
        wait_stored(db, n, 180)
        results = gen.join(120)
    finally:
        gen.stop()
    assert sum(r.acked for r in results) == n      # the broker took every message
    time.sleep(1.0)                                # a late redelivery would show up now
    summary = second.stop()
    assert_exactly_once(db, n, device_ids(m))
    # The second worker stored exactly what the first had not committed; what the first
    # committed but had not acked yet came again and counted as a duplicate, not a row.
    assert summary["accepted"] == n - at_kill
    print(f"\nkill -9 at {at_kill} stored; after restart {summary}")


def test_two_workers_on_the_shared_subscription_split_the_load_without_double_counting(
        broker, db_url, db, workers, tmp_path):
    n, m = 20_000, 400
    pair = []
    for i in (1, 2):
        # One after the other: the first one's migration creates the schema (on SQLite
        # two first-time migrations of one file would race each other).
        w = Worker(broker.url, db_url, f"ingest-shared-{i}-{uuid.uuid4().hex[:6]}", tmp_path / f"w{i}.log",
                   shared=True)
        workers.append(w)
        pair.append(w)
        w.wait_subscribed()
    gen = LoadGenerator(broker.host, broker.port, n, m, connections=4,
                        client_prefix=f"pub-{uuid.uuid4().hex[:6]}").start()
    try:
        gen.go()
        wait_stored(db, n, 120)
        gen.join(60)
    finally:
        gen.stop()
    time.sleep(1.0)
    summaries = [w.stop() for w in pair]
    assert_exactly_once(db, n, device_ids(m))
    accepted = [s["accepted"] for s in summaries]
    assert sum(accepted) == n, summaries
    # The broker hands each message to one member of the group: both did a real share.
    assert min(accepted) >= n // 10, summaries
    assert all(s["duplicate"] == 0 and s["rejected"] == 0 for s in summaries), summaries
    print(f"\nshares: {accepted}")


def test_broker_restart_mid_run_loses_nothing_and_counts_nothing_twice(broker, db_url, db, workers, tmp_path):
    n, m = 20_000, 400
    worker = Worker(broker.url, db_url, f"ingest-restart-{uuid.uuid4().hex[:6]}", tmp_path / "w.log")
    workers.append(worker)
    worker.wait_subscribed()
    gen = LoadGenerator(broker.host, broker.port, n, m, connections=4,
                        client_prefix=f"pub-{uuid.uuid4().hex[:6]}").start()
    try:
        gen.go()
        wait_stored(db, n // 3, 120)
        broker.stop()                              # sessions and queued messages saved to disk
        at_stop = stored(db)
        assert at_stop < n, "the run ended before the broker stopped: nothing was tested"
        time.sleep(1.0)
        broker.start()                             # same port: the worker and the publishers reconnect
        wait_stored(db, n, 180)
        results = gen.join(120)
    finally:
        gen.stop()
    assert sum(r.acked for r in results) == n
    time.sleep(1.0)
    summary = worker.stop()
    assert_exactly_once(db, n, device_ids(m))
    assert summary["accepted"] == n
    assert "ingest lost the broker" in worker.output()
    print(f"\nbroker stopped at {at_stop} stored; worker {summary}")


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")    # a zombie nobody reaped has done all it will do


def writer_child(worker_pid: int) -> int:
    """The worker's writer process (a multiprocessing spawn child)."""
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    for pid in children:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"spawn_main" in cmdline:
            return int(pid)
    raise AssertionError(f"no writer process among the children {children} of {worker_pid}")


def test_a_dead_writer_process_stops_the_worker_and_what_it_had_comes_again(broker, db_url, db, workers, tmp_path):
    n, m = 10_000, 200
    cid = f"ingest-writer-{uuid.uuid4().hex[:6]}"
    first = Worker(broker.url, db_url, cid, tmp_path / "first.log")
    workers.append(first)
    first.wait_subscribed()
    gen = LoadGenerator(broker.host, broker.port, n, m, connections=2,
                        client_prefix=f"pub-{uuid.uuid4().hex[:6]}").start()
    try:
        gen.go()
        wait_stored(db, n // 4, 60)
        os.kill(writer_child(first.proc.pid), signal.SIGKILL)
        assert first.proc.wait(30) == 1, first.output()[-2000:]
        assert "ingest writer process failed" in first.output()
        second = Worker(broker.url, db_url, cid, tmp_path / "second.log")
        workers.append(second)
        wait_stored(db, n, 120)
        gen.join(60)
    finally:
        gen.stop()
    time.sleep(1.0)
    second.stop()
    assert_exactly_once(db, n, device_ids(m))
