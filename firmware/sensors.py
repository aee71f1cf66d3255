"""The node's sensor set: probes each fitted part at start, samples them on schedule,
and keeps each part's state ok / missing / failed (PROTOCOL.md status `sensors`).

A part that errors is not trusted after ERRORS_TO_FAIL bad readings in a row (one bad
CRC is a warning, as in ESPHome's scd4x component, not a failure); a failed part is
probed again with a growing delay and returns to ok without a reboot. A part not found
at start is "missing" and probed again now and then, in case it was plugged in late."""
import time

from backoff import Backoff

ERRORS_TO_FAIL = 3
RADAR_SILENT_MS = 3000          # LD2410 reports ~10 frames/s; 3 s of silence = failed
MISSING_RETRY_MS = 600000       # look for a part that was absent at start every 10 min
NAMES = ("co2", "th", "lux", "radar", "pir", "mic")


class Part:
    __slots__ = ("name", "driver", "state", "errors", "backoff", "retry_ms")

    def __init__(self, name, driver):
        self.name = name
        self.driver = driver
        self.state = "missing"
        self.errors = 0
        # First retry after 5 s, doubling to at most 5 minutes.
        self.backoff = Backoff(first_ms=5000, max_ms=300000)
        self.retry_ms = None


class Sensors:
    def __init__(self, drivers, world=None):
        """drivers: name -> driver object, or None for a part this board has not got.
        world: the sim's room (advanced once per second before sampling), else None."""
        self.world = world
        self.parts = {}
        for name in NAMES:
            part = Part(name, drivers.get(name))
            self.parts[name] = part
            if part.driver is not None:
                self._probe(part, at_start=True)
        self._last_co2 = None  # SCD4x has a new value only every 5 s; hold it

    # --- state -------------------------------------------------------------------
    def states(self):
        return {name: p.state for name, p in self.parts.items()}

    def _probe(self, part, at_start=False):
        probe = getattr(part.driver, "probe", None)  # a PIR has nothing to ask
        try:
            if probe is not None:
                probe()
        except (OSError, ValueError):
            part.state = "missing" if at_start or part.state == "missing" else "failed"
            delay = MISSING_RETRY_MS if part.state == "missing" else part.backoff.next_delay_ms()
            part.retry_ms = time.ticks_add(time.ticks_ms(), delay)
            return False
        part.state = "ok"
        part.errors = 0
        part.backoff.reset()
        part.retry_ms = None
        return True

    def _usable(self, part):
        if part.driver is None:
            return False
        if part.state == "ok":
            return True
        if part.retry_ms is not None and time.ticks_diff(time.ticks_ms(), part.retry_ms) >= 0:
            return self._probe(part)
        return False

    def _error(self, part):
        part.errors += 1
        if part.errors >= ERRORS_TO_FAIL and part.state == "ok":
            part.state = "failed"
            part.retry_ms = time.ticks_add(time.ticks_ms(), part.backoff.next_delay_ms())

    def _read(self, name, method):
        part = self.parts[name]
        if not self._usable(part):
            return None
        try:
            value = getattr(part.driver, method)()
        except (OSError, ValueError):  # bus error, CRCError (a ValueError)
            self._error(part)
            return None
        part.errors = 0
        return value

    # --- sampling -----------------------------------------------------------------------
    def step(self, t):
        """Once a second: (PIR rising edges, radar target) with None for a part that is
        absent or failed."""
        if self.world is not None and t is not None:
            self.world.step(t)
        pir = self._read("pir", "take")
        radar = None
        part = self.parts["radar"]
        if self._usable(part):
            try:
                part.driver.poll()
                if part.driver.silent_ms() > RADAR_SILENT_MS:
                    raise OSError("radar silent")
                radar = part.driver.target()
                part.errors = 0
            except (OSError, ValueError):
                self._error(part)
                if part.state != "ok":
                    radar = None
        return pir, radar

    def sample_env(self, t):
        """Every 5 s: dict of co2_ppm, temp_c, rh_pct, lux, noise_dba (None = no value)."""
        out = {"co2_ppm": None, "temp_c": None, "rh_pct": None, "lux": None, "noise_dba": None}
        scd = self._read("co2", "read")
        if scd is not None:
            self._last_co2 = scd
        if self.parts["co2"].state == "ok" and self._last_co2 is not None:
            out["co2_ppm"] = self._last_co2[0]
        th = self._read("th", "measure")
        if th is not None:
            out["temp_c"], out["rh_pct"] = th
        elif self._last_co2 is not None and self.parts["co2"].state == "ok":
            # No SHT4x: the SCD4x's own T/RH (less accurate: it self-heats) stand in.
            out["temp_c"], out["rh_pct"] = self._last_co2[1], self._last_co2[2]
        out["lux"] = self._read("lux", "read")
        out["noise_dba"] = self._read("mic", "measure")
        return out
