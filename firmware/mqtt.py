"""MQTT 3.1.1 client for MicroPython: CONNECT with will, QoS 1 PUBLISH with PUBACK
tracking, SUBSCRIBE, keepalive; non-blocking poll so the node loop never stalls.

Section numbers in comments refer to the OASIS MQTT 3.1.1 standard (2014). Reconnect
policy lives in link.py; this module only speaks the protocol over one socket.
"""
import socket
import select
import time
from micropython import const

# Control packet types, first byte with the flags that 3.1.1 fixes (2.2.1, 2.2.2).
_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)  # 3.8.1: bits 3..0 must be 0010
_SUBACK = const(0x90)
_PINGREQ = const(0xC0)
_PINGRESP = const(0xD0)
_DISCONNECT = const(0xE0)

_MAX_PACKET = const(4096)  # larger incoming packets are a protocol error for a node

CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class MQTTError(Exception):
    pass


def _encode_len(n):
    # 2.2.3 Remaining Length: 7 bits per byte, high bit = continuation.
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return out


def _str(s):
    # 1.5.3 UTF-8 string: 2-byte big-endian length prefix.
    if isinstance(s, str):
        s = s.encode()
    return bytes((len(s) >> 8, len(s) & 0xFF)) + s


def encode_connect(client_id, user, password, keepalive_s, clean_session, will):
    flags = 0x02 if clean_session else 0
    payload = _str(client_id)
    if will:
        topic, msg, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _str(topic) + _str(msg)
    if user is not None:
        flags |= 0x80
        payload += _str(user)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
    # 3.1.2: protocol name "MQTT", level 4 (3.1.1), connect flags, keepalive.
    var = b"\x00\x04MQTT\x04" + bytes((flags, keepalive_s >> 8, keepalive_s & 0xFF))
    body = var + payload
    return bytes((_CONNECT,)) + _encode_len(len(body)) + body


def encode_publish(topic, payload, qos, retain, dup, pid):
    if isinstance(payload, str):
        payload = payload.encode()
    first = _PUBLISH | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    head = _str(topic)
    if qos:
        head += bytes((pid >> 8, pid & 0xFF))
    return bytes((first,)) + _encode_len(len(head) + len(payload)) + head + payload


def encode_subscribe(topic, qos, pid):
    body = bytes((pid >> 8, pid & 0xFF)) + _str(topic) + bytes((qos,))
    return bytes((_SUBSCRIBE,)) + _encode_len(len(body)) + body


class MQTTClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive_s=60, clean_session=False, ssl_context=None, timeout_s=5):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive_s = keepalive_s
        self.clean_session = clean_session
        self.ssl_context = ssl_context
        self.timeout_s = timeout_s
        self.will = None
        self.on_message = None  # fn(topic: str, payload: bytes, retained: bool)
        self.on_puback = None   # fn(pid: int)
        self._sock = None
        self._poller = None
        self._rx = bytearray()
        self._pid = 0
        self._last_tx_ms = time.ticks_ms()
        self._last_rx_ms = time.ticks_ms()
        self._ping_out = False

    def set_will(self, topic, payload, qos=1, retain=True):
        self.will = (topic, payload, qos, retain)

    def is_connected(self):
        return self._sock is not None

    def next_pid(self):
        # 2.3.1: packet identifiers are non-zero 16-bit values.
        self._pid = self._pid % 65535 + 1
        return self._pid

    def connect(self):
        """Open the socket and complete CONNECT/CONNACK. Returns session-present.
        Raises OSError on network failure, MQTTError when the broker refuses."""
        self.close()
        ai = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0]
        addr = ai[-1]
        sock = socket.socket(ai[0], socket.SOCK_STREAM)  # ai[0]: AF_INET or AF_INET6
        try:
            sock.settimeout(self.timeout_s)
            sock.connect(addr)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            self._sock = sock
            self._rx = bytearray()
            self._write(encode_connect(self.client_id, self.user, self.password,
                                       self.keepalive_s, self.clean_session, self.will))
            pkt = self._read_packet_blocking()
            if pkt is None or pkt[0] != _CONNACK or len(pkt[1]) != 2:
                raise MQTTError("no CONNACK")
            rc = pkt[1][1]
            if rc:
                raise MQTTError("refused: " + CONNACK_REASONS.get(rc, str(rc)))
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN)
            now = time.ticks_ms()
            self._last_rx_ms = now
            self._ping_out = False
            return bool(pkt[1][0] & 1)
        except Exception:
            self._sock = None
            try:
                sock.close()
            except Exception:
                pass
            raise

    def publish(self, topic, payload, qos=1, retain=False, dup=False, pid=None):
        """Send PUBLISH; for QoS 1 returns the packet id whose PUBACK reaches on_puback."""
        if qos and pid is None:
            pid = self.next_pid()
        self._write(encode_publish(topic, payload, qos, retain, dup, pid or 0))
        return pid or 0

    def subscribe(self, topic, qos=1):
        pid = self.next_pid()
        self._write(encode_subscribe(topic, qos, pid))
        return pid

    def poll(self):
        """Handle every packet already received, without blocking, and keep the link
        alive. Raises OSError (after closing) when the link is found dead."""
        sock = self._sock
        poller = self._poller
        if sock is None or poller is None:
            raise OSError("not connected")
        try:
            while poller.poll(0):
                chunk = sock.recv(512)
                if not chunk:
                    raise OSError("connection closed by broker")
                self._rx.extend(chunk)
                self._last_rx_ms = time.ticks_ms()
                if len(self._rx) > _MAX_PACKET + 5:
                    break
            while True:
                pkt = self._take_packet()
                if pkt is None:
                    break
                self._dispatch(pkt[0], pkt[1])
            self._keepalive()
        except Exception:
            self.close()
            raise

    def disconnect(self):
        if self._sock is not None:
            try:
                self._write(bytes((_DISCONNECT, 0)))
            except Exception:
                pass
        self.close()

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except Exception:
                pass
        self._sock = None
        self._poller = None

    # --- internals -------------------------------------------------------------
    def _keepalive(self):
        # 3.1.2.10: the client must send something within keepalive; the broker
        # drops us at 1.5 x keepalive. Ping at half the interval and give up when
        # nothing at all has been received for one full interval after a ping.
        if not self.keepalive_s:
            return
        now = time.ticks_ms()
        ka_ms = self.keepalive_s * 1000
        if self._ping_out and time.ticks_diff(now, self._last_rx_ms) > ka_ms:
            raise OSError("keepalive timeout")
        if time.ticks_diff(now, self._last_tx_ms) >= ka_ms // 2 and not self._ping_out:
            self._write(bytes((_PINGREQ, 0)))
            self._ping_out = True

    def _dispatch(self, first, body):
        kind = first & 0xF0
        if kind == _PUBLISH:
            qos = (first >> 1) & 3
            tlen = (body[0] << 8) | body[1]
            topic = str(bytes(body[2:2 + tlen]), "utf-8")
            pos = 2 + tlen
            pid = 0
            if qos:
                pid = (body[pos] << 8) | body[pos + 1]
                pos += 2
            if self.on_message:
                self.on_message(topic, bytes(body[pos:]), bool(first & 1))
            if qos == 1:
                self._write(bytes((_PUBACK, 2, pid >> 8, pid & 0xFF)))
        elif kind == _PUBACK:
            if self.on_puback:
                self.on_puback((body[0] << 8) | body[1])
        elif kind == _PINGRESP:
            self._ping_out = False
        elif kind == _SUBACK:
            # 3.9.3: return code 0x80 = failure.
            for rc in body[2:]:
                if rc == 0x80:
                    raise MQTTError("subscription refused")
        # other packet types are not expected by a QoS 0/1 client; ignore them

    def _take_packet(self):
        rx = self._rx
        if len(rx) < 2:
            return None
        n = 0
        shift = 0
        i = 1
        while True:
            if i >= len(rx):
                return None
            b = rx[i]
            n |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("bad remaining length")
        if n > _MAX_PACKET:
            raise MQTTError("packet too large")
        if len(rx) < i + n:
            return None
        first = rx[0]
        body = bytes(rx[i:i + n])
        self._rx = rx[i + n:]
        return first, body

    def _read_packet_blocking(self):
        deadline = time.ticks_add(time.ticks_ms(), self.timeout_s * 1000)
        while True:
            pkt = self._take_packet()
            if pkt is not None:
                return pkt
            if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                raise OSError("timeout waiting for broker")
            sock = self._sock
            if sock is None:
                raise OSError("not connected")
            chunk = sock.recv(64)
            if not chunk:
                raise OSError("connection closed by broker")
            self._rx.extend(chunk)

    def _write(self, buf):
        sock = self._sock
        if sock is None:
            raise OSError("not connected")  # an OSError, so Link treats it as link loss
        mv = memoryview(buf)
        sent = 0
        while sent < len(buf):
            n = sock.send(mv[sent:])
            if n is None or n <= 0:
                raise OSError("send failed")
            sent += n
        self._last_tx_ms = time.ticks_ms()
