"""The node's sensor set: probes each fitted part at start, samples them on schedule,
and keeps each part's state ok / missing / failed (PROTOCOL.md status `sensors`).

A part that errors is not trusted after _ERRORS_TO_FAIL bad readings in a row (one bad
CRC is a warning, as in ESPHome's scd4x component, not a failure); a failed part is
probed again with a growing delay and returns to ok without a reboot. A part not found
at start is "missing" and probed again now and then, in case it was plugged in late."""
import time

from micropython import const

from backoff import delay_ms

_ERRORS_TO_FAIL = const(3)
_RADAR_SILENT_MS = const(3000)       # LD2410 reports ~10 frames/s; 3 s of silence = failed
_MISSING_RETRY_MS = const(600000)    # look for a part that was absent at start every 10 min
NAMES = ("co2", "th", "lux", "radar", "pir", "mic")
# A part is a list: its driver (None: not fitted), state, bad readings in a row, failed
# probes in a row (the re-probe backoff: 5 s doubling to 5 min), when to probe again
# (ticks_ms, or None).
_DRIVER = const(0)
_STATE = const(1)
_ERRORS = const(2)
_FAILS = const(3)
_RETRY = const(4)


class Sensors:
    def __init__(self, drivers, world=None):
        """drivers: name -> driver object, or None for a part this board has not got.
        world: the sim's room (advanced once per second before sampling), else None."""
        self.world = world
        self.parts = {}
        self.co2 = None  # the latest SCD4x reading: it has a new one only every 5 s
        for name in NAMES:
            part = self.parts[name] = [drivers.get(name), "missing", 0, 0, None]
            if part[_DRIVER] is not None:
                self._probe(part, True)

    def states(self):
        return {name: p[_STATE] for name, p in self.parts.items()}

    def _probe(self, part, at_start=False):
        probe = getattr(part[_DRIVER], "probe", None)  # a PIR has nothing to ask
        try:
            if probe is not None:
                probe()
        except (OSError, ValueError):
            if at_start or part[_STATE] == "missing":
                part[_STATE] = "missing"
                delay = _MISSING_RETRY_MS
            else:
                part[_STATE] = "failed"
                delay = delay_ms(part[_FAILS], 5000, 300000)
                part[_FAILS] += 1
            part[_RETRY] = time.ticks_add(time.ticks_ms(), delay)
            return False
        part[_STATE] = "ok"
        part[_ERRORS] = part[_FAILS] = 0
        part[_RETRY] = None
        return True

    def _usable(self, part):
        if part[_DRIVER] is None:
            return False
        if part[_STATE] == "ok":
            return True
        if part[_RETRY] is not None and time.ticks_diff(time.ticks_ms(), part[_RETRY]) >= 0:
            return self._probe(part)
        return False

    def _error(self, part):
        part[_ERRORS] += 1
        if part[_ERRORS] >= _ERRORS_TO_FAIL and part[_STATE] == "ok":
            part[_STATE] = "failed"
            part[_RETRY] = time.ticks_add(time.ticks_ms(), delay_ms(part[_FAILS], 5000, 300000))
            part[_FAILS] += 1

    def _read(self, name, method):
        part = self.parts[name]
        if not self._usable(part):
            return None
        try:
            value = getattr(part[_DRIVER], method)()
        except (OSError, ValueError):  # bus error, CRCError (a ValueError)
            self._error(part)
            return None
        part[_ERRORS] = 0
        return value

    def step(self, t):
        """Once a second: (PIR rising edges, radar target) with None for a part that is
        absent or failed."""
        if self.world is not None and t is not None:
            self.world.step(t)
        pir = self._read("pir", "take")
        radar = None
        part = self.parts["radar"]
        if self._usable(part):
            driver = part[_DRIVER]
            try:
                driver.poll()
                if driver.silent_ms() > _RADAR_SILENT_MS:
                    raise OSError("radar silent")
                radar = driver.target()
                part[_ERRORS] = 0
            except (OSError, ValueError):
                self._error(part)
                if part[_STATE] != "ok":
                    radar = None
        return pir, radar

    def sample_env(self):
        """Every 5 s: [co2_ppm, temp_c, rh_pct, lux, noise_dba], None = no value."""
        scd = self._read("co2", "read")
        if scd is not None:
            self.co2 = scd
        scd = self.co2 if self.parts["co2"][_STATE] == "ok" else None
        th = self._read("th", "measure")
        if th is None and scd is not None:
            # No SHT4x: the SCD4x's own T/RH (less accurate: it self-heats) stand in.
            th = scd[1], scd[2]
        return [None if scd is None else scd[0], None if th is None else th[0],
                None if th is None else th[1], self._read("lux", "read"), self._read("mic", "measure")]
