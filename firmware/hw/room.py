"""The simulated room the sim parts measure: people from the scenario, CO2 from a mass
balance with ventilation, lights on when occupied, noise by activity, one step per sim
second. It also writes the ground truth and applies scheduled faults to the parts."""
import math

from hw.prng import XorShift32

# Physics (DOMAIN.md; a typical 67 m2 classroom): 200 m3, outdoor CO2 420 ppm, 4.5e-6
# m3/s CO2 per seated pupil, 3 air changes per hour by natural ventilation.
ROOM_M3 = 200.0
OUTDOOR_CO2_PPM = 420.0
CO2_PER_PERSON_M3_S = 4.5e-6
AIR_CHANGES_PER_S = 3.0 / 3600
SHANGHAI_OFFSET_S = 8 * 3600
MAX_CATCH_UP_S = 3600  # after a jump, integrate at most an hour of physics


class Room:
    def __init__(self, scenario, seed, start_s, truth_path=None):
        self.scenario = scenario
        self.rng = XorShift32(seed * 7919 + 17)
        self.t = int(start_s)       # the sim second being measured
        self.extra_s = 0.0          # time the drivers waited inside this second
        self.people = 0
        self.moving = False
        self.co2_ppm = 450.0
        self.temp_c = 20.5
        self.rh_pct = 48.0
        self.lux = 0.0
        self.noise_dba = 33.0
        self.pir_pin = None         # stepped with the room (it fires IRQs)
        self._faults = []           # (from_s, to_s, part, attribute, value while active)
        self._truth_path = truth_path
        self._truth_min = None
        self._truth_occ_s = 0
        self._truth_people = 0  # most people seen in the minute

    # --- clock shared with the sim parts --------------------------------------------
    def now(self):
        return self.t + self.extra_s

    def sleep_ms(self, ms):
        # A driver's datasheet wait passes in sim time only: the sim part sees the
        # delay, the interpreter does not spend it.
        self.extra_s += ms / 1000

    # --- faults -------------------------------------------------------------------------
    def add_fault(self, from_s, to_s, part, attribute, value):
        self._faults.append((from_s, to_s, part, attribute, value, getattr(part, attribute)))

    def _apply_faults(self, t):
        for a, b, part, attribute, value, normal in self._faults:
            setattr(part, attribute, value if a <= t < b else normal)

    # --- physics ------------------------------------------------------------------------
    def step(self, t):
        t = int(t)
        gap = t - self.t
        if gap > 1:
            # The node was off or catching up: let the air settle over the gap.
            for s in range(max(self.t + 1, t - MAX_CATCH_UP_S), t):
                self._air(self.scenario.people(s))
        self.t = t
        self.extra_s = 0.0
        n = self.scenario.people(t)
        self.people = n
        self._air(n)
        r = self.rng.random
        # Pupils fidget: with n people someone moves in most seconds.
        self.moving = n > 0 and r() < min(0.6, 0.04 * n)
        day_s = (t + SHANGHAI_OFFSET_S) % 86400
        daylight = max(0.0, math.sin(math.pi * (day_s - 6 * 3600) / (12 * 3600))) * 280
        self.lux = daylight + (420 if n else 0) + r() * 10
        self.noise_dba = (52 + min(n, 45) * 0.2 + r() * 6) if n else (33 + r() * 3)
        self.temp_c = 20.5 + 0.04 * n + r() * 0.2
        self.rh_pct = 48.0 + 0.1 * n + r() * 0.5
        if self._faults:
            self._apply_faults(t)
        if self.pir_pin is not None:
            self.pir_pin.step(t)
        self._truth(t, n)

    def _air(self, n):
        # CO2 mass balance, one-second Euler step: dC/dt = G*n/V - ACH*(C - Cout).
        self.co2_ppm += (CO2_PER_PERSON_M3_S * n / ROOM_M3 * 1e6
                         - AIR_CHANGES_PER_S * (self.co2_ppm - OUTDOOR_CO2_PPM))

    def _truth(self, t, n):
        # Ground truth, one line per minute: "minute_ts,occupied_s,people".
        if not self._truth_path:
            return
        minute = t - t % 60
        if self._truth_min is not None and minute != self._truth_min:
            with open(self._truth_path, "a") as f:
                f.write("%d,%d,%d\n" % (self._truth_min, self._truth_occ_s, self._truth_people))
            self._truth_occ_s = 0
            self._truth_people = 0
        self._truth_min = minute
        if n:
            self._truth_occ_s += 1
            self._truth_people = max(self._truth_people, n)
