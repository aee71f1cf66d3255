"""Room scenarios for virtual nodes: the timetable that says who is in the room.

A school day of timetable periods (Asia/Shanghai); each period is used or not and by
how many people, drawn from the scenario's seed per (day, period), so the same seed
always plays the same week and tests can compare the pipeline with this truth."""
from micropython import const

SHANGHAI_OFFSET_S = const(8 * 3600)

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


class XorShift32:
    """xorshift32 (Marsaglia 2003, shifts 13/17/5): a tiny deterministic generator, so a
    scenario with a given seed plays out identically on every interpreter (MicroPython's
    `random` is port-specific)."""

    def __init__(self, seed):
        self.state = (seed * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF or 1

    def next(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def random(self):
        """Uniform float in [0, 1)."""
        return (self.next() >> 8) / 16777216.0

    def randint(self, lo, hi):
        return lo + self.next() % (hi - lo + 1)


def mix(*values):
    """Hash a few integers into one seed (FNV-1a over their 32-bit words)."""
    h = 2166136261
    for v in values:
        v &= 0xFFFFFFFF
        for _ in range(4):
            h ^= v & 0xFF
            h = (h * 16777619) & 0xFFFFFFFF
            v >>= 8
    return h


def plan_for_day(kind, seed, day):
    """[(start_s, end_s, people)] in seconds of local day `day` (days since 1970-01-01,
    a Thursday), sorted; empty at weekends."""
    if (day + 3) % 7 >= 5:
        return []
    p_use, lo, hi, p_after = KINDS[kind]
    plan = []
    for i in range(len(PERIODS)):
        start, end = PERIODS[i]
        rng = XorShift32(mix(seed, day, i))
        if rng.random() < p_use:
            # People drift in around the bell and leave within a few minutes after.
            arrive = start + rng.randint(-180, 120)
            leave = end + rng.randint(0, 150)
            plan.append((arrive, leave, rng.randint(lo, hi)))
    rng = XorShift32(mix(seed, day, 99))
    if rng.random() < p_after:
        start = 16 * 3600 + 50 * 60 + rng.randint(0, 600)
        plan.append((start, start + rng.randint(15, 40) * 60, rng.randint(3, 12)))
    return plan
