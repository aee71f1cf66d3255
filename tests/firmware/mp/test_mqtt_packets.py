"""MQTT 3.1.1 link of firmware/mqtt.py, byte for byte against the OASIS standard.

A fake socket stands in only to record what the link writes and to serve what a broker
would send (recv() chunks); the network path itself is covered end to end against a real
Mosquitto."""
import gc

import mqtt
from mqtt import WILL, Link, _packet, encode_connect

DEV = "cf-a1b2c3d4e5f6"
CFG = {"device_id": DEV, "mqtt": {"host": "broker.invalid", "port": 1883, "user": DEV, "password": "s3cret"}}


class RecordingSocket:
    """Records every send(); serves queued chunks to recv()."""

    def __init__(self, chunks=()):
        self.sent = bytearray()
        self.chunks = list(chunks)
        self.closed = False

    def send(self, buf):
        self.sent.extend(bytes(buf))
        return len(buf)

    def recv(self, n):
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        assert len(chunk) <= n
        return chunk

    def settimeout(self, s):
        pass

    def connect(self, addr):
        pass

    def close(self):
        self.closed = True


class ChunkPoller:
    """poll(0) is readable while the socket still has chunks queued."""

    def __init__(self, sock=None):
        self.sock = sock

    def register(self, sock, mask):
        self.sock = sock

    def poll(self, timeout_ms):
        return [(self.sock, 1)] if self.sock.chunks else []


class FakeNetwork:
    """Stands in for the socket and select modules inside mqtt.py: the next socket made
    is `sock`."""
    SOCK_STREAM = 1
    POLLIN = 1

    def __init__(self, sock):
        self.sock = sock

    def getaddrinfo(self, host, port, af, kind):
        return [(2, kind, 0, "", ("127.0.0.1", port))]

    def socket(self, af, kind):
        return self.sock

    def poll(self):
        return ChunkPoller()


class Hw:
    up = True

    def network_up(self):
        return self.up


class Node:
    """Records what the link tells the node."""

    def __init__(self):
        self.events = []

    def on_link(self, up):
        self.events.append(("up" if up else "down",))

    def on_command(self, payload):
        self.events.append(("cmd", payload))

    def on_puback(self, pid):
        self.events.append(("puback", pid))


def _link(chunks=()):
    """A link that is up on a recording socket (no CONNECT), with a node that records."""
    link = Link(CFG, Hw(), Node())
    link.sock = RecordingSocket(chunks)
    link.poller = ChunkPoller(link.sock)
    return link


def _eq(got, want):
    assert got == want, "got %r want %r" % (bytes(got), bytes(want))


def _connect(chunks):
    """link.connect() against a socket that serves chunks; the link and its socket."""
    sock = RecordingSocket(chunks)
    fake = FakeNetwork(sock)
    saved = mqtt.socket, mqtt.select
    mqtt.socket = mqtt.select = fake
    try:
        link = Link(CFG, Hw(), Node())
        try:
            link.connect()
        except OSError as e:
            return link, sock, e
        return link, sock, None
    finally:
        mqtt.socket, mqtt.select = saved


# --- 2.2.3 Remaining Length ----------------------------------------------------------

def test_remaining_length_boundaries_match_spec_table_2_4():
    # Table 2.4: the largest value of each byte count and the smallest of the next (the
    # node's packets stay far below 2 MB, the first 4-byte length).
    body = memoryview(bytes(16384))
    for n, want in ((0, b"\x30\x00"), (127, b"\x30\x7f"), (128, b"\x30\x80\x01"),
                    (16383, b"\x30\xff\x7f"), (16384, b"\x30\x80\x80\x01")):
        gc.collect()
        pkt = _packet(0x30, body[:n])
        _eq(pkt[:len(want)], want)
        assert len(pkt) == len(want) + n, (n, len(pkt))
        pkt = None


def test_packet_concatenates_its_parts_after_the_header():
    _eq(_packet(0x82, b"\x00\x0a", b"\x00\x03a/b", b"\x01"), b"\x82\x08\x00\x0a\x00\x03a/b\x01")


# --- 3.1 CONNECT ---------------------------------------------------------------------

def test_connect_as_protocol_md_retained_will_no_clean_session():
    # PROTOCOL.md: clean session false, keepalive 60, will QoS 1 retained, user+password.
    # Flags: user 0x80 | password 0x40 | will retain 0x20 | will QoS1 0x08 | will 0x04.
    will_topic = "campus/v1/" + DEV + "/status"
    will_msg = b'{"v":1,"online":false}'
    assert WILL == will_msg
    pkt = encode_connect(DEV, DEV, "s3cret", will_topic)
    body = (b"\x00\x04MQTT\x04\xec\x00\x3c"
            + b"\x00\x0f" + DEV.encode()
            + bytes((0, len(will_topic))) + will_topic.encode()
            + bytes((0, len(will_msg))) + will_msg
            + b"\x00\x0f" + DEV.encode()
            + b"\x00\x06s3cret")
    _eq(pkt, b"\x10" + bytes((len(body),)) + body)


