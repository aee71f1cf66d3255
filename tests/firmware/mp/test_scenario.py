"""The scenario (firmware/hw/scenario.py, played by hw/room.py): the ground truth of
virtual nodes. It must be reproducible from its seed, empty at weekends and for 'idle',
and the room's occupants(t) must agree with the day plan (non-overlapping periods) that
the pipeline is compared against."""
from hw.room import Room
from hw.scenario import KINDS, SHANGHAI_OFFSET_S, XorShift32, plan_for_day
from hw.sim import days_from_civil, parse_iso8601


class Scenario:
    """A kind and seed: plan_for_day() from hw/scenario.py, people() from a Room."""

    def __init__(self, kind="classroom", seed=1):
        self.room = Room(kind, seed)
        self.kind = kind
        self.seed = seed

    def plan_for_day(self, day):
        return plan_for_day(self.kind, self.seed, day)

    def people(self, t):
        return self.room.occupants(t)

MONDAY = days_from_civil(2026, 11, 23)   # local (Shanghai) day number, a Monday
SATURDAY = MONDAY + 5
SUNDAY = MONDAY + 6


def _t(day, sec):
    """Unix time of local second `sec` of local day `day` in Shanghai."""
    return day * 86400 + sec - SHANGHAI_OFFSET_S


def _plan_people(plan, sec):
    for start, end, n in plan:
        if start <= sec < end:
            return n
    return 0


def test_xorshift32_matches_marsaglia_reference():
    # Marsaglia (2003) xorshift32 with shifts 13/17/5 from state 1: 270369, 67634689.
    rng = XorShift32(0)
    rng.state = 1
    assert rng.next() == 270369
    assert rng.next() == 67634689


def test_same_seed_plays_the_same_week():
    a = Scenario("classroom", seed=7)
    b = Scenario("classroom", seed=7)
    for day in range(MONDAY, MONDAY + 7):
        assert a.plan_for_day(day) == b.plan_for_day(day), day
    for sec in range(0, 7 * 86400, 97):
        t = _t(MONDAY, sec)
        assert a.people(t) == b.people(t), t


def test_different_seeds_give_different_weeks():
    # Guards the test above: the seed really drives the plan.
    a = Scenario("classroom", seed=1)
    b = Scenario("classroom", seed=2)
    plans_a = [a.plan_for_day(d) for d in range(MONDAY, MONDAY + 5)]
    plans_b = [b.plan_for_day(d) for d in range(MONDAY, MONDAY + 5)]
    assert plans_a != plans_b


def test_weekends_are_empty():
    for kind in KINDS:
        s = Scenario(kind, seed=3)
        for day in (SATURDAY, SUNDAY, SATURDAY + 7, SUNDAY + 7):
            assert s.plan_for_day(day) == [], (kind, day)
        for sec in range(0, 2 * 86400, 60):
            assert s.people(_t(SATURDAY, sec)) == 0, (kind, sec)


def test_weekdays_of_a_busy_kind_have_lessons():
    # Guards test_weekends_are_empty: the same days shifted to Mon-Fri are not empty.
    s = Scenario("classroom", seed=3)
    assert all(s.plan_for_day(d) for d in range(MONDAY, MONDAY + 5))


def test_idle_room_is_never_occupied():
    s = Scenario("idle", seed=5)
    for day in range(MONDAY, MONDAY + 14):
        assert s.plan_for_day(day) == [], day
    for sec in range(0, 7 * 86400, 45):
        assert s.people(_t(MONDAY, sec)) == 0, sec


def test_people_positive_only_inside_the_day_plan():
    s = Scenario("classroom", seed=11)
    for day in (MONDAY, MONDAY + 2, MONDAY + 4):
        plan = s.plan_for_day(day)
        assert plan, day
        for sec in range(0, 86400, 30):
            assert s.people(_t(day, sec)) == _plan_people(plan, sec), (day, sec)
        # Exact edges: half-open [arrive, leave).
        for start, end, n in plan:
            assert s.people(_t(day, start)) == n
            assert s.people(_t(day, start - 1)) == _plan_people(plan, start - 1)
            assert s.people(_t(day, end - 1)) == n
            assert s.people(_t(day, end)) == _plan_people(plan, end)


def test_day_boundary_is_local_shanghai_midnight():
    # Monday 08:10 local is Monday 00:10 UTC; the Sunday before (UTC) is still empty.
    s = Scenario("classroom", seed=11)
    plan = s.plan_for_day(MONDAY)
    t = parse_iso8601("2026-11-23T08:10:00+08:00")
    assert s.people(t) == _plan_people(plan, 8 * 3600 + 10 * 60)


def test_plan_periods_are_sorted_disjoint_and_in_range():
    for kind in KINDS:
        _, lo, hi, _ = KINDS[kind]
        for seed in (1, 2, 3):
            s = Scenario(kind, seed=seed)
            for day in range(MONDAY, MONDAY + 5):
                plan = s.plan_for_day(day)
                for start, end, n in plan:
                    assert 0 <= start < end <= 86400, (kind, seed, day, plan)
                    # Lesson sizes come from the kind; after-school groups are 3..12.
                    assert (lo <= n <= hi) or (3 <= n <= 12), (kind, n)
                for a, b in zip(plan, plan[1:]):
                    assert a[1] <= b[0], (kind, seed, day, plan)


def test_unknown_kind_is_refused():
    try:
        Scenario("swimming_pool")
    except ValueError:
        return
    raise AssertionError("unknown scenario kind accepted")


def test_local_day_is_shanghai_and_weekdays_count_from_a_thursday_epoch():
    # 1970-01-01 (day 0) was a Thursday: days 2 and 3 (Sat, Sun) are empty, 4 (Mon) is not.
    assert plan_for_day("classroom", 3, 2) == [] and plan_for_day("classroom", 3, 3) == []
    assert plan_for_day("classroom", 3, 4)
    assert days_from_civil(2026, 11, 23) == MONDAY
    # The room's day turns at local (Shanghai) midnight, 16:00 UTC the day before.
    room = Room("classroom", 11)
    room.occupants(parse_iso8601("2026-11-23T00:00:00+08:00"))
    assert room.day == MONDAY
    room.occupants(parse_iso8601("2026-11-22T23:59:59+08:00"))
    assert room.day == MONDAY - 1
