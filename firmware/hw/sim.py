"""The `sim` hardware layer: a virtual node on the MicroPython unix port.

Time is the sim clock (PROTOCOL.md `sim`): it starts at `sim.start` and runs `speed`
times real time until it reaches the real clock, then at real time. The room is a
Scenario; the sensors follow it with simple physics. The first boot's real start is
kept in sim_state.json, so a restarted node continues the same timeline instead of
replaying it."""
import gc
import json
import math
import time

from civil import parse_iso8601
from hw import Reboot
from hw.prng import XorShift32
from hw.scenario import Scenario

STATE_FILE = "sim_state.json"

# Sensor physics (DOMAIN.md; typical classroom): 200 m3 room, outdoor CO2 420 ppm,
# 4.5e-6 m3/s CO2 per seated pupil, 3 air changes per hour by natural ventilation.
ROOM_M3 = 200.0
OUTDOOR_CO2_PPM = 420.0
CO2_PER_PERSON_M3_S = 4.5e-6
AIR_CHANGES_PER_S = 3.0 / 3600
SENSOR_NAMES = ("co2", "th", "lux", "radar", "pir", "mic")


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


class SimSensors:
    """The room as the node's sensors see it, advanced one second at a time."""

    def __init__(self, scenario, seed, fitted, truth_path=None):
        self.scenario = scenario
        self.rng = XorShift32(seed * 7919 + 17)
        self.fitted = fitted  # sensor name -> bool
        self.co2_ppm = 450.0
        self.people = 0
        self._t = None
        self._pir_lock_s = 0
        self._pir_edges = 0
        self._truth_path = truth_path
        self._truth_min = None
        self._truth_occ_s = 0

    def states(self):
        return {name: ("ok" if self.fitted.get(name, True) else "missing") for name in SENSOR_NAMES}

    def step(self, t):
        """Advance the room to second t. Returns (pir_edges, radar_target), None for
        a sensor that is not fitted."""
        n = self.scenario.people(t)
        self.people = n
        # CO2 mass balance, one-second Euler step: dC/dt = G*n/V - ACH*(C - Cout).
        self.co2_ppm += CO2_PER_PERSON_M3_S * n / ROOM_M3 * 1e6 - AIR_CHANGES_PER_S * (self.co2_ppm - OUTDOOR_CO2_PPM)
        edges = 0
        if self._pir_lock_s:
            self._pir_lock_s -= 1
        elif n and self.rng.random() < min(0.35, 0.03 * n):
            edges = 1
            self._pir_lock_s = 2  # AM312 re-trigger time ~2 s
        radar = bool(n) and self.rng.random() < 0.97
        self._truth(t, n)
        return (edges if self.fitted.get("pir", True) else None,
                radar if self.fitted.get("radar", True) else None)

    def sample_env(self, t):
        r = self.rng.random
        n = self.people
        day_s = (int(t) + 8 * 3600) % 86400
        daylight = max(0.0, math.sin(math.pi * (day_s - 6 * 3600) / (12 * 3600))) * 280
        lux = daylight + (420 if n else 0) + r() * 10
        noise = (52 + min(n, 45) * 0.2 + r() * 6) if n else (33 + r() * 3)
        f = self.fitted.get
        return {
            "co2_ppm": self.co2_ppm + r() * 10 - 5 if f("co2", True) else None,
            "temp_c": 20.5 + 0.04 * n + r() * 0.2 if f("th", True) else None,
            "rh_pct": 48.0 + 0.1 * n + r() * 0.5 if f("th", True) else None,
            "lux": lux if f("lux", True) else None,
            "noise_dba": noise if f("mic", True) else None,
        }

    def _truth(self, t, n):
        # Ground truth, one line per minute: "minute_ts,occupied_s,people".
        if not self._truth_path:
            return
        minute = int(t) - int(t) % 60
        if self._truth_min is not None and minute != self._truth_min:
            with open(self._truth_path, "a") as f:
                f.write("%d,%d,%d\n" % (self._truth_min, self._truth_occ_s, self.people))
            self._truth_occ_s = 0
        self._truth_min = minute
        if n:
            self._truth_occ_s += 1


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
        seed = sim.get("seed", 1)
        fitted = sim.get("sensors", {})
        self._sensors = SimSensors(Scenario(sim.get("scenario", "classroom"), seed), seed,
                                   fitted, sim.get("truth"))
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

    def tls_context(self, ca_path):
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # verify_mode is in MicroPython's ssl docs; the esp32 stubs lack it.
        ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
        ctx.load_verify_locations(cafile=ca_path)
        return ctx

    # board
    def reset_cause(self):
        return self._reset_cause

    def booted(self):
        self._reset_cause = "soft"

    def sensors(self):
        return self._sensors

    def led(self, on):
        self._led = bool(on)

    def heap_free(self):
        return gc.mem_free()

    def heap_peak(self):
        # Peak bytes allocated since start (unix port, MICROPY_MEM_STATS builds).
        import micropython
        mem_peak = getattr(micropython, "mem_peak", None)
        return mem_peak() if mem_peak is not None else None

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

