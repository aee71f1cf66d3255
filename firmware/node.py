"""The node: one loop that turns each second of sensor evidence into presence, windows
and events, keeps them in the outbox until the broker has them, publishes status and
answers commands. Identical on the board and on the unix port (hardware layer below)."""
import gc
import json
import time

from commands import CommandBook
from link import Link
from outbox import Outbox
from presence import PresenceFusion
from seqstore import SeqStore
from window import WindowAggregator

FW_VERSION = "0.1.0"
ENV_SAMPLE_S = 5          # SCD4x periodic measurement interval (datasheet 3.5.1)
MAX_INFLIGHT = 8          # QoS 1 publishes awaiting PUBACK at once
NTP_RETRY_S = 30
BOOT_FILE = "boot.dat"


def _bump_boot_count(path=BOOT_FILE):
    n = 0
    try:
        with open(path) as f:
            n = int(f.read().strip())
    except (OSError, ValueError):
        pass
    n += 1
    with open(path, "w") as f:
        f.write(str(n))
    return n


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


class Node:
    def __init__(self, cfg, hw):
        self.cfg = cfg
        self.hw = hw
        self.device_id = cfg["device_id"]
        self.boot = _bump_boot_count()
        self.reset_cause = hw.reset_cause()
        self.seq = SeqStore()
        self.sensors = hw.sensors()
        self.sensor_states = self.sensors.states()
        p = cfg["presence"]
        self.presence = PresenceFusion(p["hold_s"], p["radar_hold_s"])
        self.window = WindowAggregator(cfg["window_s"])
        self.outbox = Outbox()
        self.commands = CommandBook()
        self.link = Link(cfg, hw, self._on_up, self._on_down, self._on_message, self._on_puback)
        self.started_ms = time.ticks_ms()
        self.next_tick_s = None
        self.next_status_s = None
        self.status_due = False
        self.identify_until_s = 0
        self.reboot_pending = False
        self._next_ntp_ms = time.ticks_ms()

    # --- main loop ---------------------------------------------------------------
    def run(self):
        self.hw.booted()
        graceful = False
        try:
            while True:
                self.step()
        except KeyboardInterrupt:
            graceful = True
        finally:
            self.link.close(graceful)

    def step(self):
        self.hw.feed_watchdog()
        now = self.hw.now()
        if now is None:
            self._sync_clock()
        else:
            if self.next_tick_s is None:
                self.next_tick_s = int(now)
                self.next_status_s = self.next_tick_s + self.cfg["status_s"]
            done = 0
            while self.next_tick_s <= now:
                self._second(self.next_tick_s)
                self.next_tick_s += 1
                done += 1
                if done % 64 == 0:
                    self.link.service()  # a long catch-up must not starve keepalive
        self.link.service()
        self._pump()
        if self.reboot_pending and self.outbox.inflight() == 0:
            self.hw.reset()
        self.hw.sleep_until_next(self.next_tick_s if self.next_tick_s is not None else 0)

    def _sync_clock(self):
        if time.ticks_diff(time.ticks_ms(), self._next_ntp_ms) >= 0:
            self._next_ntp_ms = time.ticks_add(time.ticks_ms(), NTP_RETRY_S * 1000)
            self.hw.sync_clock(self.cfg["ntp"])

    def _second(self, t):
        pir, radar = self.sensors.step(t)
        changed = self.presence.update(t, pir, radar)
        report = self.window.add_second(t, self.presence.present, pir, radar)
        if report is not None:
            report["v"] = 1
            report["seq"] = self.seq.take()
            self.outbox.append(report["seq"], "telemetry", _dumps(report))
        if changed:
            seq = self.seq.take()
            self.outbox.append(seq, "event", _dumps(
                {"v": 1, "seq": seq, "ts": t, "present": self.presence.present}))
        if t % ENV_SAMPLE_S == 0:
            self.window.add_env(self.sensors.sample_env(t))
            states = self.sensors.states()
            if states != self.sensor_states:
                self.sensor_states = states
                self.status_due = True
        if t >= self.next_status_s:
            self.next_status_s = t + self.cfg["status_s"]
            self.status_due = True
        if self.identify_until_s:
            if t < self.identify_until_s:
                self.hw.led(t % 2 == 0)
            else:
                self.identify_until_s = 0
                self.hw.led(False)

    def _pump(self):
        """Send what waits in the outbox (oldest first), then status if due."""
        while self.link.up() and self.outbox.inflight() < MAX_INFLIGHT:
            rec = self.outbox.next_unsent()
            if rec is None:
                break
            pid = self.link.publish(rec[1], rec[2])
            if pid is None:
                break
            self.outbox.mark_sent(rec, pid)
        if self.status_due and self.link.up():
            if self.link.publish("status", _dumps(self.status()), 1, True) is not None:
                self.status_due = False

    def status(self):
        gc.collect()
        now = self.hw.now()
        return {
            "v": 1, "online": True, "ts": int(now) if now is not None else 0,
            "fw": FW_VERSION, "hw": self.hw.board, "boot": self.boot,
            "reset": self.reset_cause,
            "uptime_s": time.ticks_diff(time.ticks_ms(), self.started_ms) // 1000,
            "heap_free": self.hw.heap_free(), "rssi": self.hw.rssi(), "ip": self.hw.ip(),
            "outbox": len(self.outbox), "outbox_dropped": self.outbox.dropped,
            "clock": self.hw.clock_source(), "sensors": self.sensor_states,
        }

    # --- link callbacks ------------------------------------------------------------
    def _on_up(self):
        self.outbox.rewind()
        self.status_due = True  # birth

    def _on_down(self, err):
        self.outbox.rewind()

    def _on_puback(self, pid):
        self.outbox.ack(pid)

    def _on_message(self, topic, payload, retained):
        if not topic.endswith("/cmd"):
            return
        now = self.hw.now() or 0
        ack = self.commands.handle(payload, now, {
            "identify": self._op_identify,
            "sync": self._op_sync,
            "reboot": self._op_reboot,
        })
        if ack is not None:
            self.link.publish("ack", _dumps(ack), 1, False)

    # --- commands ---------------------------------------------------------------------
    def _op_identify(self, args):
        s = args.get("s", 30)
        if not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= 600:
            return "bad_args"
        now = self.hw.now()
        self.identify_until_s = int(now or 0) + s
        return None

    def _op_sync(self, args):
        self.status_due = True
        return None

    def _op_reboot(self, args):
        self.reboot_pending = True
        return None
