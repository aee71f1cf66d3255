"""MQTT 3.1.1 packet codec of firmware/mqtt.py, byte for byte against the OASIS standard.

A fake socket stands in only to record what the client writes back (PUBACK); the
network path itself is covered end to end against a real Mosquitto."""
from mqtt import (MQTTClient, MQTTError, _encode_len, encode_connect,
                  encode_publish, encode_subscribe)


class RecordingSocket:
    """Records every send(); serves queued chunks to recv() for the poll() test."""

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

    def close(self):
        self.closed = True


class ChunkPoller:
    """poll(0) is readable while the socket still has chunks queued."""

    def __init__(self, sock):
        self.sock = sock

    def poll(self, timeout_ms):
        return [(self.sock, 1)] if self.sock.chunks else []


def _client(**kw):
    # keepalive 0 so poll() never adds a PINGREQ to the recorded bytes (3.1.2.10).
    c = MQTTClient("cf-a1b2c3d4e5f6", "broker.invalid", keepalive_s=0, **kw)
    c._sock = RecordingSocket()
    return c


def _drain(client):
    """What poll() does with the receive buffer: take every whole packet, dispatch it."""
    n = 0
    while True:
        pkt = client._take_packet()
        if pkt is None:
            return n
        client._dispatch(pkt[0], pkt[1])
        n += 1


def _eq(got, want):
    assert got == want, "got %r want %r" % (bytes(got), bytes(want))


# --- 2.2.3 Remaining Length ----------------------------------------------------------

def test_remaining_length_boundaries_match_spec_table_2_4():
    # Table 2.4: the largest value of each byte count and the smallest of the next.
    cases = (
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2097151, b"\xff\xff\x7f"),
        (2097152, b"\x80\x80\x80\x01"),
        (268435455, b"\xff\xff\xff\x7f"),
    )
    for n, want in cases:
        _eq(_encode_len(n), want)


def test_publish_header_carries_remaining_length_at_boundaries():
    # Topic "t" = 3 bytes of topic field; payload sized so the remaining length is
    # exactly each boundary value.
    for rl, want in ((127, b"\x30\x7f"), (128, b"\x30\x80\x01"),
                     (16383, b"\x30\xff\x7f"), (16384, b"\x30\x80\x80\x01")):
        pkt = encode_publish("t", b"x" * (rl - 3), 0, False, False, 0)
        _eq(pkt[:len(want)], want)
        assert len(pkt) == len(want) + rl, (rl, len(pkt))
        _eq(pkt[len(want):len(want) + 3], b"\x00\x01t")


# --- 3.1 CONNECT ---------------------------------------------------------------------

def test_connect_with_will_user_password_clean_matches_spec_example_flags():
    # 3.1.2.11 non-normative example: user + password + will QoS 1 + will flag + clean
    # session = connect flags 0xCE, keepalive 10 = 0x00 0x0A.
    pkt = encode_connect("cid", "u", "p", 10, True, ("t", "m", 1, False))
    want = (b"\x10\x1b"                       # CONNECT, remaining length 27
            b"\x00\x04MQTT\x04\xce\x00\x0a"   # 3.1.2.1-3.1.2.10
            b"\x00\x03cid"                    # 3.1.3.1 client identifier
            b"\x00\x01t\x00\x01m"             # 3.1.3.2/3 will topic, will message
            b"\x00\x01u\x00\x01p")            # 3.1.3.4/5 user name, password
    _eq(pkt, want)


