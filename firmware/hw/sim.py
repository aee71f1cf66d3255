"""The `sim` hardware layer: a virtual node on the MicroPython unix port.

Time is the sim clock (PROTOCOL.md `sim`): it starts at `sim.start` and runs `speed`
times real time until it reaches the real clock, then at real time. The first boot's
real start is kept in sim_state.json, so a restarted node continues the same timeline
instead of replaying it. The room (hw/room.py) follows a scenario; the parts are
simulated at the bus level (hw/sim_i2c.py, hw/sim_parts.py), so the real drivers and
the real sensor manager run exactly as on the board."""
import gc
import json
import time

from micropython import const

# The parts are there from power-on: their modules load with this one, one at a time
# with a collection in between (compiling from .py needs transient heap), before the
# node's objects fill the heap.
for _name in ("drivers.bh1750", "drivers.inmp441", "drivers.ld2410", "drivers.pir", "drivers.scd4x",
              "drivers.sht4x", "hw.sim_i2c", "hw.sim_parts", "hw.room"):
    __import__(_name)
    gc.collect()
from drivers.bh1750 import BH1750  # noqa: E402
from drivers.inmp441 import INMP441  # noqa: E402
from drivers.ld2410 import LD2410  # noqa: E402
from drivers.pir import PIR  # noqa: E402
from drivers.scd4x import SCD4x  # noqa: E402
from drivers.sht4x import SHT4x  # noqa: E402
from hw import Reboot  # noqa: E402
from hw.room import Room  # noqa: E402
from hw.sim_i2c import SimBH1750, SimI2C, SimSCD41, SimSHT4x  # noqa: E402
from hw.sim_parts import SimI2S, SimLD2410Uart, SimPirPin  # noqa: E402
from sensors import Sensors  # noqa: E402

_STATE_FILE = const("sim_state.json")
# Scheduled part faults: sim.faults key -> (part, attribute, value while active).
_PART_FAULTS = const((
    ("co2_missing", "co2", "present", False), ("co2_crc", "co2", "crc_errors", True),
    ("th_missing", "th", "present", False), ("th_crc", "th", "crc_errors", True),
    ("lux_missing", "lux", "present", False),
    ("radar_missing", "radar", "present", False), ("radar_garbage", "radar", "garbage", True),
    ("pir_missing", "pir", "present", False), ("mic_missing", "mic", "present", False),
))


# --- calendar arithmetic for sim.start, without the RTC's epoch or time zone ------------
def days_from_civil(y, m, d):
    # Howard Hinnant's days_from_civil: days since 1970-01-01 (proleptic Gregorian).
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _digits(text, a, b):
    part = text[a:b]
    if len(part) != b - a:
        raise ValueError
    for c in part:
        if c not in "0123456789":
            raise ValueError  # int() would also take a sign or spaces
    return int(part)


def parse_iso8601(text):
    """'2026-11-23T07:30:00+08:00' (or ...Z) -> Unix seconds. Raises ValueError for
    anything else, including fields out of range (RFC 3339 5.6), so a mistyped time
    is refused rather than silently shifted."""
    bad = ValueError("not an ISO 8601 time with offset: %s" % text)
    try:
        y = _digits(text, 0, 4)
        mo = _digits(text, 5, 7)
        d = _digits(text, 8, 10)
        hh = _digits(text, 11, 13)
        mi = _digits(text, 14, 16)
        ss = _digits(text, 17, 19)
        if text[4] != "-" or text[7] != "-" or text[10] not in "Tt " or text[13] != ":" or text[16] != ":":
            raise ValueError
        rest = text[19:]
        if rest and rest[0] == ".":  # fractional seconds are ignored
            i = 1
            while i < len(rest) and rest[i] in "0123456789":
                i += 1
            rest = rest[i:]
        if rest in ("Z", "z"):
            off = 0
        elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
            oh = _digits(rest, 1, 3)
            om = _digits(rest, 4, 6)
            if oh > 23 or om > 59:
                raise ValueError
            off = oh * 3600 + om * 60
            if rest[0] == "-":
                off = -off
        else:
            raise ValueError
    except (ValueError, IndexError):
        raise bad
    if not 1 <= mo <= 12 or hh > 23 or mi > 59 or ss > 60:
        raise bad
    if not 1 <= d <= (31 if mo == 12 else days_from_civil(y, mo + 1, 1) - days_from_civil(y, mo, 1)):
        raise bad  # no such day in that month
    return days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss - off


