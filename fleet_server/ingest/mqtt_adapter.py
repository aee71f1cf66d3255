"""The one module that owns paho-mqtt. It receives node messages, hands them to the
writer thread in batches, and acknowledges each QoS 1 message to the broker only after
the batch that holds it is committed (paho manual ack), so a crash loses nothing: the
broker redelivers, and storage by (device_id, seq) makes the redelivery harmless.

MQTT v5 (the default against Mosquitto) or 3.1.1 (the embedded amqtt broker speaks
only that). With v5 the session is kept by the broker for `session_expiry_s` after a
disconnect (clean start off), and ingest announces a Receive Maximum: how many QoS 1
messages the broker may send before the first of them is acked. With 3.1.1 that number
is the broker's own setting (Mosquitto: `max_inflight_messages`, default 20, which is
too few for batching: set it to at least twice BATCH_MAX).

Several ingest processes share the load through the MQTT v5 shared subscription
`$share/campusfleet/campus/v1/+/#`: the broker hands each message to one of them."""
from __future__ import annotations

import json
import logging
import struct
import threading
import time
from collections import Counter, deque

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import Connection, Engine

from fleet_server.ingest.fastpath import decode
from fleet_server.ingest.stats import IngestStats
from fleet_server.ingest.store import Received, store_batch
from fleet_server.protocol import Ignored, Rejected

log = logging.getLogger(__name__)

NODE_TOPICS = "campus/v1/+/#"
SHARE_GROUP = "campusfleet"
SHARED_NODE_TOPICS = f"$share/{SHARE_GROUP}/{NODE_TOPICS}"
REJECT_LOG_INTERVAL_S = 60.0
COMMIT_RETRY_MAX_S = 10.0
RECEIVE_MAXIMUM_LIMIT = 65535   # a two-byte field in CONNECT
# How long the broker keeps a v5 session (subscription + queued messages) after the
# worker disconnects or dies: long enough for any restart, upgrade or outage.
DEFAULT_SESSION_EXPIRY_S = 7 * 86400


_PUBACK = 0x40
_puback = struct.Struct("!BBH").pack
# The two I/O shortcuts below use three methods paho has had since 1.x; if a paho
# release drops one of them, ingest falls back to paho's own per-packet reads and acks.
_FAST_IO = all(callable(getattr(mqtt.Client, name, None))
               for name in ("_sock_recv", "_sock_close", "_packet_queue"))


class _IngestClient(mqtt.Client):
    """paho's client with two savings on the hot path of a busy subscriber:

    - reads: paho asks the socket for one packet at a time in three or four small
      recv() calls, with a select() in between. Here one recv() of up to 64 KB feeds
      paho's reader, which then takes every complete packet in it in one go.
    - acks: `ack_many()` queues the PUBACKs of a whole batch as one write, where
      paho's `ack()` costs a wake-up of its thread and one send() per 4-byte packet.
    Packets, state and callbacks are paho's own; only the syscalls are fewer."""

    _READ_SIZE = 65536

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(self._READ_SIZE)  # BlockingIOError etc. as paho expects
            if not data:
                return data  # connection closed
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = end = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start:end]

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0  # never carry bytes over to the next connection
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        # paho reads one packet per call; go on while whole packets are buffered (no
        # select() would wake for bytes that already left the socket).
        rc = super().loop_read(max_packets)
        while rc == mqtt.MQTT_ERR_SUCCESS and self._sock is not None and self._rpos < len(self._rbuf):
            rc = super().loop_read(max_packets)
        return rc

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK each QoS 1 message id, in one write."""
        if mids:
            self._packet_queue(_PUBACK, b"".join([_puback(_PUBACK, 2, mid) for mid in mids]), 0, 0)


def client_class() -> type[mqtt.Client]:
    """paho's Client, with the read and ack shortcuts when this paho version allows them."""
    return _IngestClient if _FAST_IO else mqtt.Client


def default_receive_maximum(batch_max: int) -> int:
    """Room for the batch being committed, the next one filling, and the one after."""
    return max(20, min(RECEIVE_MAXIMUM_LIMIT, 3 * batch_max))


