"""The node: one loop that turns each second of sensor evidence into presence, windows
and events, keeps them in the flash outbox until the broker has them, publishes status
and answers commands. Identical on the board and on the unix port (hardware layer below)."""
import gc
import json
import time

from bootstate import BootState
from commands import CommandBook
from link import Link
from nodeconfig import ConfigError, apply_update, config_hash
from outbox import Outbox
from presence import PresenceFusion
from seqstore import SeqStore
from window import WindowAggregator

FW_VERSION = "0.2.0"
ENV_SAMPLE_S = 5          # SCD4x periodic measurement interval (datasheet 3.5.1)
MAX_INFLIGHT = 8          # QoS 1 publishes awaiting PUBACK at once
NTP_RETRY_S = 30
NTP_RESYNC_S = 86400      # RTC drift on the ESP32 is seconds a day: resync daily
HEALTHY_AFTER_ACKS = 3    # windows delivered before a boot counts as healthy
REBOOT_ACK_WAIT_MS = 5000


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


class Node:
    def __init__(self, cfg, hw):
        self.cfg = cfg
        self.hw = hw
        self.device_id = cfg["device_id"]
        self.bootstate = BootState()
        self.boot = self.bootstate.boot
        self.safe_mode = self.bootstate.safe_mode
        self.reset_cause = hw.reset_cause()
        self.outbox = Outbox()
        self.seq = SeqStore()
        self.seq.at_least(self.outbox.max_seq + 1)
        # Safe mode: no sensors and no windows, only the link, status and commands,
        # so a node that keeps crashing can still be reached and updated.
        self.sensors = None if self.safe_mode else hw.sensors()
        self.sensor_states = self.sensors.states() if self.sensors else {}
        p = cfg["presence"]
        self.presence = PresenceFusion(p["hold_s"], p["radar_hold_s"])
        self.window = WindowAggregator(cfg["window_s"])
        self.commands = CommandBook()
        self.link = Link(cfg, hw, self._on_up, self._on_down, self._on_message, self._on_puback)
        self.started_ms = time.ticks_ms()
        self.next_tick_s = None
        self.next_status_s = None
        self.next_ntp_s = None
        self.status_due = False
        self.identify_until_s = 0
        self.delivered = 0
        self.heap_peak = 0
        self._reboot_pid = None       # PUBACK of the reboot ack we wait for
        self._reboot_deadline = None
        self._next_ntp_ms = time.ticks_ms()
        self._unset_tick_ms = time.ticks_ms()
        self._unset_s = 0

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
            self.outbox.flush()
            if graceful:
                self.bootstate.mark_clean()
            self.link.close(graceful)

    def step(self):
        self.hw.feed_watchdog()  # only here: a stuck loop must let the watchdog bite
        now = self.hw.now()
        if now is None:
            self._presence_without_clock()
            self._sync_clock()
        else:
            if self.next_tick_s is None:
                self.next_tick_s = int(now)
                self.next_status_s = self.next_tick_s + self.cfg["status_s"]
                self.next_ntp_s = self.next_tick_s + NTP_RESYNC_S
            done = 0
            while self.next_tick_s <= now:
                self._second(self.next_tick_s)
                self.next_tick_s += 1
                done += 1
                if done % 64 == 0:
                    self.link.service()  # a long catch-up must not starve keepalive
            if now >= self.next_ntp_s and self.link.up():
                self.next_ntp_s = int(now) + NTP_RESYNC_S
                self.hw.sync_clock(self.cfg["ntp"])
        self.link.service()
        self._pump()
        self._maybe_reboot()
        self.hw.sleep_until_next(self.next_tick_s if self.next_tick_s is not None else 0)

    def _sync_clock(self):
        if time.ticks_diff(time.ticks_ms(), self._next_ntp_ms) >= 0:
            self._next_ntp_ms = time.ticks_add(time.ticks_ms(), NTP_RETRY_S * 1000)
            self.hw.sync_clock(self.cfg["ntp"])

    def _presence_without_clock(self):
        # PROTOCOL.md: before the first sync the node measures presence but publishes
        # nothing timed. Seconds come from the tick counter instead of the RTC.
        if self.sensors is None or time.ticks_diff(time.ticks_ms(), self._unset_tick_ms) < 1000:
            return
        self._unset_tick_ms = time.ticks_add(self._unset_tick_ms, 1000)
        self._unset_s += 1  # a counter, not ticks_ms // 1000, which wraps after 12 days
        pir, radar = self.sensors.step(None)
        self.presence.update(self._unset_s, pir, radar)

    def _second(self, t):
        used = gc.mem_alloc()  # sampled every second: the peak the heap budget is judged by
        if used > self.heap_peak:
            self.heap_peak = used
        if self.sensors is None:
            pir = radar = None
            changed = False
        else:
            pir, radar = self.sensors.step(t)
            changed = self.presence.update(t, pir, radar)
            report = self.window.add_second(t, self.presence.present, pir, radar)
            if report is not None:
                seq = self.seq.take()
                self.outbox.append_window(seq, report)
                self.hw.journal(seq)
            if changed:
                seq = self.seq.take()
                self.outbox.append_event(seq, t, self.presence.present)
                self.hw.journal(seq)
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
            pid = self.link.publish(rec.suffix, rec.payload)
            if pid is None:
                break
            self.outbox.mark_sent(rec, pid)
        if self.status_due and self.link.up():
            if self.link.publish("status", _dumps(self.status()), 1, True) is not None:
                self.status_due = False

    def status(self):
        gc.collect()
        now = self.hw.now()
        doc = {
            "v": 1, "online": True, "ts": int(now) if now is not None else 0,
            "fw": FW_VERSION, "hw": self.hw.board, "boot": self.boot,
            "reset": self.reset_cause,
            "uptime_s": time.ticks_diff(time.ticks_ms(), self.started_ms) // 1000,
            "heap_free": self.hw.heap_free(), "rssi": self.hw.rssi(), "ip": self.hw.ip(),
            "outbox": len(self.outbox), "outbox_dropped": self.outbox.dropped,
            "clock": self.hw.clock_source(), "sensors": self.sensor_states,
        }
        doc["heap_peak"] = self.heap_peak
        if self.safe_mode:
            doc["safe_mode"] = True
        return doc

    def _maybe_reboot(self):
        if self._reboot_deadline is None:
            return
        if self._reboot_pid is None or time.ticks_diff(time.ticks_ms(), self._reboot_deadline) >= 0:
            self.outbox.flush()
            self.bootstate.mark_clean(reset_crashes=True)
            self.link.close(False)
            self.hw.reset()

    # --- link callbacks ------------------------------------------------------------
    def _on_up(self):
        self.outbox.rewind()
        self.status_due = True  # birth

    def _on_down(self, err):
        self.outbox.rewind()

    def _on_puback(self, pid):
        if pid == self._reboot_pid:
            self._reboot_pid = None
            return
        if self.outbox.ack(pid):
            self.delivered += 1
            if self.delivered >= HEALTHY_AFTER_ACKS:
                self.bootstate.mark_healthy()

    def _on_message(self, topic, payload, retained):
        if not topic.endswith("/cmd"):
            return
        now = self.hw.now() or 0
        ack = self.commands.handle(payload, now, {
            "identify": self._op_identify,
            "sync": self._op_sync,
            "reboot": self._op_reboot,
            "config": self._op_config,
        })
        if ack is None:
            return
        if self.commands.last_op == "config" and ack["ok"]:
            ack["config_hash"] = config_hash(self.cfg)
        pid = self.link.publish("ack", _dumps(ack), 1, False)
        if self.commands.last_op == "reboot" and ack["ok"] and self._reboot_deadline is None:
            # Reset only once the broker has the ack (or after a short wait), so the
            # server learns the result and does not send the command again.
            self._reboot_pid = pid
            self._reboot_deadline = time.ticks_add(time.ticks_ms(), REBOOT_ACK_WAIT_MS)

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
        return None  # carried out after the ack is delivered (_on_message)

    def _op_config(self, args):
        try:
            self.cfg = apply_update(self.cfg, args)
        except ConfigError:
            return "bad_args"
        self.window.set_window(self.cfg["window_s"])
        p = self.cfg["presence"]
        self.presence.set_hold(p["hold_s"], p["radar_hold_s"])
        if self.next_tick_s is not None:
            self.next_status_s = min(self.next_status_s, self.next_tick_s + self.cfg["status_s"])
        self.status_due = True
        return None
