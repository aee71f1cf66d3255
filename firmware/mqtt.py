"""The node's MQTT link: an MQTT 3.1.1 client (CONNECT with will, QoS 1 PUBLISH/PUBACK,
SUBSCRIBE, keepalive, non-blocking poll) that reconnects with backoff, subscribes to the
node's `cmd` topic and tells the node when it comes up or goes down.

Section numbers in comments refer to the OASIS MQTT 3.1.1 standard (2014)."""
import select
import socket
import time

from micropython import const

from backoff import delay_ms

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

_KEEPALIVE_S = const(60)   # PROTOCOL.md
_TIMEOUT_S = const(5)      # socket timeout; also the wait for CONNACK
_MAX_PACKET = const(4096)  # larger incoming packets are a protocol error for a node
# PROTOCOL.md: the will is the offline status, QoS 1, retained; a graceful stop sends it too.
WILL = const(b'{"v":1,"online":false}')


def _str(s):
    # 1.5.3 UTF-8 string: 2-byte big-endian length prefix.
    if isinstance(s, str):
        s = s.encode()
    return bytes((len(s) >> 8, len(s) & 0xFF)) + s


def _packet(first, *parts):
    """One control packet in one buffer (one send, so Nagle never splits it): the first
    byte, 2.2.3 Remaining Length (7 bits a byte, high bit = more), then the parts."""
    n = 0
    for p in parts:
        n += len(p)
    out = bytearray(n + (2 if n < 0x80 else 3 if n < 0x4000 else 4 if n < 0x200000 else 5))
    out[0] = first
    i = 1
    while True:
        out[i] = n & 0x7F | (0x80 if n > 0x7F else 0)
        i += 1
        n >>= 7
        if not n:
            break
    for p in parts:
        out[i:i + len(p)] = p
        i += len(p)
    return out


def encode_connect(client_id, user, password, will_topic):
    """CONNECT as PROTOCOL.md has it: clean session off, keepalive 60 s, the will (QoS 1,
    retained) on will_topic, user name and password when given."""
    # 3.1.2.4-3.1.2.9 flags: will 0x04 | will QoS 1 0x08 | will retain 0x20, user 0x80,
    # password 0x40 (only with a user name, 3.1.2.9).
    flags = 0x2C
    body = _str(client_id) + _str(will_topic) + _str(WILL)
    if user is not None:
        flags |= 0x80
        body += _str(user)
        if password is not None:
            flags |= 0x40
            body += _str(password)
    # 3.1.2.1-3.1.2.10: protocol name "MQTT", level 4 (3.1.1), flags, keepalive.
    return _packet(_CONNECT, b"\x00\x04MQTT\x04", bytes((flags, 0, _KEEPALIVE_S)), body)