class SimHardware:
    def __init__(self, cfg):
        sim = cfg["sim"]
        self.sim = sim
        self.board = cfg.get("board", "sim")
        start_s = parse_iso8601(sim["start"]) if sim.get("start") else int(time.time())
        speed = sim.get("speed", 1)
        if not isinstance(speed, (int, float)) or speed < 1:
            raise ValueError("sim.speed must be a number >= 1")
        # The sim clock: t0 is the real time of the first boot on this timeline.
        t0 = None
        try:
            with open(_STATE_FILE) as f:
                st = json.load(f)
            if st.get("start_s") == start_s:
                t0 = st["t0_real"]
        except (OSError, ValueError, KeyError):
            pass
        if t0 is None:
            t0 = time.time()
            with open(_STATE_FILE, "w") as f:
                json.dump({"start_s": start_s, "t0_real": t0}, f)
        self.start_s = start_s
        self.speed = speed
        self.t0 = t0
        self.parts = None  # the sensor manager, built once
        self.reset_cause = "power"  # a new process is a power-on
        # Link faults: [[offset_s from sim start, duration_s], ...] of sim time.
        self.link_down = [(start_s + a, start_s + a + d)
                          for a, d in sim.get("faults", {}).get("link_down", [])]

    def now(self):
        real = time.time()
        t = self.start_s + (real - self.t0) * self.speed
        return t if t < real else real

    def sync_clock(self, servers):
        return True  # the sim clock stands in for NTP: it is set from the first second

    def net_info(self):
        """(rssi, ip, clock source) for status."""
        return -58, "127.0.0.1", "ntp"

    def network_up(self):
        t = self.now()
        for a, b in self.link_down:
            if a <= t < b:
                return False
        return True

    def booted(self):
        self.reset_cause = "soft"

    def sensors(self):
        """The sensor manager over bus-level sim parts; built once, kept across
        in-process reboots like the parts on a real board."""
        if self.parts is not None:
            return self.parts
        sim = self.sim
        seed = sim.get("seed", 1)
        fitted = sim.get("sensors", {})
        room = Room(sim.get("scenario", "classroom"), seed, int(self.now()), sim.get("truth"))
        clock = room.now
        room.pir_pin = pir_pin = SimPirPin(room, clock)
        parts = {
            "co2": SimSCD41(room, clock), "th": SimSHT4x(room, clock), "lux": SimBH1750(room, clock),
            "radar": SimLD2410Uart(room, clock, seed=seed), "pir": pir_pin,
            "mic": SimI2S(room, clock, seed=seed),
        }
        for name, part in parts.items():
            if fitted.get(name, True) is False:
                setattr(part, "present", False)  # not fitted: the bus finds nothing there
        faults = sim.get("faults", {})
        for key, name, attribute, value in _PART_FAULTS:
            for offset_s, duration_s in faults.get(key, ()):
                a = self.start_s + offset_s
                room.add_fault(a, a + duration_s, parts[name], attribute, value)
        i2c = SimI2C([parts["co2"], parts["th"], parts["lux"]])
        sleep = room.sleep_ms
        self.parts = Sensors({
            "co2": SCD4x(i2c, sleep_ms=sleep), "th": SHT4x(i2c, sleep_ms=sleep),
            "lux": BH1750(i2c, sleep_ms=sleep), "radar": LD2410(parts["radar"]),
            # The PIR debounces on sim ticks: at 60x real time, edges 2 sim seconds
            # apart are only ~33 real ms apart.
            "pir": PIR(pir_pin, ticks_ms=pir_pin.ticks_ms) if fitted.get("pir", True) else None,
            # The sim tone is at 1 kHz, where A-weighting is 0 dB: the unweighted path
            # gives the same level at a tenth of the CPU (see drivers/inmp441.py).
            # Chunks of 64 samples (256 B instead of 1 KB): the same level, read in more
            # pieces of the same stream.
            "mic": INMP441(parts["mic"], aweighting=False, chunk_samples=64),
        }, world=room)
        return self.parts

    def led(self, on):
        pass  # nobody looks at a virtual node's LED

    def journal(self, seq):
        """Test hook: with sim.journal set, the seq of every record the outbox has
        completely written is appended to that file, so power-loss tests can check that
        nothing written was lost."""
        path = self.sim.get("journal")
        if path:
            with open(path, "a") as f:
                f.write("%d\n" % seq)

    def sleep_until_next(self, next_s):
        # Real time until the sim clock reaches next_s, in short steps so the link is
        # serviced while we wait; sim time runs `speed` times faster until caught up.
        now = self.now()
        ms = (next_s - now) * 1000 / (self.speed if now < time.time() - 1 else 1)
        time.sleep_ms(max(1, min(50, int(ms))))

    def feed_watchdog(self):
        pass

    def reset(self):
        self.reset_cause = "soft"
        raise Reboot()

    def crash_reset(self):
        # The unix port cannot reset the CPU: boot again in-process, as after a panic.
        self.reset_cause = "panic"
