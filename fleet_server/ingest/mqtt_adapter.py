"""The one module that owns paho-mqtt. It receives node messages, hands them to the
writer thread in batches, and acknowledges each QoS 1 message to the broker only after
the batch that holds it is committed (paho manual ack), so a crash loses nothing: the
broker redelivers, and storage by (device_id, seq) makes the redelivery harmless."""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine

from fleet_server.ingest.stats import IngestStats
from fleet_server.ingest.store import Received, store_batch
from fleet_server.protocol import Ignored, Rejected, decode

log = logging.getLogger(__name__)

NODE_TOPICS = "campus/v1/+/#"
REJECT_LOG_INTERVAL_S = 60.0
COMMIT_RETRY_MAX_S = 10.0


@dataclass(slots=True)
class _Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    retained: bool
    received_s: float


class MqttIngest:
    def __init__(self, *, engine: Engine, host: str, port: int, client_id: str,
                 stats: IngestStats, batch_max: int = 500, batch_max_age_ms: int = 50,
                 topic: str = NODE_TOPICS) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self.stats = stats
        self.batch_max = batch_max
        self.batch_max_age_s = batch_max_age_ms / 1000
        self.topic = topic
        self._queue: queue.Queue[_Incoming] = queue.Queue()
        self._stopping = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        self._reject_logged: dict[str, float] = {}
        # Clean session off: while ingest is down the broker keeps our QoS 1 messages.
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._writer.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Commit what has been received, then disconnect."""
        self._stopping.set()
        self._writer.join(timeout_s)
        self.client.disconnect()
        self.client.loop_stop()

    def wait_connected(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.stats.connected:
                return True
            time.sleep(0.02)
        return False

    # --- commands to nodes ----------------------------------------------------------
    def publish_command(self, device_id: str, cmd: dict) -> None:
        """QoS 1 on the node's cmd topic; the broker holds it while the node is away."""
        info = self.client.publish(f"campus/v1/{device_id}/cmd",
                                   json.dumps(cmd, separators=(",", ":")), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"broker unreachable ({mqtt.error_string(info.rc)})")

    # --- paho callbacks (paho's network thread) ---------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused ingest: %s", reason_code)
            return
        client.subscribe(self.topic, qos=1)
        self.stats.connected = True
        log.info("ingest connected to %s:%s", self.host, self.port)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.stats.connected = False
        if not self._stopping.is_set():
            log.warning("ingest lost the broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        self._queue.put(_Incoming(msg.topic, msg.payload, msg.mid, msg.qos, bool(msg.retain), time.time()))
        self.stats.queue_depth = self._queue.qsize()

    # --- writer thread -----------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            batch = self._collect()
            if batch:
                self._handle(batch)
            elif self._stopping.is_set():
                return

    def _collect(self) -> list[_Incoming]:
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_max_age_s
        while len(batch) < self.batch_max:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _handle(self, batch: list[_Incoming]) -> None:
        good: list[Received] = []
        now = time.time()
        for inc in batch:
            try:
                good.append(Received(decode(inc.topic, inc.payload, now), inc.received_s, inc.retained))
            except Rejected as r:
                self.stats.count("rejected", r.reason)
                self._log_reject(inc.topic, r)
            except Ignored:
                pass
        delay = 0.2
        while True:
            try:
                with self.engine.begin() as conn:
                    outcomes = store_batch(conn, good)
                break
            except Exception:
                self.stats.commit_errors += 1
                log.exception("ingest commit failed; retrying in %.1f s (nothing acked)", delay)
                if self._stopping.is_set():
                    return  # unacked: the broker redelivers to the next ingest
                time.sleep(delay)
                delay = min(delay * 2, COMMIT_RETRY_MAX_S)
        for item, outcome in zip(good, outcomes):
            self.stats.count(outcome, _kind(item))
        self.stats.add_batch()
        # Only now is it safe to let the broker forget these messages.
        for inc in batch:
            if inc.qos:
                self.client.ack(inc.mid, inc.qos)
        self.stats.queue_depth = self._queue.qsize()

    def _log_reject(self, topic: str, r: Rejected) -> None:
        parts = topic.split("/")
        key = parts[2] if len(parts) > 2 else topic
        now = time.monotonic()
        if now - self._reject_logged.get(key, -REJECT_LOG_INTERVAL_S) >= REJECT_LOG_INTERVAL_S:
            if len(self._reject_logged) > 10000:
                self._reject_logged.clear()
            self._reject_logged[key] = now
            log.warning("rejected message on %s: %s", topic[:100], r)


def _kind(item: Received) -> str:
    return type(item.msg).__name__.lower().replace("window", "telemetry")
