"""The offline rule's school-time count: SchoolTime (bisection and prefix sums, one per
school per pass) gives exactly what school_seconds (a walk over the days) gives, for
random spans of a few minutes to 90 days, on a calendar with holidays, with thresholds
from none to more than the whole range."""
import random
from datetime import date, timedelta

from fleet_server.alerts.offline import SchoolTime, school_seconds
from fleet_server.metrics.schooltime import SchoolHours


def test_school_time_counts_what_the_day_walk_counts():
    rng = random.Random(20261129)
    hours = SchoolHours(1, "Asia/Shanghai", "07:30", "17:30", 0b0011111)
    first = date(2026, 3, 2)
    days = {first + timedelta(days=i) for i in range(80)
            if (first + timedelta(days=i)).weekday() < 5 and rng.random() > 0.1}
    st = SchoolTime(hours, days)
    t0 = hours.bounds(first)[0] - 2 * 86400
    crossed_seen = 0
    for _ in range(20_000):
        start = t0 + rng.random() * 84 * 86400
        end = start + rng.random() * 86400 * rng.choice([0.01, 0.5, 3, 30, 90])
        threshold = rng.choice([0, 60, 1800, 36000, 1e7])
        walked = school_seconds(hours, days, start, end, threshold)
        assert st.count(start, end, threshold) == walked
        crossed_seen += walked[1] is not None
    assert 5_000 < crossed_seen < 20_000        # both outcomes exercised
    assert SchoolTime(hours, set()).count(t0, t0 + 86400 * 10, 1800) == (0.0, None)
