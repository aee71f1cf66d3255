"""The simulated room the sim parts measure: who is in it second by second (the
scenario's timetable, hw/scenario.py), and its physics: CO2 from a mass balance with
ventilation, lights on when occupied, noise by activity. It also writes the ground truth
and applies scheduled faults to the parts."""
import math

from micropython import const

from hw.scenario import KINDS, SHANGHAI_OFFSET_S, XorShift32, plan_for_day

# Physics (DOMAIN.md; a typical 67 m2 classroom): 200 m3, outdoor CO2 420 ppm, 4.5e-6
# m3/s CO2 per seated pupil, 3 air changes per hour by natural ventilation.
_ROOM_M3 = const(200.0)
_OUTDOOR_CO2_PPM = const(420.0)
_CO2_PER_PERSON_M3_S = const(4.5e-6)
_AIR_CHANGES_PER_S = const(3.0 / 3600)
_MAX_CATCH_UP_S = const(3600)  # after a jump, integrate at most an hour of physics


class Room:
    def __init__(self, kind="classroom", seed=1, start_s=0, truth_path=None):
        if kind not in KINDS:
            raise ValueError("unknown scenario %r (one of %s)" % (kind, ", ".join(sorted(KINDS))))
        self.kind = kind
        self.seed = seed
        self.day = None             # the local day of `plan`
        self.plan = []              # [(start_s, end_s, people)] in seconds of that day
        self.rng = XorShift32(seed * 7919 + 17)
        self.t = int(start_s)       # the sim second being measured
        self.extra_s = 0.0          # time the drivers waited inside this second
        self.people = 0
        self.moving = False         # someone moved this second
        self.co2_ppm = 450.0
        self.temp_c = 20.5
        self.rh_pct = 48.0
        self.lux = 0.0
        self.noise_dba = 33.0
        self.pir_pin = None         # stepped with the room (it fires IRQs)
        self.faults = []            # (from_s, to_s, part, attribute, value while active, normal)
        self.truth_path = truth_path
        self.truth = None           # [minute, occupied seconds, most people] being counted

    # --- the scenario (hw/scenario.py) ---------------------------------------------
    def occupants(self, t):
        """People in the room at Unix second t, by the timetable."""
        lt = int(t) + SHANGHAI_OFFSET_S
        day = lt // 86400
        sec = lt % 86400
        if day != self.day:
            self.day = day
            self.plan = plan_for_day(self.kind, self.seed, day)
        for start, end, n in self.plan:
            if start <= sec < end:
                return n
        return 0

    # --- clock shared with the sim parts --------------------------------------------
    def now(self):
        return self.t + self.extra_s

    def sleep_ms(self, ms):
        # A driver's datasheet wait passes in sim time only: the sim part sees the
        # delay, the interpreter does not spend it.
        self.extra_s += ms / 1000

    # --- physics ------------------------------------------------------------------------
    def step(self, t):
        t = int(t)
        # The node was off or catching up: let the air settle over the gap first.
        lo = max(self.t + 1, t - _MAX_CATCH_UP_S) if t - self.t > 1 else t
        for s in range(lo, t + 1):
            n = self.occupants(s)
            # CO2 mass balance, one-second Euler step: dC/dt = G*n/V - ACH*(C - Cout).
            self.co2_ppm += (_CO2_PER_PERSON_M3_S * n / _ROOM_M3 * 1e6
                             - _AIR_CHANGES_PER_S * (self.co2_ppm - _OUTDOOR_CO2_PPM))
        self.t = t
        self.extra_s = 0.0
        self.people = n
        r = self.rng.random
        # Pupils fidget: with n people someone moves in most seconds.
        self.moving = n > 0 and r() < min(0.6, 0.04 * n)
        day_s = (t + SHANGHAI_OFFSET_S) % 86400
        daylight = max(0.0, math.sin(math.pi * (day_s - 6 * 3600) / (12 * 3600))) * 280
        self.lux = daylight + (420 if n else 0) + r() * 10
        self.noise_dba = (52 + min(n, 45) * 0.2 + r() * 6) if n else (33 + r() * 3)
        self.temp_c = 20.5 + 0.04 * n + r() * 0.2
        self.rh_pct = 48.0 + 0.1 * n + r() * 0.5
        for a, b, part, attribute, value, normal in self.faults:
            setattr(part, attribute, value if a <= t < b else normal)
        if self.pir_pin is not None:
            self.pir_pin.step(t)
        if self.truth_path:
            # Ground truth, one line per minute: "minute_ts,occupied_s,people".
            minute = t - t % 60
            tr = self.truth
            if tr is None or tr[0] != minute:
                if tr is not None:
                    with open(self.truth_path, "a") as f:
                        f.write("%d,%d,%d\n" % (tr[0], tr[1], tr[2]))
                self.truth = tr = [minute, 0, 0]
            if n:
                tr[1] += 1
                tr[2] = max(tr[2], n)

    def add_fault(self, from_s, to_s, part, attribute, value):
        self.faults.append((from_s, to_s, part, attribute, value, getattr(part, attribute)))
