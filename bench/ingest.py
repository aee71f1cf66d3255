"""Ingest throughput: the full pipeline (broker -> ingest -> committed rows) on SQLite
and PostgreSQL, against a bare paho QoS 1 subscriber measured in the same run.

    .venv/bin/python bench/ingest.py --messages 50000 --devices 1000 --db both

It starts its own Mosquitto and PostgreSQL in a temp folder (the test suite's
fixtures: tests/utils/services.py, tests/utils/postgres.py). A load generator
(tests/utils/loadgen.py: several processes, one paho connection each, QoS 1) publishes
N protocol-valid window reports from M devices. Each run is timed from the first
publish to:
  bare        the last message received by a paho subscriber that does nothing but
              count (paho acks each message as it arrives), same MQTT version and
              Receive Maximum as ingest;
  sqlite      the last window committed by `campusfleet ingest` on a SQLite file
              (the `windows` table is polled; rows must equal N exactly);
  postgresql  the same on PostgreSQL.
The ratio is each run's msgs/s over the bare subscriber's. With --repeat R the runs
interleave (bare, sqlite, postgresql, bare, ...) and the medians are reported.
--doc PATH writes the table and the command under "## Ingest" in that markdown file."""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from fleet_server.db.engine import normalise_url  # noqa: E402
from fleet_server.ingest.mqtt_adapter import default_receive_maximum  # noqa: E402
from tests.utils.loadgen import LoadGenerator  # noqa: E402
from tests.utils.services import Mosquitto  # noqa: E402

POLL_S = 0.02
POLL_FAR_S = 0.25


@dataclass
class Run:
    mode: str
    n: int
    seconds: float
    publish_seconds: float
    stored: int
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.n / self.seconds


# --- bare subscriber (its own process, like the ingest worker) ------------------------
def _bare_subscriber(host: str, port: int, n: int, v5: bool, receive_maximum: int,
                     ready, results) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    count = 0
    last = 0.0
    done = threading.Event()

    def on_message(client, userdata, msg):
        nonlocal count, last
        count += 1
        if count >= n:
            last = time.monotonic()
            done.set()

    subscribed = threading.Event()
    cid = f"bare-{uuid.uuid4().hex[:8]}"
    if v5:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = receive_maximum
        c.connect(host, port, properties=props)
    else:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311)
        c.connect(host, port)
    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    c.subscribe("campus/v1/+/#", qos=1)
    c.loop_start()
    subscribed.wait(10)
    ready.set()
    done.wait(900)
    c.disconnect()
    c.loop_stop()
    results.put((count, last))


def run_bare(broker: Mosquitto, args) -> Run:
    ctx = mp.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_bare_subscriber, daemon=True,
                       args=(broker.host, broker.port, args.messages, not args.mqtt_v311,
                             args.receive_maximum, ready, results))
    proc.start()
    if not ready.wait(20):
        proc.kill()
        raise RuntimeError("bare subscriber did not subscribe")
    gen = LoadGenerator(broker.host, broker.port, args.messages, args.devices,
                        connections=args.connections, client_prefix=f"gen-{uuid.uuid4().hex[:6]}").start()
    t0 = gen.go()
    pubs = gen.join()
    count, last = results.get(timeout=900)
    proc.join(10)
    return Run("bare", args.messages, last - t0, max(p.last_ack_s for p in pubs) - t0, count)


# --- the real ingest worker -------------------------------------------------------------
def _count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM windows")).scalar_one()


