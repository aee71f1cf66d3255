"""The `sim` hardware layer: a virtual node on the MicroPython unix port.

Time is the sim clock (PROTOCOL.md `sim`): it starts at `sim.start` and runs `speed`
times real time until it reaches the real clock, then at real time. The first boot's
real start is kept in sim_state.json, so a restarted node continues the same timeline
instead of replaying it. The room (hw/room.py) follows a Scenario; the parts are
simulated at the bus level (hw/sim_i2c.py, hw/sim_parts.py), so the real drivers and
the real sensor manager run exactly as on the board."""
import gc
import json
import time

from civil import parse_iso8601
from hw import Reboot
from hw.room import Room
from hw.scenario import Scenario

STATE_FILE = "sim_state.json"
# Scheduled part faults: sim.faults key -> (part, attribute, value while active).
PART_FAULTS = {
    "co2_missing": ("co2", "present", False), "co2_crc": ("co2", "crc_errors", True),
    "th_missing": ("th", "present", False), "th_crc": ("th", "crc_errors", True),
    "lux_missing": ("lux", "present", False),
    "radar_missing": ("radar", "present", False), "radar_garbage": ("radar", "garbage", True),
    "pir_missing": ("pir", "present", False), "mic_missing": ("mic", "present", False),
}


class SimClock:
    def __init__(self, start_s, speed, state_path=STATE_FILE):
        real = time.time()
        t0 = None
        try:
            with open(state_path) as f:
                st = json.load(f)
            if st.get("start_s") == start_s:
                t0 = st["t0_real"]
        except (OSError, ValueError, KeyError):
            pass
        if t0 is None:
            t0 = real
            with open(state_path, "w") as f:
                json.dump({"start_s": start_s, "t0_real": t0}, f)
        self.start_s = start_s
        self.speed = speed
        self.t0_real = t0

    def now(self):
        real = time.time()
        sim = self.start_s + (real - self.t0_real) * self.speed
        return sim if sim < real else real

    def caught_up(self):
        return self.now() >= time.time() - 1


class SimHardware:
    name = "sim"

    def __init__(self, cfg):
        sim = cfg["sim"]
        self.board = cfg.get("board", "sim")
        start_s = parse_iso8601(sim.get("start", "1970-01-01T00:00:00Z")) if sim.get("start") else int(time.time())
        speed = sim.get("speed", 1)
        if not isinstance(speed, (int, float)) or speed < 1:
            raise ValueError("sim.speed must be a number >= 1")
        self.clock = SimClock(start_s, speed)
        self._sim = sim
        self._start_s = start_s
        self._sensors = None
        self.room = None
        self._led = False
        self._reset_cause = "power"  # a new process is a power-on
        self._journal_path = sim.get("journal")
        # Link faults: [[offset_s from sim start, duration_s], ...] of sim time.
        self._link_down = [(start_s + a, start_s + a + d) for a, d in sim.get("faults", {}).get("link_down", [])]

    # clock
    def now(self):
        return self.clock.now()

    def clock_source(self):
        return "ntp"  # the sim clock stands in for NTP: it is set from the first second

    def sync_clock(self, servers):
        return True

    # network
    def network_up(self):
        if self._link_down:
            t = self.clock.now()
            for a, b in self._link_down:
                if a <= t < b:
                    return False
        return True

    def rssi(self):
        return -58

    def ip(self):
        return "127.0.0.1"

    # board
    def reset_cause(self):
        return self._reset_cause

    def booted(self):
        self._reset_cause = "soft"

    def sensors(self):
        """The sensor manager over bus-level sim parts; built once, kept across
        in-process reboots like the parts on a real board."""
        if self._sensors is None:
            self._sensors = self._build_sensors()
        return self._sensors

    def _build_sensors(self):
        from drivers.bh1750 import BH1750
        from drivers.inmp441 import INMP441
        from drivers.ld2410 import LD2410
        from drivers.pir import PIR
        from drivers.scd4x import SCD4x
        from drivers.sht4x import SHT4x
        from hw.sim_i2c import SimBH1750, SimI2C, SimSCD41, SimSHT4x
        from hw.sim_parts import SimI2S, SimLD2410Uart, SimPirPin
        from sensors import Sensors

        sim = self._sim
        seed = sim.get("seed", 1)
        fitted = sim.get("sensors", {})
        room = Room(Scenario(sim.get("scenario", "classroom"), seed), seed,
                    int(self.clock.now()), sim.get("truth"))
        self.room = room
        clock = room.now
        pir_pin = SimPirPin(room, clock)
        parts = {
            "co2": SimSCD41(room, clock), "th": SimSHT4x(room, clock), "lux": SimBH1750(room, clock),
            "radar": SimLD2410Uart(room, clock, seed=seed), "pir": pir_pin,
            "mic": SimI2S(room, clock, seed=seed),
        }
        for name, part in parts.items():
            if fitted.get(name, True) is False:
                setattr(part, "present", False)  # not fitted: the bus finds nothing there
        room.pir_pin = pir_pin
        for key, spans in sim.get("faults", {}).items():
            if key in PART_FAULTS:
                name, attribute, value = PART_FAULTS[key]
                for offset_s, duration_s in spans:
                    a = self._start_s + offset_s
                    room.add_fault(a, a + duration_s, parts[name], attribute, value)
        i2c = SimI2C([parts["co2"], parts["th"], parts["lux"]])
        sleep = room.sleep_ms
        drivers = {
            "co2": SCD4x(i2c, sleep_ms=sleep), "th": SHT4x(i2c, sleep_ms=sleep),
            "lux": BH1750(i2c, sleep_ms=sleep), "radar": LD2410(parts["radar"]),
            # The PIR debounces on sim ticks: at 60x real time, edges 2 sim seconds
            # apart are only ~33 real ms apart.
            "pir": PIR(pir_pin, ticks_ms=pir_pin.ticks_ms) if fitted.get("pir", True) else None,
            # The sim tone is at 1 kHz, where A-weighting is 0 dB: the unweighted path
            # gives the same level at a tenth of the CPU (see drivers/inmp441.py).
            "mic": INMP441(parts["mic"], aweighting=False),
        }
        return Sensors(drivers, world=room)

    def led(self, on):
        self._led = bool(on)

    def heap_free(self):
        return gc.mem_free()

    def journal(self, seq):
        """Test hook: with sim.journal set, the seq of every record the outbox has
        completely written is appended to that file, so power-loss tests can check that
        nothing written was lost."""
        if self._journal_path:
            with open(self._journal_path, "a") as f:
                f.write("%d\n" % seq)

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    def sleep_until_next(self, next_tick_s):
        # Real time until the sim clock reaches next_tick_s, in short steps so the
        # link is serviced while we wait.
        gap = next_tick_s - self.clock.now()
        real_gap_ms = gap * 1000 / (self.clock.speed if not self.clock.caught_up() else 1)
        time.sleep_ms(max(1, min(50, int(real_gap_ms))))

    def feed_watchdog(self):
        pass

    def reset(self):
        self._reset_cause = "soft"
        raise Reboot()

    def crash_reset(self):
        # The unix port cannot reset the CPU: boot again in-process, as after a panic.
        self._reset_cause = "panic"

