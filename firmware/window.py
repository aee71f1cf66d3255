"""Window aggregation: per-second presence and periodic sensor samples become one
window report per `window_s` (PROTOCOL.md "Window report"), aligned so ts % win == 0."""
import math


class WindowAggregator:
    def __init__(self, window_s):
        self.window_s = window_s   # length of the current window
        self._pending_s = None     # a new length waiting for an aligned boundary
        self.start = None
        self._reset()

    def _reset(self):
        self.occupied_s = 0
        self.seconds = 0
        self.pir = None        # None until a PIR reading is seen in this window
        self.radar_s = None
        self._sums = {}        # quantity -> [sum, count]
        self._noise_energy = 0.0
        self._noise_n = 0
        self.present = False

    def add_second(self, t, occupied, pir_edges, radar_target):
        """Account one second. Returns a finished window report (dict) when t starts a
        new window, else None."""
        start = t - t % self.window_s
        report = None
        if self.start is not None and start != self.start:
            report = self.report()
        if start != self.start:
            if self._pending_s and t % self._pending_s == 0:
                # Switch only on a boundary of the new length, so windows never overlap.
                self.window_s = self._pending_s
                self._pending_s = None
                start = t
            self.start = start
            self._reset()
        self.seconds += 1
        if occupied:
            self.occupied_s += 1
        self.present = occupied
        if pir_edges is not None:
            self.pir = (self.pir or 0) + pir_edges
        if radar_target is not None:
            self.radar_s = (self.radar_s or 0) + (1 if radar_target else 0)
        return report

    def add_env(self, sample):
        """sample: dict of co2_ppm, temp_c, rh_pct, lux, noise_dba; None = no reading."""
        for key in ("co2_ppm", "temp_c", "rh_pct", "lux"):
            v = sample.get(key)
            if v is not None:
                acc = self._sums.get(key)
                if acc is None:
                    self._sums[key] = [v, 1]
                else:
                    acc[0] += v
                    acc[1] += 1
        db = sample.get("noise_dba")
        if db is not None:
            # LAeq: energy mean of the levels, not the mean of the dB values.
            self._noise_energy += 10 ** (db / 10)
            self._noise_n += 1

    def _mean(self, key, digits):
        acc = self._sums.get(key)
        if acc is None:
            return None
        m = acc[0] / acc[1]
        return int(m + 0.5) if digits == 0 else round(m, digits)

    def set_window(self, window_s):
        """Takes effect at the first boundary aligned to the new length."""
        self._pending_s = None if window_s == self.window_s else window_s

    def report(self):
        win = self.window_s
        noise = None
        if self._noise_n:
            noise = round(10 * math.log10(self._noise_energy / self._noise_n), 1)
        return {
            "ts": self.start,
            "win": win,
            "occ": {
                "occupied_s": min(self.occupied_s, win),
                "present": self.present,
                "pir": self.pir,
                "radar_s": None if self.radar_s is None else min(self.radar_s, win),
            },
            "env": {
                "co2_ppm": self._mean("co2_ppm", 0),
                "temp_c": self._mean("temp_c", 1),
                "rh_pct": self._mean("rh_pct", 1),
                "lux": self._mean("lux", 0),
                "noise_dba": noise,
            },
        }