class MqttIngest:
    def __init__(self, *, engine: Engine, host: str, port: int, client_id: str,
                 stats: IngestStats, batch_max: int = 500, batch_max_age_ms: int = 50,
                 mqtt_v5: bool = True, shared: bool = False,
                 session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
                 receive_maximum: int | None = None, topic: str | None = None) -> None:
        if shared and not mqtt_v5:
            raise ValueError("a shared subscription needs MQTT v5")
        self.engine = engine
        self.host = host
        self.port = port
        self.stats = stats
        self.mqtt_v5 = mqtt_v5
        self.shared = shared
        self.topic = topic or (SHARED_NODE_TOPICS if shared else NODE_TOPICS)
        self.receive_maximum = receive_maximum or default_receive_maximum(batch_max)
        # With v5 the broker never has more than receive_maximum unacked messages out
        # to us, so a batch larger than that could only close by age.
        self.batch_max = min(batch_max, self.receive_maximum) if mqtt_v5 else batch_max
        self.batch_max_age_s = batch_max_age_ms / 1000
        # The paho thread appends, the writer pops: deque operations are atomic, and
        # the event is only touched when the writer may be waiting for it.
        self._pending: deque[tuple[int, mqtt.MQTTMessage]] = deque()
        self._arrived = threading.Event()
        self._stopping = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        self._reject_logged: dict[str, float] = {}
        self._conn: Connection | None = None
        self._subscribed = threading.Event()
        # Counts connections; a message is acked only on the connection it came in on
        # (after a reconnect the broker sends what was unacked again, and that copy is
        # the one acked).
        self._generation = 0
        client_cls = client_class()
        if mqtt_v5:
            # Clean start off and a session expiry: while ingest is down the broker
            # keeps its subscription and its QoS 1 messages.
            self.client = client_cls(CallbackAPIVersion.VERSION2, client_id=client_id,
                                       protocol=mqtt.MQTTv5, manual_ack=True)
            self._connect_properties: Properties | None = Properties(PacketTypes.CONNECT)
            self._connect_properties.SessionExpiryInterval = session_expiry_s
            self._connect_properties.ReceiveMaximum = self.receive_maximum
        else:
            self.client = client_cls(CallbackAPIVersion.VERSION2, client_id=client_id,
                                       protocol=mqtt.MQTTv311, clean_session=False, manual_ack=True)
            self._connect_properties = None
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        if self.mqtt_v5:
            self.client.connect_async(self.host, self.port, keepalive=30, clean_start=False,
                                      properties=self._connect_properties)
        else:
            self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._writer.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Commit what has been received, then disconnect."""
        self._stopping.set()
        self._arrived.set()
        self._writer.join(timeout_s)
        self.client.disconnect()
        self.client.loop_stop()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def wait_connected(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.stats.connected:
                return True
            time.sleep(0.02)
        return False

    def wait_subscribed(self, timeout_s: float) -> bool:
        return self._subscribed.wait(timeout_s)

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
        self._generation += 1
        if flags.session_present and self.mqtt_v5:
            # A session kept from a run with the other subscription (shared or not)
            # would deliver every message twice: drop that one.
            client.unsubscribe(NODE_TOPICS if self.shared else SHARED_NODE_TOPICS)
        client.subscribe(self.topic, qos=1)
        self.stats.connected = True
        log.info("ingest connected to %s:%s (MQTT %s, session %s)", self.host, self.port,
                 "5" if self.mqtt_v5 else "3.1.1", "resumed" if flags.session_present else "new")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("broker refused the subscription to %s: %s", self.topic,
                      ", ".join(str(rc) for rc in reason_codes))
            return
        if not self._subscribed.is_set():
            log.info("ingest subscribed to %s", self.topic)
        self._subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.stats.connected = False
        if not self._stopping.is_set():
            log.warning("ingest lost the broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        pending = self._pending
        pending.append((self._generation, msg))
        n = len(pending)
        if n == 1 or n >= self.batch_max:
            self._arrived.set()

    # --- writer thread -----------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            batch = self._collect()
            if batch:
                self._handle(batch)
            elif self._stopping.is_set():
                return

    def _wait_for(self, enough: int, timeout_s: float) -> bool:
        """Wait until `enough` messages are pending or the time is up."""
        deadline = time.monotonic() + timeout_s
        while len(self._pending) < enough:
            self._arrived.clear()
            if len(self._pending) >= enough:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping.is_set():
                return False
            self._arrived.wait(remaining)
        return True

    def _collect(self) -> list[tuple[int, mqtt.MQTTMessage]]:
        pending = self._pending
        if not pending and not self._wait_for(1, 0.1):
            self.stats.queue_depth = 0
            return []
        if len(pending) < self.batch_max and not self._stopping.is_set():
            self._wait_for(self.batch_max, self.batch_max_age_s)
        popleft = pending.popleft
        batch = [popleft() for _ in range(min(self.batch_max, len(pending)))]
        self.stats.queue_depth = len(pending)
        return batch

    def _handle(self, batch: list[tuple[int, mqtt.MQTTMessage]]) -> None:
        good: list[Received] = []
        rejected: Counter[str] = Counter()
        now = time.time()
        # paho stamps each message with time.monotonic() on arrival.
        wall_offset = now - time.monotonic()
        for _, msg in batch:
            try:
                topic = msg.topic
                good.append(Received(decode(topic, msg.payload, now), msg.timestamp + wall_offset,
                                     bool(msg.retain)))
            except Rejected as r:
                rejected[r.reason] += 1
                self._log_reject(topic, r)
            except Ignored:
                pass
            except Exception as e:  # noqa: BLE001 - one bad message must not stop ingest
                # The decoder promises Rejected or Ignored only; anything else is a bug
                # there. The message cannot be stored either way: count it and move on.
                rejected["out_of_range"] += 1
                log.error("decoder failed on a message (%s: %s); rejected", type(e).__name__, str(e)[:100])
        delay = 0.2
        while True:
            try:
                conn = self._connection()
                with conn.begin():
                    outcomes = store_batch(conn, good)
                break
            except Exception:
                self._close_conn()
                self.stats.commit_errors += 1
                log.exception("ingest commit failed; retrying in %.1f s (nothing acked)", delay)
                if self._stopping.is_set():
                    return  # unacked: the broker redelivers to the next ingest
                time.sleep(delay)
                delay = min(delay * 2, COMMIT_RETRY_MAX_S)
        counts: Counter[tuple[str, str]] = Counter(
            (outcome, _kind(item)) for item, outcome in zip(good, outcomes))
        counts.update({("rejected", reason): n for reason, n in rejected.items()})
        self.stats.add_batch(counts)
        # Only now is it safe to let the broker forget these messages (rejected ones
        # too: they would be rejected again).
        self._ack(batch)

    def _ack(self, batch: list[tuple[int, mqtt.MQTTMessage]]) -> None:
        generation = self._generation
        current = [msg for gen, msg in batch if gen == generation and msg.qos]
        if _FAST_IO and all(msg.qos == 1 for msg in current):
            self.client.ack_many([msg.mid for msg in current])
        else:
            for msg in current:
                self.client.ack(msg.mid, msg.qos)

    def _connection(self) -> Connection:
        """The writer's own connection, held between batches (no pool round trip)."""
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self.engine.connect()
        return self._conn

    def _close_conn(self) -> None:
        """Drop a connection that failed (the next batch opens a fresh one)."""
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
            self._conn = None

    def _log_reject(self, topic: str, r: Rejected) -> None:
        parts = topic.split("/")
        key = parts[2] if len(parts) > 2 else topic
        now = time.monotonic()
        if now - self._reject_logged.get(key, -REJECT_LOG_INTERVAL_S) >= REJECT_LOG_INTERVAL_S:
            if len(self._reject_logged) > 10000:
                self._reject_logged.clear()
            self._reject_logged[key] = now
            log.warning("rejected message on %s: %s", topic[:100], r)


_KIND = {"Window": "telemetry", "Event": "event", "Status": "status", "Ack": "ack"}


def _kind(item: Received) -> str:
    return _KIND[type(item.msg).__name__]
