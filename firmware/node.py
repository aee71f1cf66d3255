"""The node: one loop that turns each second of sensor evidence into presence, windows
and events, keeps them in the flash outbox until the broker has them, publishes status
and answers commands. Identical on the board and on the unix port (hardware layer below).

Boot bookkeeping lives here too (boot.json): the boot counter, and the run of boots that
crashed before the node became healthy, which puts the node in safe mode (network,
status and commands only) after _SAFE_MODE_CRASHES of them in a row."""
import gc
import json
import os
import sys
import time

from micropython import const

import commands
from mqtt import Link
from nodeconfig import apply_update, config_hash
from outbox import Outbox
from presence import PresenceFusion
from window import WindowAggregator

FW_VERSION = const("0.2.0")
_ENV_SAMPLE_S = const(5)          # SCD4x periodic measurement interval (datasheet 3.5.1)
_NTP_RETRY_S = const(30)
_NTP_RESYNC_S = const(86400)      # RTC drift on the ESP32 is seconds a day: resync daily
_HEALTHY_AFTER_ACKS = const(3)    # records delivered before a boot counts as healthy
_SAFE_MODE_CRASHES = const(3)
_REBOOT_ACK_WAIT_MS = const(5000)
_BOOT_PATH = const("boot.json")
# PROTOCOL.md status (JSON objects are unordered; this follows the document's order).
_STATUS_JSON = const('{"v":1,"online":true,"ts":%d,"fw":"%s","hw":%s,"boot":%d,"reset":"%s",'
                     '"uptime_s":%d,"heap_free":%d,"rssi":%s,"ip":%s,"outbox":%d,"clock":"%s",'
                     '"sensors":%s,"outbox_dropped":%d,"heap_peak":%d%s}')


