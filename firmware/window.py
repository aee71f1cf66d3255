"""Window aggregation: per-second presence and periodic sensor samples become one
window report per `window_s` (PROTOCOL.md "Window report"), aligned so ts % win == 0."""
import math


class WindowAggregator:
    def __init__(self, window_s):
        self.window_s = window_s  # length of the current window
        self.pending_s = None     # a new length waiting for an aligned boundary
        self.start = None
        self._reset()

    def _reset(self):
        self.occupied_s = 0
        self.pir = None           # None until a PIR reading is seen in this window
        self.radar_s = None
        self.sums = [0, 0, 0, 0]  # co2_ppm, temp_c, rh_pct, lux
        self.counts = [0, 0, 0, 0]
        self.energy = 0.0         # sum of 10^(L/10) of the noise samples
        self.noise_n = 0
        self.present = False

    def set_window(self, window_s):
        """Takes effect at the first boundary aligned to the new length."""
        self.pending_s = None if window_s == self.window_s else window_s

    def add_second(self, t, occupied, pir, radar):
        """Accounts one second. When t starts a new window, returns the finished one's
        report: (ts, win, occupied_s, present, pir, radar_s, co2_ppm, temp_c, rh_pct,
        lux, noise_dba), None for a value without readings (the order of
        PROTOCOL.md's fields, which outbox.append_window stores); else None."""
        start = t - t % self.window_s
        report = None
        if start != self.start:
            if self.start is not None:
                win = self.window_s
                means = []
                for i in range(4):
                    n = self.counts[i]
                    m = self.sums[i] / n if n else None
                    # co2 and lux as integers, temperature and humidity to 0.1
                    means.append(None if m is None else int(m + 0.5) if i in (0, 3) else round(m, 1))
                report = (self.start, win, min(self.occupied_s, win), self.present, self.pir,
                          None if self.radar_s is None else min(self.radar_s, win),
                          means[0], means[1], means[2], means[3],
                          # LAeq: the energy mean of the levels, not the mean of the dB values
                          round(10 * math.log10(self.energy / self.noise_n), 1) if self.noise_n else None)
            if self.pending_s and t % self.pending_s == 0:
                # Switch only on a boundary of the new length, so windows never overlap.
                self.window_s = self.pending_s
                self.pending_s = None
                start = t
            self.start = start
            self._reset()
        if occupied:
            self.occupied_s += 1
        self.present = occupied
        if pir is not None:
            self.pir = (self.pir or 0) + pir
        if radar is not None:
            self.radar_s = (self.radar_s or 0) + (1 if radar else 0)
        return report

    def add_env(self, sample):
        """sample: [co2_ppm, temp_c, rh_pct, lux, noise_dba], None = no reading."""
        for i in range(4):
            v = sample[i]
            if v is not None:
                self.sums[i] += v
                self.counts[i] += 1
        db = sample[4]
        if db is not None:
            self.energy += 10 ** (db / 10)
            self.noise_n += 1