def _connect_packet(flags, tail=b""):
    body = b"\x00\x04MQTT\x04" + bytes((flags,)) + b"\x00\x3c\x00\x01c\x00\x01t\x00\x16" + WILL + tail
    return b"\x10" + bytes((len(body),)) + body


def test_connect_user_without_password_sets_only_user_flag():
    _eq(encode_connect("c", "u", None, "t"), _connect_packet(0xAC, b"\x00\x01u"))


def test_connect_drops_password_without_user_name():
    # 3.1.2.9: if the User Name Flag is 0, the Password Flag MUST be 0.
    _eq(encode_connect("c", None, "p", "t"), _connect_packet(0x2C))


def test_connect_sends_connect_then_subscribes_to_cmd_qos1():
    # CONNACK: session present 0, return code 0 (3.2.2.3).
    link, sock, err = _connect([b"\x20\x02\x00\x00"])
    assert err is None and link.up(), err
    connect = encode_connect(DEV, DEV, "s3cret", "campus/v1/%s/status" % DEV)
    _eq(sock.sent[:len(connect)], connect)
    # 3.8: SUBSCRIBE 0x82, packet id 1, topic filter, requested QoS 1.
    topic = ("campus/v1/%s/cmd" % DEV).encode()
    _eq(sock.sent[len(connect):], b"\x82" + bytes((5 + len(topic), 0, 1, 0, len(topic))) + topic + b"\x01")


def test_refused_connack_raises_and_leaves_the_link_down():
    for connack in (b"\x20\x02\x00\x05", b"\x30\x02\x00\x00", b""):  # not authorized; not a CONNACK; closed
        link, sock, err = _connect([connack] if connack else [])
        assert isinstance(err, OSError) and not link.up() and sock.closed, (connack, err)


def test_service_connects_with_backoff_and_reports_up_and_down():
    sock = RecordingSocket([b"\x20\x02\x00\x00"])
    saved = mqtt.socket, mqtt.select
    mqtt.socket = mqtt.select = FakeNetwork(sock)
    try:
        link = Link(CFG, Hw(), Node())
        link.service()
        assert link.up() and link.node.events == [("up",)], link.node.events
        link.hw.up = False      # the network goes away
        link.service()
        assert not link.up() and link.node.events[-1] == ("down",)
        assert link.failures == 1 and sock.closed
        link.hw.up = True
        link.service()          # too early: the backoff (at least 0.5 s) has not passed
        assert not link.up()
    finally:
        mqtt.socket, mqtt.select = saved


# --- 3.3 PUBLISH ------------------------------------------------------------------------

def test_publish_is_qos1_with_packet_id_after_topic():
    # 3.3.1: QoS 1 = 0x02 in the first byte; 3.3.2.2: the packet identifier follows the
    # topic name only when QoS > 0.
    link = _link()
    link.pid = 0x1233
    assert link.publish("telemetry", "hi") == 0x1234
    topic = ("campus/v1/%s/telemetry" % DEV).encode()
    _eq(link.sock.sent, b"\x32" + bytes((2 + len(topic) + 2 + 2, 0, len(topic))) + topic + b"\x12\x34hi")


def test_publish_retain_bit_and_bytes_payload():
    link = _link()
    assert link.publish("status", b"{}", True) == 1
    assert link.sock.sent[0] == 0x33  # 3.3.1: RETAIN = bit 0


def test_packet_ids_are_never_zero_and_wrap():
    # 2.3.1: packet identifiers are non-zero 16-bit values.
    link = _link()
    assert link.publish("t", "") == 1
    link.pid = 65534
    assert link.publish("t", "") == 65535
    assert link.publish("t", "") == 1


def test_publish_while_down_returns_none():
    link = _link()
    link.close()
    assert link.publish("telemetry", "x") is None


def test_graceful_close_says_offline_and_disconnects():
    link = _link()
    sock = link.sock
    link.close(graceful=True)
    topic = ("campus/v1/%s/status" % DEV).encode()
    _eq(sock.sent, b"\x33" + bytes((2 + len(topic) + 2 + len(WILL), 0, len(topic))) + topic
        + b"\x00\x01" + WILL + b"\xe0\x00")
    assert sock.closed and not link.up()