def run_ingest(mode: str, db_url: str, broker: Mosquitto, workdir: Path, args) -> Run:
    client_id = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
    log_path = workdir / f"{client_id}.log"
    cmd = [sys.executable, "-m", "fleet_server.cli", "ingest", "--mqtt", broker.url, "--db", db_url,
           "--client-id", client_id, "--mqtt-v311" if args.mqtt_v311 else "--mqtt-v5"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAMPUSFLEET_BATCH_MAX": str(args.batch_max),
           "CAMPUSFLEET_INGEST_RECEIVE_MAXIMUM": str(args.receive_maximum)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    engine = create_engine(normalise_url(db_url), poolclass=NullPool)
    try:
        deadline = time.monotonic() + 60
        while "ingest subscribed" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ingest worker did not subscribe:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        gen = LoadGenerator(broker.host, broker.port, args.messages, args.devices,
                            connections=args.connections,
                            client_prefix=f"gen-{uuid.uuid4().hex[:6]}").start()
        t0 = gen.go()
        stored = 0
        deadline = time.monotonic() + 900
        while stored < args.messages and time.monotonic() < deadline:
            # Counting is a scan: rarely while far from the end (it would take CPU from
            # what is measured), finely near it (that is where the time is read).
            time.sleep(POLL_S if stored >= 0.9 * args.messages else POLL_FAR_S)
            stored = _count(engine)
        t_end = time.monotonic()
        pubs = gen.join()
        time.sleep(0.5)  # anything beyond N would be a double count
        stored = _count(engine)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        engine.dispose()
    summary = re.findall(r"^ingest \S+: (.*)$", log_path.read_text(errors="replace"), re.M)
    return Run(mode, args.messages, t_end - t0, max(p.last_ack_s for p in pubs) - t0, stored,
               {"worker": summary[-1] if summary else "(no summary)"})


# --- report -------------------------------------------------------------------------------
def table(results: dict[str, list[Run]], args) -> str:
    bare = statistics.median(r.rate for r in results["bare"])
    lines = ["| pipeline | msgs/s (median) | ratio to bare paho | runs (msgs/s) | stored |",
             "| --- | ---: | ---: | --- | --- |"]
    for mode, runs in results.items():
        rate = statistics.median(r.rate for r in runs)
        runs_text = ", ".join(f"{r.rate:,.0f}" for r in runs)
        stored = ", ".join(str(r.stored) for r in runs)
        label = {"bare": "bare paho QoS 1 subscriber (no work)",
                 "sqlite": "ingest -> SQLite (committed rows)",
                 "postgresql": "ingest -> PostgreSQL (committed rows)"}[mode]
        lines.append(f"| {label} | {rate:,.0f} | {rate / bare:.2f} | {runs_text} | {stored} of {args.messages} |")
    return "\n".join(lines)


def write_doc(path: Path, body: str) -> None:
    text_ = path.read_text() if path.exists() else "# Performance and budgets\n"
    section = "## Ingest\n\n" + body.strip() + "\n"
    m = re.search(r"^## Ingest\n.*?(?=^## |\Z)", text_, re.M | re.S)
    if m:
        text_ = text_[:m.start()] + section + ("\n" if text_[m.end():] else "") + text_[m.end():]
    else:
        text_ = text_.rstrip("\n") + "\n\n" + section
    path.write_text(text_)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", "-n", type=int, default=50000, help="window reports to publish per run")
    ap.add_argument("--devices", "-m", type=int, default=1000, help="devices they come from")
    ap.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--connections", type=int, default=4, help="publisher processes (one connection each)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each pipeline (medians reported)")
    ap.add_argument("--batch-max", type=int, default=500, help="CAMPUSFLEET_BATCH_MAX for the worker")
    ap.add_argument("--receive-maximum", type=int, default=0,
                    help="v5 Receive Maximum of ingest and the bare subscriber (0 = ingest's default)")
    ap.add_argument("--mqtt-v311", action="store_true", help="MQTT 3.1.1 instead of 5 (ingest and bare)")
    ap.add_argument("--doc", type=Path, help="write the results under '## Ingest' in this markdown file")
    args = ap.parse_args()
    args.receive_maximum = args.receive_maximum or default_receive_maximum(args.batch_max)
    command = "python bench/ingest.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    workdir = Path(tempfile.mkdtemp(prefix="campusfleet-bench-"))
    broker = Mosquitto(workdir)
    # Never drop a queued message in a bench run: room for every message of a run.
    broker.conf.write_text(broker.conf.read_text().replace(
        "max_queued_messages 100000", f"max_queued_messages {max(100000, 2 * args.messages)}"))
    broker.start()
    pg = None
    modes = ["bare"] + (["sqlite"] if args.db in ("sqlite", "both") else []) \
        + (["postgresql"] if args.db in ("postgresql", "both") else [])
    results: dict[str, list[Run]] = {m: [] for m in modes}
    try:
        if "postgresql" in modes:
            from tests.utils.postgres import Postgres
            pg = Postgres().start()
        for rep in range(args.repeat):
            for mode in modes:
                if mode == "bare":
                    r = run_bare(broker, args)
                elif mode == "sqlite":
                    r = run_ingest(mode, f"sqlite:///{workdir}/bench-{rep}.db", broker, workdir, args)
                else:
                    r = run_ingest(mode, pg.create_database(f"bench_{rep}"), broker, workdir, args)
                results[mode].append(r)
                worker = f"  [{r.extra['worker']}]" if r.extra else ""
                print(f"{mode:>10}: {r.rate:8,.0f} msgs/s  ({r.n} in {r.seconds:.2f} s; generator done "
                      f"in {r.publish_seconds:.2f} s; stored {r.stored}){worker}", flush=True)
    finally:
        broker.stop()
        if pg is not None:
            pg.stop()

    out = table(results, args)
    print()
    print(out)
    bad = [(m, r.stored) for m, runs in results.items() for r in runs if r.stored != r.n]
    if bad:
        print(f"\nNOT EXACT: stored != published in {bad}")
    if args.doc:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
        body = f"""
Measured with

```
{command}
```

on {os.cpu_count()} cores ({cpu}), the load generator, Mosquitto, PostgreSQL and the
ingest worker all on the same machine. Each run publishes {args.messages:,} window reports
from {args.devices:,} devices over {args.connections} QoS 1 connections and is timed from the
first publish to the last message received (bare subscriber) or to the last window
committed (`windows` rows counted; every run must end with exactly {args.messages:,} rows).
MQTT {"3.1.1" if args.mqtt_v311 else "5"}, Receive Maximum {args.receive_maximum},
BATCH_MAX {args.batch_max}.

{out}
"""
        write_doc(args.doc, body)
        print(f"\nwritten to {args.doc} under '## Ingest'")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