def test_connect_as_protocol_md_node_retained_will_no_clean_session():
    # PROTOCOL.md: clean session false, keepalive 60, will QoS 1 retained, user+password.
    # Flags: user 0x80 | password 0x40 | will retain 0x20 | will QoS1 0x08 | will 0x04.
    dev = "cf-a1b2c3d4e5f6"
    will_topic = "campus/v1/" + dev + "/status"
    will_msg = b'{"v":1,"online":false}'
    pkt = encode_connect(dev, dev, "s3cret", 60, False, (will_topic, will_msg, 1, True))
    body = (b"\x00\x04MQTT\x04\xec\x00\x3c"
            + b"\x00\x0f" + dev.encode()
            + bytes((0, len(will_topic))) + will_topic.encode()
            + bytes((0, len(will_msg))) + will_msg
            + b"\x00\x0f" + dev.encode()
            + b"\x00\x06s3cret")
    _eq(pkt, b"\x10" + bytes((len(body),)) + body)


def test_connect_minimal_clean_session_only():
    # No will, no credentials: flags 0x02; an empty client id is still a 2-byte length.
    _eq(encode_connect("", None, None, 60, True, None),
        b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")


def test_connect_user_without_password_sets_only_user_flag():
    _eq(encode_connect("c", "u", None, 0, False, None),
        b"\x10\x10\x00\x04MQTT\x04\x80\x00\x00\x00\x01c\x00\x01u")


def test_connect_drops_password_without_user_name():
    # 3.1.2.9: if the User Name Flag is 0, the Password Flag MUST be 0.
    _eq(encode_connect("c", None, "p", 0, False, None),
        b"\x10\x0d\x00\x04MQTT\x04\x00\x00\x00\x00\x01c")


# --- 3.3 PUBLISH / 3.8 SUBSCRIBE -------------------------------------------------------

def test_publish_qos0_has_no_packet_id():
    _eq(encode_publish("a/b", b"hi", 0, False, False, 0),
        b"\x30\x07\x00\x03a/b" + b"hi")


def test_publish_qos1_carries_packet_id_after_topic():
    # 3.3.2.2: packet identifier follows the topic name only when QoS > 0.
    _eq(encode_publish("a/b", "hi", 1, False, False, 0x1234),
        b"\x32\x09\x00\x03a/b\x12\x34hi")


def test_publish_flags_retain_and_dup_bits():
    # 3.3.1: DUP = bit 3, QoS = bits 2-1, RETAIN = bit 0.
    assert encode_publish("t", b"", 1, True, False, 1)[0] == 0x33
    assert encode_publish("t", b"", 1, False, True, 1)[0] == 0x3A
    assert encode_publish("t", b"", 1, True, True, 1)[0] == 0x3B
    assert encode_publish("t", b"", 0, True, False, 0)[0] == 0x31


def test_subscribe_matches_spec_layout():
    # 3.8.1: fixed header 0x82; packet id 10, one filter "a/b" with requested QoS 1.
    _eq(encode_subscribe("a/b", 1, 10), b"\x82\x08\x00\x0a\x00\x03a/b\x01")


def test_next_pid_is_never_zero_and_wraps():
    # 2.3.1: packet identifiers are non-zero 16-bit values.
    c = _client()
    assert c.next_pid() == 1
    c._pid = 65534
    assert c.next_pid() == 65535
    assert c.next_pid() == 1


# --- incoming packets ------------------------------------------------------------------

def test_partial_puback_waits_for_rest_then_dispatches_pid():
    c = _client()
    acked = []
    c.on_puback = acked.append
    c._rx = bytearray(b"\x40")
    assert c._take_packet() is None
    c._rx.extend(b"\x02\x00")
    assert c._take_packet() is None and acked == []
    c._rx.extend(b"\x07")
    assert _drain(c) == 1
    assert acked == [7], acked
    assert len(c._rx) == 0


def test_partial_multibyte_remaining_length_waits():
    # A 130-byte body: remaining length 0x82 0x01; only its first byte has arrived.
    c = _client()
    c._rx = bytearray(b"\x30\x82")
    assert c._take_packet() is None
    c._rx.extend(b"\x01" + b"\x00\x01t" + b"p" * 126)
    assert c._take_packet() is None  # one byte short
    c._rx.extend(b"p")
    first, body = c._take_packet()
    assert first == 0x30 and len(body) == 130


def test_several_packets_in_one_buffer_dispatch_in_order_and_keep_the_tail():
    c = _client()
    events = []
    c.on_puback = lambda pid: events.append(("puback", pid))
    c.on_message = lambda t, p, r: events.append(("msg", t, p, r))
    c._rx = bytearray(b"\x40\x02\x00\x01"
                      b"\x30\x06\x00\x01xdat"       # QoS 0 PUBLISH "x" -> "dat"
                      b"\x40\x02\x01\x00"
                      b"\x40\x02\x00")               # start of a fourth packet
    assert _drain(c) == 3
    assert events == [("puback", 1), ("msg", "x", b"dat", False), ("puback", 256)], events
    _eq(c._rx, b"\x40\x02\x00")
    # QoS 0 is never acknowledged (3.3.4).
    _eq(c._sock.sent, b"")


def test_incoming_qos1_publish_calls_on_message_and_writes_puback():
    c = _client()
    got = []
    c.on_message = lambda t, p, r: got.append((t, p, r))
    topic = b"campus/v1/cf-a1b2c3d4e5f6/cmd"
    payload = b'{"v":1,"id":"c-1","op":"sync"}'
    body = bytes((0, len(topic))) + topic + b"\xbe\xef" + payload
    c._rx = bytearray(b"\x32" + bytes((len(body),)) + body)
    _drain(c)
    assert got == [(topic.decode(), payload, False)], got
    # 3.4: PUBACK = 0x40, remaining length 2, the PUBLISH's packet identifier.
    _eq(c._sock.sent, b"\x40\x02\xbe\xef")


def test_incoming_retained_publish_reports_retained():
    c = _client()
    got = []
    c.on_message = lambda t, p, r: got.append((t, p, r))
    c._rx = bytearray(b"\x33\x06\x00\x01s\x00\x05{")
    _drain(c)
    assert got == [("s", b"{", True)], got
    _eq(c._sock.sent, b"\x40\x02\x00\x05")


def test_suback_failure_0x80_raises_mqtt_error():
    # 3.9.3: return code 0x80 = failure.
    c = _client()
    c._rx = bytearray(b"\x90\x03\x00\x01\x80")
    try:
        _drain(c)
    except MQTTError:
        pass
    else:
        raise AssertionError("SUBACK 0x80 was accepted")


def test_suback_granted_qos1_is_accepted():
    c = _client()
    c._rx = bytearray(b"\x90\x03\x00\x01\x01")
    assert _drain(c) == 1


def test_pingresp_clears_outstanding_ping():
    c = _client()
    c._ping_out = True
    c._rx = bytearray(b"\xd0\x00")
    _drain(c)
    assert c._ping_out is False


def test_oversized_and_malformed_lengths_are_protocol_errors():
    # 16384 > the node's 4096-byte limit; five length bytes break 2.2.3 (max four).
    for raw in (b"\x30\x80\x80\x01", b"\x30\xff\xff\xff\xff\x01"):
        c = _client()
        c._rx = bytearray(raw)
        try:
            c._take_packet()
        except MQTTError:
            continue
        raise AssertionError("accepted %r" % raw)


def test_poll_reassembles_byte_by_byte_chunks_and_acks():
    # Through the real poll() loop: every byte of a QoS 1 PUBLISH and a PUBACK arrives
    # in its own recv() chunk.
    c = _client()
    wire = b"\x32\x07\x00\x01c\x00\x2aok" + b"\x40\x02\x00\x09"
    sock = RecordingSocket([wire[i:i + 1] for i in range(len(wire))])
    c._sock = sock
    c._poller = ChunkPoller(sock)
    got = []
    acked = []
    c.on_message = lambda t, p, r: got.append((t, p, r))
    c.on_puback = acked.append
    c.poll()
    assert got == [("c", b"ok", False)], got
    assert acked == [9], acked
    _eq(sock.sent, b"\x40\x02\x00\x2a")
    assert c.is_connected()