# --- incoming packets ------------------------------------------------------------------

def test_partial_puback_waits_for_rest_then_dispatches_pid():
    link = _link()
    link.rx[:] = b"\x40"
    link.poll()
    link.rx.extend(b"\x02\x00")
    link.poll()
    assert link.node.events == []
    link.rx.extend(b"\x07")
    link.poll()
    assert link.node.events == [("puback", 7)], link.node.events
    assert len(link.rx) == 0


def test_partial_multibyte_remaining_length_waits():
    # A 130-byte body: remaining length 0x82 0x01; only its first byte has arrived.
    link = _link()
    link.rx[:] = b"\x30\x82"
    assert link._take() == 0
    link.rx.extend(b"\x01" + b"\x00\x01t" + b"p" * 126)
    assert link._take() == 0  # one byte short
    link.rx.extend(b"p")
    assert link._take() == 3 + 130


def test_several_packets_in_one_buffer_dispatch_in_order_and_keep_the_tail():
    link = _link()
    link.rx[:] = (b"\x40\x02\x00\x01"
                  b"\x30\x08\x00\x04/cmdok"      # QoS 0 PUBLISH "/cmd" -> "ok"
                  b"\x40\x02\x01\x00"
                  b"\x40\x02\x00")               # start of a fourth packet
    link.poll()
    assert link.node.events == [("puback", 1), ("cmd", b"ok"), ("puback", 256)], link.node.events
    _eq(link.rx, b"\x40\x02\x00")
    # QoS 0 is never acknowledged (3.3.4).
    _eq(link.sock.sent, b"")


def test_incoming_qos1_command_reaches_the_node_and_is_acked():
    link = _link()
    topic = ("campus/v1/%s/cmd" % DEV).encode()
    payload = b'{"v":1,"id":"c-1","op":"sync"}'
    body = bytes((0, len(topic))) + topic + b"\xbe\xef" + payload
    link.rx[:] = b"\x32" + bytes((len(body),)) + body
    link.poll()
    assert link.node.events == [("cmd", payload)], link.node.events
    # 3.4: PUBACK = 0x40, remaining length 2, the PUBLISH's packet identifier.
    _eq(link.sock.sent, b"\x40\x02\xbe\xef")


def test_a_publish_on_another_topic_is_acked_but_not_a_command():
    link = _link()
    link.rx[:] = b"\x33\x06\x00\x01s\x00\x05{"  # retained, QoS 1, topic "s"
    link.poll()
    assert link.node.events == []
    _eq(link.sock.sent, b"\x40\x02\x00\x05")


def test_suback_failure_0x80_drops_the_link():
    # 3.9.3: return code 0x80 = failure.
    link = _link()
    link.rx[:] = b"\x90\x03\x00\x01\x80"
    try:
        link.poll()
    except OSError:
        assert not link.up()
    else:
        raise AssertionError("SUBACK 0x80 was accepted")


def test_suback_granted_qos1_is_accepted():
    link = _link()
    link.rx[:] = b"\x90\x03\x00\x01\x01"
    link.poll()
    assert link.up() and len(link.rx) == 0


def test_pingresp_clears_outstanding_ping():
    link = _link()
    link.ping_out = True
    link.rx[:] = b"\xd0\x00"
    link.poll()
    assert link.ping_out is False


def test_oversized_and_malformed_lengths_are_protocol_errors():
    # 16384 > the node's 4096-byte limit; five length bytes break 2.2.3 (max four).
    for raw in (b"\x30\x80\x80\x01", b"\x30\xff\xff\xff\xff\x01"):
        link = _link()
        link.rx[:] = raw
        try:
            link._take()
        except OSError:
            continue
        raise AssertionError("accepted %r" % raw)


def test_poll_reassembles_byte_by_byte_chunks_and_acks():
    # Through the real poll() loop: every byte of a QoS 1 PUBLISH and a PUBACK arrives
    # in its own recv() chunk.
    wire = b"\x32\x0a\x00\x04/cmd\x00\x2aok" + b"\x40\x02\x00\x09"
    link = _link([wire[i:i + 1] for i in range(len(wire))])
    link.poll()
    assert link.node.events == [("cmd", b"ok"), ("puback", 9)], link.node.events
    _eq(link.sock.sent, b"\x40\x02\x00\x2a")
    assert link.up()


def test_broker_closing_the_socket_is_link_loss():
    link = _link([b""])
    link.poller.poll = lambda ms: [(link.sock, 1)]  # readable, but recv() gives b""
    link.service()
    assert not link.up() and link.node.events == [("down",)]
