"""Ingest's paho client (fleet_server/ingest/mqtt_adapter.py `_IngestClient`) hands
on_message exactly what paho's own Client would, for every PUBLISH: its own shortcut
(MQTT 5, QoS 1, no properties) and everything it leaves to paho. And its buffered
reads and batched PUBACKs against a real Mosquitto: nothing lost, nothing acked twice."""
from __future__ import annotations

import struct
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet_server.ingest.mqtt_adapter import _FAST_IO, _IngestClient

pytestmark = pytest.mark.skipif(not _FAST_IO, reason="this paho version runs ingest on paho's own code paths")


def publish_body(topic: bytes, mid: int | None, payload: bytes, props: bytes | None) -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if mid is not None:
        body += struct.pack("!H", mid)
    if props is not None:
        body += props
    return body + payload


def user_property() -> bytes:
    p = Properties(PacketTypes.PUBLISH)
    p.UserProperty = ("k", "v")
    p.MessageExpiryInterval = 60
    return p.pack()


def delivered(cls, header: int, body: bytes, manual_ack: bool) -> list[mqtt.MQTTMessage]:
    got: list[mqtt.MQTTMessage] = []
    c = cls(CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    c.on_message = lambda client, userdata, msg: got.append(msg)
    c._in_packet = {"command": header, "have_remaining": 1, "remaining_count": [], "remaining_mult": 1,
                    "remaining_length": len(body), "packet": bytearray(body), "to_process": 0, "pos": 0}
    c._handle_publish()
    return got


def deliver(cls, header: int, body: bytes, manual_ack: bool) -> mqtt.MQTTMessage:
    got = delivered(cls, header, body, manual_ack)
    assert len(got) == 1
    return got[0]


def fields(m: mqtt.MQTTMessage) -> tuple:
    props = m.properties.json() if m.properties is not None else None
    return (m.topic, bytes(m.payload), type(m.payload), m.mid, m.qos, m.retain, m.dup, props)


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("dup", [False, True])
@pytest.mark.parametrize("props", [b"\x00", "user"])
@pytest.mark.parametrize("manual_ack", [True, False])
@pytest.mark.parametrize("payload", [b'{"v":1}', b""])
def test_every_publish_reaches_on_message_as_paho_itself_decodes_it(qos, retain, dup, props, manual_ack, payload):
    props_bytes = user_property() if props == "user" else props
    header = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup and qos else 0)
    body = publish_body(b"campus/v1/cf-000000000001/telemetry", 4242 if qos else None, payload, props_bytes)
    before = time.monotonic()
    ours = delivered(_IngestClient, header, body, manual_ack)
    theirs = delivered(mqtt.Client, header, body, manual_ack)
    assert [fields(m) for m in ours] == [fields(m) for m in theirs]
    assert len(ours) == (0 if qos == 2 else 1)      # QoS 2 reaches on_message at PUBREL
    assert all(before <= m.timestamp <= time.monotonic() for m in ours)


def test_the_shortcut_is_taken_for_what_nodes_send_and_nothing_else():
    body = publish_body(b"campus/v1/cf-000000000001/telemetry", 7, b"{}", b"\x00")
    assert deliver(_IngestClient, 0x32, body, True).info is None          # ours: no MQTTMessageInfo
    assert deliver(_IngestClient, 0x32, body, False).info is not None     # auto-ack: paho's path
    with_props = publish_body(b"campus/v1/cf-000000000001/telemetry", 7, b"{}", user_property())
    assert deliver(_IngestClient, 0x32, with_props, True).info is not None


def test_buffered_reads_and_batched_acks_against_mosquitto_lose_and_repeat_nothing(mosquitto):
    """A manual-ack client that acks everything in batches: the broker has nothing left
    to send again when it reconnects with its session."""
    n = 3000
    got: list[int] = []
    lock = threading.Lock()
    cid = f"fastio-{uuid.uuid4().hex[:6]}"

    def connect() -> _IngestClient:
        c = _IngestClient(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5, manual_ack=True)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 60
        props.ReceiveMaximum = 700
        c.on_message = lambda client, userdata, msg: (lock.acquire(), got.append(msg), lock.release())
        c.connect(mosquitto.host, mosquitto.port, clean_start=False, properties=props)
        return c

    c = connect()
    c.subscribe("fastio/#", qos=1)
    c.loop_start()
    time.sleep(0.3)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{cid}-pub")
    pub.max_inflight_messages_set(0)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    infos = [pub.publish(f"fastio/{i % 7}", b"x" * (i % 300), qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(10)
    deadline = time.monotonic() + 30
    acked = 0
    while acked < n and time.monotonic() < deadline:
        with lock:
            batch, got[:] = list(got), []
        c.ack_many([m.mid for m in batch])
        acked += len(batch)
        time.sleep(0.01)
    assert acked == n
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()
    # Reconnect with the session: everything was acked, so nothing comes again.
    c = connect()
    c.loop_start()
    time.sleep(1.5)
    c.disconnect()
    c.loop_stop()
    pub.disconnect()
    pub.loop_stop()
    assert got == []