class Node:
    def __init__(self, cfg, hw):
        self.cfg = cfg
        self.hw = hw
        # A boot that ended without becoming healthy and without a clean stop counts as
        # a crash (exception, watchdog, brown-out loop, power cut during start-up).
        st = {}
        try:
            with open(_BOOT_PATH) as f:
                st = json.load(f)
        except (OSError, ValueError):
            pass
        self.boot = int(st.get("boot", 0)) + 1
        self.crashes = int(st.get("crashes", 0))
        if st and not st.get("healthy") and not st.get("clean"):
            self.crashes += 1
        self.safe_mode = self.crashes >= _SAFE_MODE_CRASHES
        self.healthy = False
        self._save_boot(False)
        self.reset_cause = hw.reset_cause
        self.outbox = Outbox()
        # Safe mode: no sensors and no windows, only the link, status and commands, so
        # a node that keeps crashing can still be reached and updated.
        self.sensors = None if self.safe_mode else hw.sensors()
        self.sensor_states = self.sensors.states() if self.sensors else {}
        p = cfg["presence"]
        self.presence = PresenceFusion(p["hold_s"], p["radar_hold_s"])
        self.window = WindowAggregator(cfg["window_s"])
        self.cmds = commands.load()
        self.ran = None               # the op the last command carried out
        self.link = Link(cfg, hw, self)
        # Ticks: the start (uptime); while the clock is unset, the next NTP try and the
        # last second counted.
        self.started_ms = self.ntp_ms = self.tick_ms = time.ticks_ms()
        self.next_s = None            # the next second of the node clock to account
        self.status_at = None         # when status is due next (node clock)
        self.ntp_at = None            # when to resync the clock
        self.status_due = False
        self.identify_until = 0       # blink the LED until then
        self.delivered = 0
        self.heap_peak = 0
        self.unset_s = 0              # seconds counted before the clock was set
        self.reboot_pid = None        # PUBACK of the reboot ack we wait for
        self.reboot_ms = None         # reset at the latest then
        # Firmware updates (ota.py, docs/ota.md): imported only while one runs or waits
        # for its confirmation; at rest only its status key is kept.
        self.ota = None
        self.ota_status = ""
        try:
            os.stat("ota.json")
            self._ota()
        except OSError:
            pass  # never updated
        except Exception as e:  # noqa: BLE001 - an update gone wrong must not stop the node
            sys.print_exception(e)

    def _ota(self):
        if self.ota is None:
            import ota
            self.ota = ota.Updater(self)
        u = self.ota
        self.ota_status = u.status()
        if u.idle():
            self.ota = None
            sys.modules.pop("ota", None)
        return u

    def _save_boot(self, clean):
        with open(_BOOT_PATH + ".tmp", "w") as f:
            json.dump({"boot": self.boot, "crashes": self.crashes, "healthy": self.healthy,
                       "clean": clean}, f)
        os.rename(_BOOT_PATH + ".tmp", _BOOT_PATH)

    # --- main loop -----------------------------------------------------------------
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
                self._save_boot(True)  # a planned stop: the next boot is not a crash
            self.link.close(graceful)

    def step(self):
        hw = self.hw
        hw.feed_watchdog()  # only here: a stuck loop must let the watchdog bite
        now = hw.now()
        if now is None:
            # PROTOCOL.md: before the first sync the node measures presence but publishes
            # nothing timed. Seconds come from the tick counter instead of the RTC, a
            # counter rather than ticks_ms // 1000, which wraps after 12 days.
            if self.sensors is not None and time.ticks_diff(time.ticks_ms(), self.tick_ms) >= 1000:
                self.tick_ms = time.ticks_add(self.tick_ms, 1000)
                self.unset_s += 1
                pir, radar = self.sensors.step(None)
                self.presence.update(self.unset_s, pir, radar)
            if time.ticks_diff(time.ticks_ms(), self.ntp_ms) >= 0:
                self.ntp_ms = time.ticks_add(time.ticks_ms(), _NTP_RETRY_S * 1000)
                hw.sync_clock(self.cfg["ntp"])
        else:
            if self.next_s is None:
                self.next_s = int(now)
                self.status_at = self.next_s + self.cfg["status_s"]
                self.ntp_at = self.next_s + _NTP_RESYNC_S
            done = 0
            while self.next_s <= now:
                self._second(self.next_s)
                self.next_s += 1
                done += 1
                if done % 64 == 0:
                    self.link.service()  # a long catch-up must not starve keepalive
            if now >= self.ntp_at and self.link.up():
                self.ntp_at = int(now) + _NTP_RESYNC_S
                hw.sync_clock(self.cfg["ntp"])
        link = self.link
        link.service()
        # Send what waits in the outbox (oldest first, at most 8 in flight), then status.
        while link.up():
            rec = self.outbox.next_unsent()
            if rec is None:
                break
            pid = link.publish(rec[0], rec[1])
            if pid is None:
                break
            self.outbox.mark_sent(pid)
        if self.ota is not None:
            self.ota.step()
            if self.ota.idle():
                self._ota()  # done: drop it, keep its status key
        if self.status_due and link.up():
            gc.collect()  # heap_free is the live heap: measured right after a collection
            now = hw.now()
            rssi, ip, clock = hw.net_info()
            if link.publish("status", _STATUS_JSON % (
                    int(now) if now is not None else 0, FW_VERSION, json.dumps(hw.board), self.boot,
                    self.reset_cause, time.ticks_diff(time.ticks_ms(), self.started_ms) // 1000,
                    gc.mem_free(), json.dumps(rssi), json.dumps(ip), len(self.outbox), clock,
                    json.dumps(self.sensor_states, separators=(",", ":")), self.outbox.dropped,
                    self.heap_peak, (',"safe_mode":true' if self.safe_mode else "")
                    + (self.ota.status() if self.ota else self.ota_status)),
                    True) is not None:
                self.status_due = False
        # After a reboot command: reset once the broker has its ack (or after 5 s).
        if self.reboot_ms is not None and (
                self.reboot_pid is None or time.ticks_diff(time.ticks_ms(), self.reboot_ms) >= 0):
            self.outbox.flush()
            self.crashes = 0  # a reboot command ends the crash run
            self._save_boot(True)
            link.close()
            hw.reset()
        hw.sleep_until_next(self.next_s if self.next_s is not None else 0)

    def _second(self, t):
        used = gc.mem_alloc()  # sampled every second: the peak the heap budget is judged by
        if used > self.heap_peak:
            self.heap_peak = used
        sensors = self.sensors
        if sensors is not None:
            pir, radar = sensors.step(t)
            presence = self.presence
            changed = presence.update(t, pir, radar)
            report = self.window.add_second(t, presence.present, pir, radar)
            if report is not None:
                self.hw.journal(self.outbox.append_window(report))
            if changed:
                self.hw.journal(self.outbox.append_event(t, presence.present))
            if t % _ENV_SAMPLE_S == 0:
                self.window.add_env(sensors.sample_env())
                states = sensors.states()
                if states != self.sensor_states:
                    self.sensor_states = states
                    self.status_due = True
        if t >= self.status_at:
            self.status_at = t + self.cfg["status_s"]
            self.status_due = True
        if self.identify_until:
            if t < self.identify_until:
                self.hw.led(t % 2 == 0)
            else:
                self.identify_until = 0
                self.hw.led(False)

    # --- called by the link --------------------------------------------------------------
    def on_link(self, up):
        """The link came up (everything not acked is sent again, oldest first, and the
        birth status) or went down."""
        self.outbox.rewind()
        if up:
            self.status_due = True

    def on_puback(self, pid):
        if pid == self.reboot_pid:
            self.reboot_pid = None
            return
        if self.outbox.ack(pid):
            self.delivered += 1
            if self.delivered >= _HEALTHY_AFTER_ACKS and not self.healthy and not self.safe_mode:
                # Connected and delivering: the crash run is over (not in safe mode, where
                # only a reboot command or an update ends it).
                self.healthy = True
                self.crashes = 0
                self._save_boot(False)

    def on_command(self, payload):
        self.ran = None
        ack = commands.handle(self.cmds, payload, self.hw.now() or 0, self._run)
        if ack is None:
            return
        if self.ran == "config":
            ack = ack[:-1] + ',"config_hash":"%s"}' % config_hash(self.cfg)
        elif self.ran == "ota":
            ack = ack[:-1] + ',"ota":"accepted"}'  # progress and result follow under this id
        pid = self.link.publish("ack", ack)
        if self.ran == "reboot" and self.reboot_ms is None:
            # Reset only once the broker has the ack (or after a short wait), so the
            # server learns the result and does not send the command again.
            self.reboot_pid = pid
            self.reboot_ms = time.ticks_add(time.ticks_ms(), _REBOOT_ACK_WAIT_MS)

    def _run(self, op, args):
        """Carries out a command commands.handle() accepted: None when done, else the
        error for the ack. A reboot happens after its ack is delivered (on_command)."""
        if op == "identify":
            s = args.get("s", 30)
            if not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= 600:
                return "bad_args"
            self.identify_until = int(self.hw.now() or 0) + s
        elif op == "sync":
            self.status_due = True
        elif op == "config":
            try:
                self.cfg = cfg = apply_update(self.cfg, args)
            except ValueError:
                return "bad_args"
            self.window.set_window(cfg["window_s"])
            p = cfg["presence"]
            self.presence.hold_s = p["hold_s"]
            self.presence.radar_hold_s = p["radar_hold_s"]
            if self.next_s is not None:
                self.status_at = min(self.status_at, self.next_s + cfg["status_s"])
            self.status_due = True
        elif op == "ota":
            u = self._ota()
            err = u.start(args, args.get("id"))
            self.ota = u  # kept while the job runs
            if err:
                return err
        self.ran = op
        return None
