"""The `esp32` hardware layer: Wi-Fi station, NTP, reset cause, watchdog, status LED
and the PIR input on a real ESP32 / ESP32-S3 / ESP32-C3 running MicroPython >= 1.23.

Pins and fitted parts come from the board pin map (boards/<board>.json, copied from
hardware/boards/ at provisioning); the hardware layer builds the buses and hands each
driver its bus, the sensor manager (sensors.py) does the rest."""
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
_RADAR_BAUD = 256000     # HLK-LD2410 default (protocol 2.1)
_RADAR_RXBUF = 1024      # engineering frames are ~450 B/s; poll() runs once a second
_MIC_RATE_HZ = 16000


def _reset_cause():
    cause = machine.reset_cause()
    # The port folds a software reset and a panic into HARD_RESET, and a brownout into
    # PWRON_RESET; a mark written before machine.reset() tells ours apart.
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


def load_board(name):
    try:
        with open("boards/%s.json" % name) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class Esp32Hardware:
    def __init__(self, cfg):
        self.board = cfg.get("board", "esp32-devkit")
        self.pins = load_board(self.board)
        self.wifi_cfg = cfg.get("wifi", {})
        self.wlan = network.WLAN(network.STA_IF)
        self.wlan.active(True)
        self._wifi_started_ms = None
        self._ntp_ok = False
        self._led = machine.Pin(self.pins["led"], machine.Pin.OUT) if "led" in self.pins else None
        self._led_active_low = bool(self.pins.get("led_active_low"))
        self._sensors = None
        self._wdt = None
        self.reset_cause = _reset_cause()

    # clock
    def now(self):
        t = time.time() + EPOCH_OFFSET_S
        return t if t >= _CLOCK_VALID_AFTER_S else None

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

    def net_info(self):
        """(rssi, ip, clock source) for status."""
        try:
            rssi = self.wlan.status("rssi")
        except OSError:
            rssi = None
        return rssi, self.wlan.ifconfig()[0], "ntp" if self._ntp_ok else "none"

    # board
    def booted(self):
        self._wdt = machine.WDT(timeout=_WDT_TIMEOUT_MS)

    def sensors(self):
        if self._sensors is None:
            self._sensors = self._build_sensors()
        return self._sensors

    def _build_sensors(self):
        from sensors import Sensors
        Pin = machine.Pin
        pins = self.pins
        fitted = pins.get("parts", {})
        drivers = {}  # type: dict[str, object]
        if "i2c" in pins:
            c = pins["i2c"]
            i2c = machine.I2C(c.get("id", 0), sda=Pin(c["sda"]), scl=Pin(c["scl"]), freq=c.get("freq", 100000))
            if fitted.get("co2", True):
                from drivers.scd4x import SCD4x
                drivers["co2"] = SCD4x(i2c)
            if fitted.get("th", True):
                from drivers.sht4x import SHT4x
                drivers["th"] = SHT4x(i2c)
            if fitted.get("lux", True):
                from drivers.bh1750 import BH1750
                drivers["lux"] = BH1750(i2c)
        if "radar_uart" in pins and fitted.get("radar", True):
            from drivers.ld2410 import LD2410
            c = pins["radar_uart"]
            drivers["radar"] = LD2410(machine.UART(c["id"], baudrate=c.get("baud", _RADAR_BAUD),
                                                   tx=c["tx"], rx=c["rx"], rxbuf=_RADAR_RXBUF))
        if "pir" in pins and fitted.get("pir", True):
            from drivers.pir import PIR
            drivers["pir"] = PIR(Pin(pins["pir"], Pin.IN))
        if "i2s_mic" in pins and fitted.get("mic", True):
            from drivers.inmp441 import INMP441
            c = pins["i2s_mic"]
            i2s = machine.I2S(c.get("id", 0), sck=Pin(c["sck"]), ws=Pin(c["ws"]), sd=Pin(c["sd"]),
                              mode=machine.I2S.RX, bits=32, format=machine.I2S.MONO,
                              rate=_MIC_RATE_HZ, ibuf=8192)
            drivers["mic"] = INMP441(i2s, sample_rate=_MIC_RATE_HZ)
        return Sensors(drivers)

    def led(self, on):
        if self._led is not None:
            self._led.value((0 if on else 1) if self._led_active_low else (1 if on else 0))

    def journal(self, seq):
        pass  # test hook of the sim layer only

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
