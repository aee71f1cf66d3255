"""The `esp32` hardware layer: Wi-Fi station, NTP, reset cause, watchdog, status LED
and the PIR input on a real ESP32 / ESP32-S3 / ESP32-C3 running MicroPython >= 1.23.

Pins come from the board pin map (boards/<board>.json, from hardware/boards/). The
bus-level sensor drivers (SCD4x, SHT4x, BH1750, LD2410, INMP441) plug in behind
`sensors()`; until a part has its driver it reports "missing" and null readings."""
import json
import time

import machine
import network
import ntptime

from hw import Reboot  # noqa: F401  (re-exported for symmetry with the sim layer)

# time.time() counts from 2000-01-01 on ports built without MICROPY_EPOCH_IS_1970.
EPOCH_OFFSET_S = 946684800 if time.gmtime(0)[0] == 2000 else 0
# Before NTP the RTC starts near its epoch; any time before 2024 is "not set".
_CLOCK_VALID_AFTER_S = 1704067200
_REBOOT_MARK = "reboot.mark"
_WDT_TIMEOUT_MS = 30000
_PIR_DEBOUNCE_MS = 50


def load_board(name):
    try:
        with open("boards/%s.json" % name) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class PirInput:
    """Counts PIR rising edges in an IRQ (AM312 / HC-SR501 output), debounced."""

    def __init__(self, pin):
        self.pin = pin
        self.edges = 0
        self._last_ms = time.ticks_ms()
        pin.irq(trigger=machine.Pin.IRQ_RISING, handler=self._irq)

    def _irq(self, pin):
        now = time.ticks_ms()
        if time.ticks_diff(now, self._last_ms) >= _PIR_DEBOUNCE_MS:
            self.edges += 1
            self._last_ms = now

    def take(self):
        state = machine.disable_irq()
        n = self.edges
        self.edges = 0
        machine.enable_irq(state)
        return n


class Esp32Sensors:
    def __init__(self, pins):
        self.pir = None
        if "pir" in pins:
            self.pir = PirInput(machine.Pin(pins["pir"], machine.Pin.IN))

    def states(self):
        return {"co2": "missing", "th": "missing", "lux": "missing", "radar": "missing",
                "pir": "ok" if self.pir else "missing", "mic": "missing"}

    def step(self, t):
        return (self.pir.take() if self.pir else None, None)

    def sample_env(self, t):
        return {"co2_ppm": None, "temp_c": None, "rh_pct": None, "lux": None, "noise_dba": None}


class Esp32Hardware:
    name = "esp32"

    def __init__(self, cfg):
        self.board = cfg.get("board", "esp32-devkit")
        self.pins = load_board(self.board)
        self.wifi_cfg = cfg.get("wifi", {})
        self.wlan = network.WLAN(network.STA_IF)
        self.wlan.active(True)
        self._wifi_started_ms = None
        self._ntp_ok = False
        self._led = machine.Pin(self.pins["led"], machine.Pin.OUT) if "led" in self.pins else None
        self._sensors = Esp32Sensors(self.pins)
        self._wdt = None

    # clock
    def now(self):
        t = time.time() + EPOCH_OFFSET_S
        return t if t >= _CLOCK_VALID_AFTER_S else None

    def clock_source(self):
        return "ntp" if self._ntp_ok else "none"

    def sync_clock(self, servers):
        if not self.wlan.isconnected():
            return False
        for host in servers:
            try:
                ntptime.host = host
                ntptime.settime()  # sets the RTC to UTC
                self._ntp_ok = True
                return True
            except (OSError, OverflowError):
                continue
        return False

    # network
    def network_up(self):
        """Non-blocking: starts a connect and reports whether the station is up."""
        if self.wlan.isconnected():
            return True
        now = time.ticks_ms()
        if self._wifi_started_ms is None or time.ticks_diff(now, self._wifi_started_ms) > 20000:
            self._wifi_started_ms = now
            try:
                self.wlan.connect(self.wifi_cfg.get("ssid", ""), self.wifi_cfg.get("password", ""))
            except OSError:
                pass
        return False

    def rssi(self):
        try:
            return self.wlan.status("rssi")
        except OSError:
            return None

    def ip(self):
        return self.wlan.ifconfig()[0]

    def tls_context(self, ca_path):
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # verify_mode is in MicroPython's ssl docs; the esp32 stubs lack it.
        ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
        ctx.load_verify_locations(cafile=ca_path)
        return ctx

    # board
    def reset_cause(self):
        cause = machine.reset_cause()
        # The port folds a software reset and a panic into HARD_RESET, and a brownout
        # into PWRON_RESET; a mark written before machine.reset() tells ours apart.
        if cause == machine.HARD_RESET:
            try:
                import os
                os.remove(_REBOOT_MARK)
                return "soft"
            except OSError:
                return "panic"
        return {
            machine.PWRON_RESET: "power",
            machine.WDT_RESET: "wdt",
            machine.DEEPSLEEP_RESET: "deepsleep",
            machine.SOFT_RESET: "soft",
        }.get(cause, "unknown")

    def booted(self):
        self._wdt = machine.WDT(timeout=_WDT_TIMEOUT_MS)

    def sensors(self):
        return self._sensors

    def led(self, on):
        if self._led is not None:
            self._led.value(1 if on else 0)

    def heap_free(self):
        import gc
        return gc.mem_free()

    def heap_peak(self):
        return None  # the ESP32 build has no allocation statistics

    def journal(self, seq):
        pass  # test hook of the sim layer only

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    def sleep_until_next(self, next_tick_s):
        now = self.now()
        gap_ms = 50 if now is None else int((next_tick_s - now) * 1000)
        time.sleep_ms(max(1, min(50, gap_ms)))

    def feed_watchdog(self):
        if self._wdt is not None:
            self._wdt.feed()

    def reset(self):
        with open(_REBOOT_MARK, "w") as f:
            f.write("1")
        machine.reset()

    def crash_reset(self):
        # No reboot mark: the next boot reports "panic" (see reset_cause).
        machine.reset()
