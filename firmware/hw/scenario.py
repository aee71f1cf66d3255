"""Room scenarios for virtual nodes: who is in the room, second by second.

A school day of timetable periods (Asia/Shanghai); each period is used or not and by
how many people, drawn from the scenario's seed per (day, period), so the same seed
always plays the same week and tests can compare the pipeline with this truth."""
from civil import local_day_and_second, weekday
from hw.prng import XorShift32, mix

SHANGHAI_OFFSET_S = 8 * 3600

# Typical Zhejiang primary/junior timetable: 40-minute periods, long break after the
# second period (morning exercise), lunch 12:10-13:30. (start, end) seconds of the day.
PERIODS = (
    (8 * 3600, 8 * 3600 + 40 * 60),
    (8 * 3600 + 50 * 60, 9 * 3600 + 30 * 60),
    (9 * 3600 + 50 * 60, 10 * 3600 + 30 * 60),
    (10 * 3600 + 40 * 60, 11 * 3600 + 20 * 60),
    (11 * 3600 + 30 * 60, 12 * 3600 + 10 * 60),
    (13 * 3600 + 30 * 60, 14 * 3600 + 10 * 60),
    (14 * 3600 + 20 * 60, 15 * 3600),
    (15 * 3600 + 10 * 60, 15 * 3600 + 50 * 60),
    (16 * 3600, 16 * 3600 + 40 * 60),
)

# kind: (probability a period is used, fewest people, most people,
#        probability of unscheduled after-school use that day)
KINDS = {
    "classroom": (0.85, 35, 48, 0.2),
    "lab": (0.45, 20, 40, 0.1),
    "library": (0.35, 8, 30, 0.3),
    "computer_room": (0.5, 25, 45, 0.1),
    "new_style": (0.6, 20, 40, 0.25),
    "music": (0.4, 20, 45, 0.15),
    "idle": (0.0, 0, 0, 0.0),
}


class Scenario:
    def __init__(self, kind="classroom", seed=1, offset_s=SHANGHAI_OFFSET_S):
        if kind not in KINDS:
            raise ValueError("unknown scenario %r (one of %s)" % (kind, ", ".join(sorted(KINDS))))
        self.kind = kind
        self.seed = seed
        self.offset_s = offset_s
        self._day = None
        self._plan = []  # type: list[tuple[int, int, int]]

    def plan_for_day(self, day):
        """[(start_s, end_s, people)] in seconds of the local day, sorted."""
        if weekday(day) >= 5:
            return []
        p_use, lo, hi, p_after = KINDS[self.kind]
        plan = []
        for i, (start, end) in enumerate(PERIODS):
            rng = XorShift32(mix(self.seed, day, i))
            if rng.random() < p_use:
                # People drift in around the bell and leave within a few minutes after.
                arrive = start + rng.randint(-180, 120)
                leave = end + rng.randint(0, 150)
                plan.append((arrive, leave, rng.randint(lo, hi)))
        rng = XorShift32(mix(self.seed, day, 99))
        if rng.random() < p_after:
            start = 16 * 3600 + 50 * 60 + rng.randint(0, 600)
            plan.append((start, start + rng.randint(15, 40) * 60, rng.randint(3, 12)))
        return plan

    def people(self, t):
        day, sec = local_day_and_second(t, self.offset_s)
        if day != self._day:
            self._day = day
            self._plan = self.plan_for_day(day)
        for start, end, n in self._plan:
            if start <= sec < end:
                return n
        return 0
