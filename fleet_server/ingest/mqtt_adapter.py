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
`$share/campusfleet/campus/v1/+/#`: the broker hands each message to one of them.

Decoding and storing happen in a writer thread (`serve`), or with `writer_process=True`
(the `campusfleet ingest` worker) in a writer process of their own, so that they run on
another core than paho: this process then only receives, hands batches down a pipe,
and acks each batch when the writer process reports it committed."""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import struct
import threading
import time
from collections import deque

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import Engine

from fleet_server.ingest.stats import IngestStats
from fleet_server.ingest.tsdb import TimeSeriesSink
from fleet_server.ingest.writer import BatchWriter, Item, device_limiter, writer_process_main
from fleet_server.settings import Settings

log = logging.getLogger(__name__)

NODE_TOPICS = "campus/v1/+/#"
SHARE_GROUP = "campusfleet"
SHARED_NODE_TOPICS = f"$share/{SHARE_GROUP}/{NODE_TOPICS}"
# Batches handed to the writer process and not yet reported committed: one being
# written, one waiting, so the writer never idles while the next batch travels.
PROCESS_PIPELINE_DEPTH = 2
RECEIVE_MAXIMUM_LIMIT = 65535   # a two-byte field in CONNECT
# How long the broker keeps a v5 session (subscription + queued messages) after the
# worker disconnects or dies: long enough for any restart, upgrade or outage.
DEFAULT_SESSION_EXPIRY_S = 7 * 86400


_PUBACK = 0x40
_puback = struct.Struct("!BBH").pack
# The shortcuts below use internals of paho 2.x (methods it has had since 1.x and the
# slots of MQTTMessage); with another major version, or if one is missing, ingest uses
# paho's own per-packet reads, PUBLISH decoding and acks.
_FAST_IO = (
    paho.mqtt.__version__.split(".")[0] == "2"
    and all(callable(getattr(mqtt.Client, name, None))
            for name in ("_sock_recv", "_sock_close", "_packet_queue", "_handle_publish", "_handle_on_message"))
    and set(getattr(mqtt.MQTTMessage, "__slots__", ())) == {
        "_topic", "dup", "info", "mid", "payload", "properties", "qos", "retain", "state", "timestamp"}
    and callable(getattr(mqtt, "time_func", None))
)
# What paho gives a v5 PUBLISH that carries no properties: an empty Properties. One,
# shared by every such message (ingest never reads or changes it).
_NO_PROPERTIES = Properties(PacketTypes.PUBLISH)
_MS_INVALID = getattr(mqtt, "mqtt_ms_invalid", 0)
_new_message = mqtt.MQTTMessage.__new__


class _IngestClient(mqtt.Client):
    """paho's client with two savings on the hot path of a busy subscriber:

    - reads: paho asks the socket for one packet at a time in three or four small
      recv() calls, with a select() in between. Here one recv() of up to 64 KB feeds
      paho's reader, which then takes every complete packet in it in one go.
    - acks: `ack_many()` queues the PUBACKs of a whole batch as one write, where
      paho's `ack()` costs a wake-up of its thread and one send() per 4-byte packet.
    - PUBLISH: the message every node sends (MQTT 5, QoS 1, no properties, taken with
      manual ack) is decoded here into paho's MQTTMessage, without building a new
      Properties (paho spends about half of its time per message on that) or the
      MQTTMessageInfo that only outgoing messages use. Every other PUBLISH goes through
      paho's own `_handle_publish`.
    Packets, state and callbacks are paho's own; only the work per packet is less."""

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

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        header = self._in_packet["command"]
        packet = self._in_packet["packet"]
        # Fixed header: QoS 1 is bits 1-2 == 01. Variable header: topic length (2),
        # topic, packet id (2), properties length (a variable byte integer; 0 = none).
        if self._protocol == mqtt.MQTTv5 and (header & 0x06) == 0x02 and self._manual_ack and len(packet) >= 2:
            end = 2 + ((packet[0] << 8) | packet[1])
            if end > 2 and end + 3 <= len(packet) and packet[end + 2] == 0:
                msg = _new_message(mqtt.MQTTMessage)
                msg.timestamp = mqtt.time_func()
                msg.state = _MS_INVALID
                msg.dup = bool(header & 0x08)
                msg.mid = (packet[end] << 8) | packet[end + 1]
                msg._topic = bytes(packet[2:end])
                msg.payload = bytes(packet[end + 3:])
                msg.qos = 1
                msg.retain = bool(header & 0x01)
                msg.info = None
                msg.properties = _NO_PROPERTIES
                self._handle_on_message(msg)
                return mqtt.MQTT_ERR_SUCCESS
        return super()._handle_publish()

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
                 receive_maximum: int | None = None, topic: str | None = None,
                 writer_process: bool = False, tsdb: TimeSeriesSink | None = None,
                 tsdb_settings: Settings | None = None, tls_ca_file: str | None = None,
                 device_rate: tuple[float, int] | None = None) -> None:
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
        # Set when the writer process died: this worker can no longer store anything
        # and should exit (what it had not acked comes again to its successor).
        self.failed = threading.Event()
        self.writer_process = writer_process
        # The optional time-series sink: in-process (thread writer), or built inside the
        # writer process from tsdb_settings.
        self.tsdb = tsdb
        self.tsdb_settings = tsdb_settings
        # Per-device message rate limit (ingest/ratelimit.py): (per second, burst); None = off.
        self.device_rate = device_rate
        self._batch_writer: BatchWriter | None = None
        self._proc: mp.process.BaseProcess | None = None
        self._pipe = None
        self._inflight: deque[tuple[int, list[tuple[int, mqtt.MQTTMessage]]]] = deque()
        self._slots = threading.Semaphore(PROCESS_PIPELINE_DEPTH)
        self._results: threading.Thread | None = None
        self._writer = threading.Thread(target=self._dispatch_loop if writer_process else self._write_loop,
                                        name="ingest-writer", daemon=True)
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
        if tls_ca_file is not None:
            # mqtts:// (docs/security.md, "TLS"): verify the broker against this CA ('' =
            # the system's trust store), and its name against the certificate.
            self.client.tls_set(ca_certs=tls_ca_file or None)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        if self.writer_process:
            self._start_writer_process()
        else:
            self._batch_writer = BatchWriter(self.engine, should_stop=self._stopping.is_set, tsdb=self.tsdb,
                                             limiter=device_limiter(self.device_rate))
        if self.mqtt_v5:
            self.client.connect_async(self.host, self.port, keepalive=30, clean_start=False,
                                      properties=self._connect_properties)
        else:
            self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._writer.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Commit what has been received, ack it, then disconnect."""
        self._stopping.set()
        self._arrived.set()
        self._writer.join(timeout_s)
        if self._results is not None:
            self._results.join(timeout_s)
        self.client.disconnect()
        self.client.loop_stop()
        if self._batch_writer is not None:
            self._batch_writer.close()
        if self._proc is not None:
            self._proc.join(timeout_s)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)

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

    # --- batches -----------------------------------------------------------------------
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

    @staticmethod
    def _items(batch: list[tuple[int, mqtt.MQTTMessage]]) -> list[Item]:
        # paho stamps each message with time.monotonic() on arrival.
        wall_offset = time.time() - time.monotonic()
        items = []
        for _, msg in batch:
            try:
                topic = msg.topic
            except UnicodeDecodeError:
                topic = "(topic not UTF-8)"      # rejected as bad_topic
            items.append((topic, msg.payload, msg.timestamp + wall_offset, bool(msg.retain)))
        return items

    def _ack(self, batch: list[tuple[int, mqtt.MQTTMessage]]) -> None:
        """Only after the commit may the broker forget these messages (rejected ones
        too: they would be rejected again); and only on the connection they came in on."""
        generation = self._generation
        current = [msg for gen, msg in batch if gen == generation and msg.qos]
        if _FAST_IO and all(msg.qos == 1 for msg in current):
            self.client.ack_many([msg.mid for msg in current])
        else:
            for msg in current:
                self.client.ack(msg.mid, msg.qos)

    # --- writer thread (serve) ---------------------------------------------------------
    def _write_loop(self) -> None:
        assert self._batch_writer is not None
        while True:
            batch = self._collect()
            if batch:
                result = self._batch_writer.write(self._items(batch))
                if result is None:
                    return  # stopping and the database is down: unacked, redelivered later
                counts, errors = result
                self.stats.commit_errors += errors
                self.stats.add_batch(counts)
                self._ack(batch)
            elif self._stopping.is_set():
                return

    # --- writer process (campusfleet ingest) ---------------------------------------------
    def _start_writer_process(self) -> None:
        ctx = mp.get_context("spawn")   # never fork a process that runs threads
        parent_end, child_end = ctx.Pipe()
        url = self.engine.url.render_as_string(hide_password=False)
        self._proc = ctx.Process(target=writer_process_main, name="campusfleet-ingest-writer", daemon=True,
                                 args=(url, child_end, logging.getLogger().getEffectiveLevel(),
                                       self.tsdb_settings, self.device_rate))
        self._proc.start()
        child_end.close()
        self._pipe = parent_end
        self._results = threading.Thread(target=self._result_loop, name="ingest-results", daemon=True)
        self._results.start()

    def _dispatch_loop(self) -> None:
        next_id = 0
        while not self.failed.is_set():
            batch = self._collect()
            if batch:
                while not self._slots.acquire(timeout=0.5):
                    if self.failed.is_set():
                        return
                self._inflight.append((next_id, batch))
                try:
                    self._pipe.send((next_id, self._items(batch)))
                except (BrokenPipeError, OSError):
                    self._writer_died("the pipe to it broke")
                    return
                next_id += 1
            elif self._stopping.is_set():
                try:
                    self._pipe.send(None)   # the writer finishes what it has, then exits
                except (BrokenPipeError, OSError):
                    pass
                return

    def _result_loop(self) -> None:
        while True:
            try:
                batch_id, counts, errors = self._pipe.recv()
            except (EOFError, OSError):
                if self._inflight or not self._stopping.is_set():
                    self._writer_died("it exited")
                return
            expected, batch = self._inflight.popleft()
            assert batch_id == expected, (batch_id, expected)
            self.stats.commit_errors += errors
            self.stats.add_batch(counts)
            self._ack(batch)
            self._slots.release()

    def _writer_died(self, how: str) -> None:
        if not self.failed.is_set():
            log.error("ingest writer process failed (%s); %d batch(es) not acked will come again",
                      how, len(self._inflight))
            self.failed.set()
