"""The node's MQTT link: connects with backoff, announces itself (birth status,
retained) with a will, subscribes to its command topic, and reports up/down."""
import time
from mqtt import MQTTClient, MQTTError
from backoff import Backoff

WILL = b'{"v":1,"online":false}'


def tls_context(ca_path):
    """TLS client context that verifies the broker against the CA file from config."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # verify_mode is in MicroPython's ssl docs; the esp32 stubs lack it.
    ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
    ctx.load_verify_locations(cafile=ca_path)
    return ctx


class Link:
    def __init__(self, cfg, hw, on_up, on_down, on_message, on_puback):
        m = cfg["mqtt"]
        self.device_id = cfg["device_id"]
        self.prefix = "campus/v1/%s/" % self.device_id
        ssl_context = tls_context(m.get("ca")) if m.get("tls") else None
        self.client = MQTTClient(
            self.device_id, m["host"], m["port"],
            user=m.get("user", self.device_id), password=m.get("password"),
            keepalive_s=60, clean_session=False, ssl_context=ssl_context)
        # PROTOCOL.md: will = offline status, QoS 1, retained.
        self.client.set_will(self.prefix + "status", WILL, qos=1, retain=True)
        self.client.on_message = on_message
        self.client.on_puback = on_puback
        self.hw = hw
        self.on_up = on_up
        self.on_down = on_down
        self.backoff = Backoff()
        self._next_try_ms = time.ticks_ms()
        self.last_error = None

    def up(self):
        return self.client.is_connected()

    def service(self):
        """Call often from the node loop. Never blocks longer than one connect attempt."""
        if self.client.is_connected():
            if not self.hw.network_up():
                self._lost(OSError("network down"))
                return
            try:
                self.client.poll()
            except (OSError, MQTTError) as e:
                self._lost(e)
            return
        if time.ticks_diff(time.ticks_ms(), self._next_try_ms) < 0:
            return
        if not self.hw.network_up():
            self._retry_later("network down")
            return
        try:
            self.client.connect()
            self.client.subscribe(self.prefix + "cmd", 1)
        except (OSError, MQTTError) as e:
            self.client.close()
            self._retry_later(e)
            return
        self.backoff.reset()
        self.last_error = None
        self.on_up()

    def publish(self, suffix, payload, qos=1, retain=False):
        """Publish now; returns the packet id, or None if the link is (now) down."""
        if not self.client.is_connected():
            return None
        try:
            return self.client.publish(self.prefix + suffix, payload, qos, retain)
        except (OSError, MQTTError) as e:
            self._lost(e)
            return None

    def close(self, graceful=True):
        if self.client.is_connected() and graceful:
            # A graceful stop says "offline" itself; the broker only sends the will
            # for an unexpected loss (3.1.2.5).
            try:
                self.client.publish(self.prefix + "status", WILL, 1, True)
            except (OSError, MQTTError):
                pass
            self.client.disconnect()
        self.client.close()

    def _lost(self, err):
        self.client.close()
        self.last_error = err
        self.on_down(err)
        self._retry_later(err)

    def _retry_later(self, err):
        self.last_error = err
        self._next_try_ms = time.ticks_add(time.ticks_ms(), self.backoff.next_delay_ms())
