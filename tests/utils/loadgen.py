"""A load generator for ingest: N protocol-valid window reports from M devices,
published with QoS 1 over several paho connections, each in its own process (so the
generator is not limited by one interpreter's lock). Used by bench/ingest.py and by
the delivery tests.

Every message is a distinct (device_id, seq), so "stored == published" is exact: the
windows table must end with exactly N rows. The publishers keep their session
(clean session off) and paho resends what the broker had not acknowledged after a
reconnect, so a broker restart in the middle of a run loses nothing on this side either."""
from __future__ import annotations

import json
import multiprocessing as mp
import time
from dataclasses import dataclass

WIN_S = 60


def device_ids(m: int, prefix: str = "c0ffee") -> list[str]:
    """M device ids, cf- + 12 hex digits."""
    assert len(prefix) <= 6
    return [f"cf-{prefix}{i:0{12 - len(prefix)}x}" for i in range(m)]


def window_payload(seq: int, ts: int, i: int) -> bytes:
    """One window report exactly as a node sends it (PROTOCOL.md), values varied by i."""
    occupied = (i * 7) % (WIN_S + 1)
    doc = {"v": 1, "seq": seq, "ts": ts, "win": WIN_S,
           "occ": {"occupied_s": occupied, "present": occupied > 30, "pir": i % 13,
                   "radar_s": min(occupied + 1, WIN_S)},
           "env": {"co2_ppm": 420 + i % 1500, "temp_c": round(18 + (i % 90) / 10, 1),
                   "rh_pct": round(30 + (i % 400) / 10, 1), "lux": float(100 + i % 700),
                   "noise_dba": round(35 + (i % 300) / 10, 1)}}
    return json.dumps(doc, separators=(",", ":")).encode()


def plan(n: int, devices: list[str], now_s: float | None = None) -> list[tuple[str, bytes]]:
    """N (topic, payload) pairs, round-robin over the devices like a fleet reporting in
    the same minute; per device seq 1, 2, ... and ts one window apart, ending in the
    past (so every ts passes the server's 35-day / 300 s checks)."""
    per_device = -(-n // len(devices))
    now = int(now_s if now_s is not None else time.time())
    first_ts = now - (per_device + 5) * WIN_S
    first_ts -= first_ts % WIN_S
    out = []
    for k in range(per_device):
        ts = first_ts + k * WIN_S
        for d, dev in enumerate(devices):
            if len(out) == n:
                return out
            out.append((f"campus/v1/{dev}/telemetry", window_payload(k + 1, ts, k * 31 + d)))
    return out


@dataclass
class PublisherResult:
    client_id: str
    published: int
    acked: int
    first_publish_s: float    # time.monotonic(), comparable across processes on Linux
    last_ack_s: float
    cpu_s: float = 0.0        # CPU time the publishing process used from `go` to the last ack


def _publisher(host: str, port: int, client_id: str, items: list[tuple[str, bytes]],
               ready, go, results, inflight: int) -> None:
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    acked = 0
    last_ack = 0.0
    cond = threading.Condition()

    def on_publish(client, userdata, mid, reason_code, properties):
        nonlocal acked, last_ack
        with cond:
            acked += 1
            last_ack = time.monotonic()
            if acked == len(items) or len(items) - acked <= inflight:
                cond.notify()
            elif acked % 64 == 0:
                cond.notify()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    # The window is kept here, not by paho: paho's own limit walks every queued
    # message on each PUBACK, which is quadratic with tens of thousands queued.
    c.max_inflight_messages_set(0)
    c.on_publish = on_publish
    c.reconnect_delay_set(0.1, 1)
    c.connect(host, port, keepalive=30)
    c.loop_start()
    ready.set()
    go.wait()
    first = time.monotonic()
    cpu0 = time.process_time()
    for sent, (topic, payload) in enumerate(items):
        if sent - acked >= inflight:
            with cond:
                cond.wait_for(lambda: sent - acked < inflight, 600)
        # Never refused: paho queues while disconnected and resends after reconnecting.
        c.publish(topic, payload, qos=1)
    with cond:
        cond.wait_for(lambda: acked >= len(items), 600)
    c.disconnect()
    c.loop_stop()
    results.put(PublisherResult(client_id, len(items), acked, first, last_ack, time.process_time() - cpu0))


class LoadGenerator:
    """`start()` builds the payloads and connects (not timed); `go()` starts publishing
    in every process at once and returns the start time (time.monotonic());
    `join()` waits until every message is acknowledged by the broker."""

    def __init__(self, host: str, port: int, n: int, devices: int | list[str], *,
                 connections: int = 4, inflight: int = 1000, client_prefix: str = "loadgen") -> None:
        ids = device_ids(devices) if isinstance(devices, int) else devices
        connections = max(1, min(connections, len(ids)))
        items = plan(n, ids)
        # Each connection owns whole devices, so one device's windows go out in seq
        # order on one connection, as from a real node.
        shares: list[list[tuple[str, bytes]]] = [[] for _ in range(connections)]
        owner = {dev: i % connections for i, dev in enumerate(ids)}
        for topic, payload in items:
            shares[owner[topic.split("/")[2]]].append((topic, payload))
        ctx = mp.get_context("spawn")
        self.n = len(items)
        self.devices = ids
        self._go = ctx.Event()
        self._results = ctx.Queue()
        self._readies = []
        self._procs = []
        for i, share in enumerate(shares):
            ready = ctx.Event()
            self._readies.append(ready)
            self._procs.append(ctx.Process(
                target=_publisher, daemon=True, name=f"loadgen-{i}",
                args=(host, port, f"{client_prefix}-{i}", share, ready, self._go, self._results, inflight)))
        self.started_s = 0.0

    def start(self, timeout_s: float = 60) -> LoadGenerator:
        for p in self._procs:
            p.start()
        deadline = time.monotonic() + timeout_s
        for ready in self._readies:
            if not ready.wait(max(0.0, deadline - time.monotonic())):
                self.stop()
                raise RuntimeError("load generator did not connect to the broker")
        return self

    def go(self) -> float:
        self.started_s = time.monotonic()
        self._go.set()
        return self.started_s

    def join(self, timeout_s: float = 600) -> list[PublisherResult]:
        out = [self._results.get(timeout=timeout_s) for _ in self._procs]
        for p in self._procs:
            p.join(10)
        return out

    def stop(self) -> None:
        for p in self._procs:
            if p.is_alive():
                p.kill()
                p.join(5)