class Link:
    """up() says whether the broker is reachable; service() is called often from the node
    loop and never blocks longer than one connect attempt. The node gets on_link(up),
    on_command(payload) and on_puback(pid)."""

    def __init__(self, cfg, hw, node):
        self.device_id = cfg["device_id"]
        self.mqtt = m = cfg["mqtt"]
        self.prefix = "campus/v1/%s/" % self.device_id
        self.tls = None        # the TLS context, made at the first connect (m["tls"])
        self.error = None      # why the last connect failed (logged once per new reason)
        self.hw = hw
        self.node = node
        self.sock = None
        self.poller = None
        self.rx = bytearray()  # received, not yet handled (consumed in place: keeps its capacity)
        self.pid = 0
        self.failures = 0      # connect attempts failed in a row, for the backoff
        self.next_try = time.ticks_ms()
        self.last_tx = self.last_rx = self.next_try
        self.ping_out = False

    def up(self):
        return self.sock is not None

    def service(self):
        """Polls the link while it is up; otherwise connects when the backoff allows."""
        if self.sock is not None:
            if not self.hw.network_up():
                self._down(True)
                return
            try:
                self.poll()
            except OSError:
                self._down(True)
            return
        if time.ticks_diff(time.ticks_ms(), self.next_try) < 0:
            return
        try:
            if not self.hw.network_up():
                raise OSError("network down")
            self.connect()
        except OSError as e:
            self.close()
            why = str(e)
            if why != self.error:   # the node's log says why, once per new reason
                print("mqtt: cannot connect to %s port %d: %s" % (self.mqtt["host"], self.mqtt["port"], why))
                self.error = why
            self._down(False)
            return
        self.failures = 0
        if self.error is not None:
            print("mqtt: connected to %s port %d" % (self.mqtt["host"], self.mqtt["port"]))
            self.error = None
        self.node.on_link(True)

    def connect(self):
        """Opens the socket, completes CONNECT/CONNACK and subscribes to `cmd`. Raises
        OSError on a network failure or when the broker refuses."""
        self.close()
        m = self.mqtt
        ai = socket.getaddrinfo(m["host"], m["port"], 0, socket.SOCK_STREAM)[0]
        sock = socket.socket(ai[0], socket.SOCK_STREAM)  # ai[0]: AF_INET or AF_INET6
        try:
            sock.settimeout(_TIMEOUT_S)
            sock.connect(ai[-1])
            if m.get("tls"):
                try:
                    # Verifies the chain against the CA and the name against the
                    # certificate's subjectAltName (Mbed TLS matches IP addresses too).
                    sock = self._tls_context().wrap_socket(sock, server_hostname=m["host"])
                except OSError as e:
                    raise OSError("TLS: %s" % (e,))
                except ValueError as e:   # Mbed TLS reports a failed verification so
                    raise OSError("TLS: server certificate refused: %s" % str(e).strip())
            self.sock = sock
            rx = self.rx
            rx[:] = b""
            dev = self.device_id
            self._send(encode_connect(dev, m.get("user", dev), m.get("password"), self.prefix + "status"))
            deadline = time.ticks_add(time.ticks_ms(), _TIMEOUT_S * 1000)
            while True:
                n = self._take()
                if n:
                    break
                if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                    raise OSError("timeout waiting for broker")
                self._recv(64)
            # 3.2: CONNACK = 0x20, remaining length 2, session present, return code.
            if rx[0] != _CONNACK or n != 4:
                raise OSError("no CONNACK")
            if rx[3]:
                raise OSError("broker refused the connection: return code %d" % rx[3])
            rx[:4] = b""
            self.poller = select.poll()
            self.poller.register(sock, select.POLLIN)
            self.last_rx = time.ticks_ms()
            self.ping_out = False
            # 3.8: SUBSCRIBE to the node's cmd topic, QoS 1. Clean session is off, so
            # commands sent while the node was away arrive now.
            self.pid = pid = self.pid % 65535 + 1
            self._send(_packet(_SUBSCRIBE, bytes((pid >> 8, pid & 0xFF)), _str(self.prefix + "cmd"), b"\x01"))
        except Exception:
            self.sock = None
            try:
                sock.close()
            except Exception:
                pass
            raise

    def _tls_context(self):
        """The TLS client context (made once; tlsctx is imported only by a TLS node)."""
        if self.tls is None:
            import tlsctx
            self.tls = tlsctx.client_context(self.mqtt.get("ca"))
        return self.tls

    def publish(self, suffix, payload, retain=False):
        """QoS 1 PUBLISH (3.3) to the node's topic + suffix. Returns the packet id whose
        PUBACK reaches node.on_puback(), or None if the link is (now) down."""
        if self.sock is None:
            return None
        # 2.3.1: packet identifiers are non-zero 16-bit values.
        self.pid = pid = self.pid % 65535 + 1
        if isinstance(payload, str):
            payload = payload.encode()
        try:
            # 3.3.1: QoS 1 = 0x02, RETAIN = 0x01; 3.3.2: topic, then the packet id.
            self._send(_packet(0x33 if retain else 0x32, _str(self.prefix + suffix),
                               bytes((pid >> 8, pid & 0xFF)), payload))
        except OSError:
            self._down(True)
            return None
        return pid

    def close(self, graceful=False):
        if self.sock is not None and graceful:
            # A graceful stop says "offline" itself; the broker only sends the will for
            # an unexpected loss (3.1.2.5). Then DISCONNECT (3.14).
            if self.publish("status", WILL, True) is not None:
                try:
                    self._send(bytes((_DISCONNECT, 0)))
                except OSError:
                    pass
        if self.sock is not None:
            try:
                self.sock.close()
            except Exception:
                pass
        self.sock = None
        self.poller = None

    def poll(self):
        """Handles every packet already received, without blocking, and keeps the link
        alive. Raises OSError (after closing) when the link is found dead."""
        rx = self.rx
        try:
            while self.poller is not None and self.poller.poll(0):
                self._recv(128)
                if len(rx) > _MAX_PACKET + 5:
                    break
            while True:
                n = self._take()
                if not n:
                    break
                kind = rx[0] & 0xF0
                if kind == _PUBLISH:
                    self._on_publish(n)
                elif kind == _PUBACK:
                    self.node.on_puback(rx[n - 2] << 8 | rx[n - 1])
                elif kind == _PINGRESP:
                    self.ping_out = False
                elif kind == _SUBACK:
                    # 3.9.3: after the packet id, one return code a topic; 0x80 = failure.
                    for i in range(4, n):
                        if rx[i] == 0x80:
                            raise OSError("subscription refused")
                # other packet types are not expected by a QoS 1 client; ignore them
                if self.sock is None:
                    return  # the node closed the link from a callback
                rx[:n] = b""
            # 3.1.2.10: the client must send something within keepalive; the broker
            # drops us at 1.5 x keepalive. Ping at half the interval and give up when
            # nothing at all has been received for one full interval after a ping.
            now = time.ticks_ms()
            if self.ping_out and time.ticks_diff(now, self.last_rx) > _KEEPALIVE_S * 1000:
                raise OSError("keepalive timeout")
            if not self.ping_out and time.ticks_diff(now, self.last_tx) >= _KEEPALIVE_S * 500:
                self._send(bytes((_PINGREQ, 0)))
                self.ping_out = True
        except Exception:
            self.close()
            raise

    # --- internals -------------------------------------------------------------------
    def _on_publish(self, n):
        # 3.3: the packet's first n bytes of rx; the body follows the last length byte.
        rx = self.rx
        first = rx[0]
        i = 2
        while rx[i - 1] & 0x80:
            i += 1
        end = i + 2 + (rx[i] << 8 | rx[i + 1])  # 3.3.2.1: topic name, length first
        pid = 0
        pos = end
        if first & 0x06:  # QoS 1 or 2: a packet id follows the topic (3.3.2.2)
            pid = rx[end] << 8 | rx[end + 1]
            pos += 2
        if rx[end - 4:end] == b"/cmd":
            self.node.on_command(bytes(rx[pos:n]))
        if first & 0x06 == 0x02 and self.sock is not None:
            self._send(bytes((_PUBACK, 2, pid >> 8, pid & 0xFF)))

    def _take(self):
        """Length of the whole packet at the start of rx, or 0 while it is incomplete.
        Raises OSError for a malformed or oversized one."""
        rx = self.rx
        n = 0
        shift = 0
        i = 1
        while True:
            if i >= len(rx):
                return 0
            b = rx[i]
            n |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise OSError("bad remaining length")
        if n > _MAX_PACKET:
            raise OSError("packet too large")
        return i + n if len(rx) >= i + n else 0

    def _recv(self, size):
        chunk = self.sock.recv(size)  # type: ignore[union-attr]  # only called while up
        if not chunk:
            raise OSError("connection closed by broker")
        self.rx.extend(chunk)
        self.last_rx = time.ticks_ms()

    def _send(self, buf):
        sock = self.sock
        if sock is None:
            raise OSError("not connected")
        mv = memoryview(buf)
        sent = 0
        while sent < len(buf):
            n = sock.send(mv[sent:])
            if n is None or n <= 0:
                raise OSError("send failed")
            sent += n
        self.last_tx = time.ticks_ms()

    def _down(self, lost):
        """The link was lost (lost=True) or a connect attempt failed: try again after
        a jittered backoff, 1 s doubling to 120 s."""
        if lost:
            self.close()
            self.node.on_link(False)
        self.next_try = time.ticks_add(time.ticks_ms(), delay_ms(self.failures, 1000, 120000))
        self.failures += 1
