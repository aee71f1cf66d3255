"""Per school and school day, the counts coverage is judged on: teaching spaces,
instrumented spaces, live ones and offline ones (DOMAIN.md "Smart-campus coverage").

A province has ~100,000 instrumented rooms, so rooms are not read one by one. Per school,
the teaching spaces and the rooms with a node all through the period ("whole") come from
the counts the registry keeps (school_spaces, school_node_spans); their live and silent
counts per date from school_cover_day (kept by the rollup job) when delivered_min is on
its grid, else from room_day inside the database; live new-style spaces from
new_style_day. Only rooms whose node came or went during the period (found by index on
the assignments' from_ts and to_ts), and the schools whose school day is not its nominal
length (a daylight-saving change), are judged room by room. On PostgreSQL the schools
with nothing judged room by room are judged inside the database (judge_in_db,
trend_in_db in coverage_in_db.py). Every path gives the figures the room-by-room rule gives (docs/metrics.md
"How coverage is counted at province scale")."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Connection, Integer, Select, and_, cast, false, func, or_, select

from fleet_server.db.metrics_schema import COVER_STEPS, new_style_day, room_day, school_cover_day
from fleet_server.db.registry_schema import (
    calendar_days, device_assignments, rooms, school_node_spans, school_spaces, schools,
)
from fleet_server.metrics.coverage_keep import covers, merge_spans
from fleet_server.metrics import definitions as d
from fleet_server.metrics.schooltime import SchoolHours, dates, school_days

_IN_CHUNK = 500
JUDGE_IN_DB = True       # off: every school judged in Python (tests compare both ways)
_MARGIN_S = 86_400       # > the longest window (win is a SmallInteger of seconds)


@dataclass
class _Room:
    id: int
    new_style: bool
    assigned: list[tuple[int, int | None]] = field(default_factory=list)   # (from_ts, to_ts)
    observed: dict[date, float] = field(default_factory=dict)              # in-school observed s


@dataclass
class DayCounts:
    hours: dict[int, SchoolHours]
    school_days: dict[int, list[date]]
    delivered_min: float
    spaces: dict[int, int] = field(default_factory=dict)       # school -> teaching spaces
    whole: dict[int, int] = field(default_factory=dict)        # school -> spaces with a node all period
    whole_day: dict[tuple[int, date], tuple[int, int]] = field(default_factory=dict)   # -> (live, seen)
    one_by_one: dict[int, list[_Room]] = field(default_factory=dict)
    # school -> new-style teaching space -> dates it was live
    new_style_live: dict[int, dict[int, set[date]]] = field(default_factory=dict)
    # Schools left to judge_in_db (nothing of theirs is judged room by room), the
    # school_cover_day step and the period bounds for it.
    in_db: list[int] = field(default_factory=list)
    step: int | None = None
    t_first: int = 0
    t_last: int = 0

    def day(self, school_id: int, day: date) -> tuple[int, int, int]:
        """(instrumented, live, offline) teaching spaces of the school on `day`."""
        n_whole = self.whole.get(school_id, 0)
        live, seen = self.whole_day.get((school_id, day), (0, 0))
        if school_id not in self.one_by_one:
            return n_whole, live, n_whole - seen
        n_inst, n_live, n_offline = n_whole, live, n_whole - seen
        for room, instrumented, observed_s, need_s in self._judged(school_id, day):
            if instrumented:
                n_inst += 1
                if observed_s >= need_s:
                    n_live += 1
                elif observed_s == 0:
                    n_offline += 1
        return n_inst, n_live, n_offline

    def _judged(self, school_id: int, day: date):
        rooms_ = self.one_by_one.get(school_id)
        if not rooms_:
            return
        t0, t1 = self.hours[school_id].bounds(day)
        need_s = self.delivered_min * (t1 - t0)    # expected windows x window length
        for room in rooms_:
            instrumented = any(f < t1 and (to is None or to > t0) for f, to in room.assigned)
            yield room, instrumented, room.observed.get(day, 0.0), need_s


def _minutes(column):
    return cast(func.substr(column, 1, 2), Integer) * 60 + cast(func.substr(column, 4, 2), Integer)


def _nominal_day_s(s):
    return 60 * (_minutes(s.day_end) - _minutes(s.day_start))


def cover_select(*where) -> Select:
    """school_cover_day rows counted from room_day (grouped by school and date) for the
    room_day rows matching `where`: the rollup job's refresh and migration 0010's backfill.
    The thresholds are the same float expression the room_day path compares with."""
    rd, s = room_day.c, schools.c
    day_s = _nominal_day_s(s)
    obs = rd.in_school_observed_s
    return (select(rd.date, rd.school_id, day_s.label("day_s"), func.count().filter(obs > 0).label("seen"),
                   *(func.count().filter(obs > 0, obs >= (k / 100) * day_s).label(f"live_{k}")
                     for k in COVER_STEPS))
            .select_from(room_day.join(schools, s.id == rd.school_id)).where(*where)
            .group_by(rd.date, rd.school_id, s.day_start, s.day_end))


def cover_step(delivered_min: float) -> int | None:
    """The COVER_STEPS step equal to `delivered_min`, if it is one (school_cover_day
    holds counts for those thresholds only; others are counted from room_day)."""
    k = round(delivered_min * 100)
    return k if k in COVER_STEPS and k / 100 == delivered_min else None


def _cover_live(step: int | None):
    """room_day's in-school seconds against a COVER_STEPS threshold, by the expression
    cover_select counts with (so taking a room out of a count is exact)."""
    if step is None:
        return false()
    rd, s = room_day.c, schools.c
    return rd.in_school_observed_s >= (step / 100) * _nominal_day_s(s)


def _read_cover(conn: Connection, out: DayCounts, step: int, on_days: list[date], in_region) -> bool:
    """Fill out.whole_day from school_cover_day (every room of the school; the rooms that
    are not whole teaching spaces are taken out later, room by room). False, and nothing
    filled, if a school's rows were counted on other school hours than its current ones
    (hours changed without `campusfleet rollup --rebuild`): then room_day is read."""
    c = school_cover_day.c
    found = {}
    lengths: dict[tuple[str, str], int] = {}     # a province has a few school-hours configs
    cols = (c.school_id, c.date, c.day_s, c.seen, c[f"live_{step}"])
    rows: Sequence[Any]
    if isinstance(in_region, list):
        rows = [row for part in _chunks(in_region)
                for row in conn.execute(select(*cols).where(c.date.in_(on_days), c.school_id.in_(part))).all()]
    else:
        rows = conn.execute(select(*cols).where(c.date.in_(on_days), c.school_id.in_(in_region))).all()
    for school_id, day, day_s, seen, live in rows:
        h = out.hours.get(school_id)
        if h is None:
            continue
        nominal = lengths.get((h.day_start, h.day_end))
        if nominal is None:
            nominal = lengths[(h.day_start, h.day_end)] = h.day_s
        if day_s != nominal or nominal <= 0:
            return False
        found[(school_id, day)] = (live, seen)
    out.whole_day.update(found)
    return True


def _take_out(out: DayCounts, row: Any) -> None:
    """Remove one room-day (school_id, date, in_school_observed_s, cover_live) from the
    school_cover_day counts in out.whole_day."""
    if not row.in_school_observed_s > 0:
        return
    key = (row.school_id, row.date)
    live, seen = out.whole_day.get(key, (0, 0))
    out.whole_day[key] = (live - (1 if row.cover_live else 0), seen - 1)


def _hours_of(school_rows: list[Any]) -> dict[int, SchoolHours]:
    """school -> its SchoolHours, one object per distinct set of hours (a province has a
    few), so day_s and bounds are worked out once per set."""
    shared: dict[tuple, SchoolHours] = {}
    out = {}
    for s in school_rows:
        key = (s.timezone, s.day_start, s.day_end, s.weekdays_mask)
        h = shared.get(key)
        if h is None:
            h = shared[key] = SchoolHours(s.id, *key)
        out[s.id] = h
    return out


def _school_days(conn: Connection, hours: dict[int, SchoolHours], first: date, last: date
                 ) -> dict[int, list[date]]:
    """schooltime.school_days for many schools: worked out once per weekday mask for the
    schools without calendar rows of their own in the range (the rule is the same for
    all of them), for the others one by one. Lists are shared: read them, don't change them."""
    c = calendar_days.c
    own = set(conn.execute(select(c.school_id).distinct()
                           .where(c.date.between(first, last), c.school_id.is_not(None))).scalars())
    ask: dict[int, SchoolHours] = {}
    rep_of_mask: dict[int, int] = {}
    for school_id, h in hours.items():
        if school_id in own:
            ask[school_id] = h
        elif h.weekdays_mask not in rep_of_mask:
            rep_of_mask[h.weekdays_mask] = school_id
            ask[school_id] = h
    found = school_days(conn, ask, first, last)
    return {school_id: found[school_id] if school_id in own else found[rep_of_mask[h.weekdays_mask]]
            for school_id, h in hours.items()}


def day_counts(conn: Connection, school_rows: list[Any], first: date, last: date,
               policy: d.CoveragePolicy, *, in_db: bool = False) -> DayCounts:
    """Counts for every school day in [first, last] of the schools in `school_rows`
    (rows with id, county_code and the school-hours columns). in_db: on PostgreSQL, leave
    the schools with nothing to judge room by room to judge_in_db (listed in
    `DayCounts.in_db`; their whole_day and new-style rooms are not read here)."""
    hours = _hours_of(school_rows)
    teaching_days = _school_days(conn, hours, first, last)
    out = DayCounts(hours, teaching_days, policy.delivered_min)
    if not school_rows:
        return out
    span = dates(first, last)
    by_config: dict[tuple[str, str, str], list[int]] = defaultdict(list)    # a province has a few configs
    for s_row in school_rows:
        by_config[(s_row.timezone, s_row.day_start, s_row.day_end)].append(s_row.id)
    t_first, t_last, irregular = None, None, []
    for ids in by_config.values():
        h = hours[ids[0]]
        bounds = [h.bounds(day) for day in span]
        # A node assigned from before the first school day starts to after the last one
        # ends is in its room on every day of the period.
        t_first = bounds[0][0] if t_first is None else min(t_first, bounds[0][0])
        t_last = bounds[-1][1] if t_last is None else max(t_last, bounds[-1][1])
        # A school day that is not its nominal length (a DST change): judged room by
        # room, since the database side counts with the nominal length.
        if any(t1 - t0 != h.day_s for t0, t1 in bounds):
            irregular += ids
    irregular.sort()
    irregular_set = set(irregular)
    on_days = sorted(set().union(*teaching_days.values()))
    counties = sorted({s.county_code for s in school_rows})
    r, a, rd, s = rooms.c, device_assignments.c, room_day.c, schools.c
    in_region = select(schools.c.id).where(s.county_code.in_(counties)).scalar_subquery()
    sp = school_node_spans.c

    if not on_days:
        _read_spaces(conn, out, in_region)
        return out
    assert t_first is not None and t_last is not None     # span has a day
    out.t_first, out.t_last = t_first, t_last
    step = cover_step(policy.delivered_min)

    # Rooms whose node came or went during the period: they have an assignment starting
    # or ending inside it (an index range each), widened by _MARGIN_S before it: a room
    # whose node left just before the first school day can still hold in-school seconds
    # of a window that began before it left; school_cover_day counted it, so it is read
    # here (and, not instrumented, judged so). Every room of an irregular school too.
    lo = t_first - _MARGIN_S
    overlaps = and_(a.from_ts < t_last, or_(a.to_ts.is_(None), a.to_ts > lo))
    moved = or_(and_(a.from_ts > t_first, a.from_ts < t_last), and_(a.to_ts > lo, a.to_ts < t_last))
    candidates = set(conn.execute(select(a.room_id).join(rooms, r.id == a.room_id)
                                  .where(moved, r.school_id.in_(in_region))).scalars())
    if irregular:
        candidates.update(conn.execute(select(a.room_id).join(rooms, r.id == a.room_id)
                                       .where(r.school_id.in_(irregular), r.teaching_space.is_(True), overlaps))
                          .scalars())
    # From the table, also the other rooms that had a node then: school_cover_day counts
    # every room, coverage teaching spaces only, so their room-days are taken out.
    others: dict[int, int] = {}       # room -> school
    if step is not None:
        with_others = sorted(conn.execute(
            select(sp.school_id).distinct().where(sp.teaching_space.is_(False), sp.from_ts < t_last,
                                                  sp.to_ts > lo, sp.school_id.in_(in_region))).scalars())
        for part in _chunks(with_others):
            others.update(conn.execute(select(a.room_id, r.school_id).join(rooms, r.id == a.room_id)
                                       .where(r.teaching_space.is_(False), r.school_id.in_(part), overlaps))
                          .all())
    one_by_one: dict[int, _Room] = {}
    history: dict[int, list[tuple[int, int | None]]] = defaultdict(list)
    flags: dict[int, tuple[int, bool, bool]] = {}
    for part in _chunks(candidates):
        for row in conn.execute(select(a.room_id, r.school_id, r.new_style, r.teaching_space, a.from_ts, a.to_ts)
                                .join(rooms, r.id == a.room_id).where(a.room_id.in_(part))):
            history[row.room_id].append((row.from_ts, row.to_ts))
            flags[row.room_id] = (row.school_id, bool(row.new_style), bool(row.teaching_space))
    for room_id in sorted(history):
        school_id, new_style, teaching = flags[room_id]
        if school_id not in hours:
            continue
        if school_id not in irregular_set and covers(merge_spans(history[room_id]), t_first, t_last):
            continue            # whole: counted in school_node_spans (or, not teaching, in others)
        assigned = [(f, to) for f, to in history[room_id] if f < t_last and (to is None or to > lo)]
        if not assigned:
            continue
        if not teaching:
            if step is not None:
                others[room_id] = school_id
            continue
        room = one_by_one[room_id] = _Room(room_id, new_style, assigned)
        out.one_by_one.setdefault(school_id, []).append(room)

    # Schools judged here (rooms judged one by one or taken out of the counts, irregular
    # days); on PostgreSQL the others are judged inside the database (judge_in_db).
    adjusted = set(out.one_by_one) | set(others.values()) | irregular_set
    read_for: Any      # the schools read here: a list, or the region's subquery
    if in_db and JUDGE_IN_DB and step is not None and conn.dialect.name == "postgresql":
        out.in_db, out.step = sorted(set(hours) - adjusted), step
        read_for = sorted(adjusted & set(hours))
        # Teaching spaces: judge_in_db reads its schools' own; here the others' and those
        # of the schools without a school day in the period (no statement for them).
        _read_spaces(conn, out, sorted(set(read_for).union(k for k, v in teaching_days.items() if not v)))
    else:
        read_for = in_region
        _read_spaces(conn, out, in_region)
    # Whole teaching spaces per school (a node all period: school_node_spans), and their
    # live and silent counts per school-day (school_cover_day, else room_day).
    sp_where = (sp.teaching_space.is_(True), sp.from_ts <= t_first, sp.to_ts >= t_last)
    for part in ([read_for] if not isinstance(read_for, list) else _chunks(read_for)):
        for school_id, n in conn.execute(select(sp.school_id, func.sum(sp.rooms))
                                         .where(*sp_where, sp.school_id.in_(part)).group_by(sp.school_id)):
            if school_id not in irregular_set:
                out.whole[school_id] = int(n)
    from_table = step is not None and _read_cover(conn, out, step, on_days, read_for)
    if not from_table:
        out.in_db, out.step = [], None
        out.whole_day.clear()
        if isinstance(read_for, list):       # the database's side is off: every school here
            _read_spaces(conn, out, in_region)
            for school_id, n in conn.execute(select(sp.school_id, func.sum(sp.rooms))
                                             .where(*sp_where, sp.school_id.in_(in_region))
                                             .group_by(sp.school_id)):
                if school_id not in irregular_set:
                    out.whole[school_id] = int(n)
        _count_room_day(conn, out, policy, counties, on_days)
        step = None
        others.clear()
    ids = sorted(set(others).union(one_by_one))
    for i in range(0, len(ids), _IN_CHUNK):
        for day_row in conn.execute(select(rd.room_id, rd.date, rd.in_school_observed_s, rd.school_id,
                                           _live_expr(step, policy.delivered_min).label("cover_live"))
                                    .select_from(room_day.join(schools, s.id == rd.school_id))
                                    .where(rd.room_id.in_(ids[i:i + _IN_CHUNK]), rd.date.in_(on_days),
                                           rd.school_id.in_(in_region))):
            if day_row.room_id in one_by_one:
                one_by_one[day_row.room_id].observed[day_row.date] = day_row.in_school_observed_s
            _take_out(out, day_row)

    # Live new-style spaces: the whole ones from new_style_day (room_day's rows of the
    # new-style teaching spaces, ~5,000 a school day for a province), compared here with
    # the threshold the database would compute (delivered_min x the nominal day); every
    # such room with in-school seconds in the period is whole or judged one by one.
    in_db_set = set(out.in_db)
    need_of: dict[int, float] = {}
    for school_id in (hours if not in_db_set else adjusted):
        if school_id in hours and school_id not in irregular_set and school_id not in in_db_set:
            need_of[school_id] = policy.delivered_min * hours[school_id].day_s
    if need_of:
        nd = new_style_day.c
        floor = min(need_of.values())
        for part in ([in_region] if not in_db_set else _chunks(need_of)):
            for room_id, school_id, day, observed_s in conn.execute(
                    select(nd.room_id, nd.school_id, nd.date, nd.in_school_observed_s)
                    .where(nd.date.in_(on_days), nd.school_id.in_(part), nd.in_school_observed_s >= floor)):
                need = need_of.get(school_id)
                if need is None or room_id in one_by_one or observed_s < need:
                    continue
                out.new_style_live.setdefault(school_id, {}).setdefault(room_id, set()).add(day)
    for school_id, rooms_ in out.one_by_one.items():
        for day in teaching_days.get(school_id, []):
            for room, instrumented, observed_s, need in out._judged(school_id, day):
                if room.new_style and instrumented and observed_s >= need:
                    out.new_style_live.setdefault(school_id, {}).setdefault(room.id, set()).add(day)
    return out


def _read_spaces(conn: Connection, out: DayCounts, school_ids) -> None:
    """out.spaces for these schools (a list, or a subquery) from school_spaces."""
    c = school_spaces.c
    for part in _chunks(school_ids) if isinstance(school_ids, list) else [school_ids]:
        out.spaces.update(conn.execute(select(c.school_id, c.teaching_spaces).where(c.school_id.in_(part))).all())


def _chunks(values, size: int = _IN_CHUNK):
    ordered = sorted(values)
    for i in range(0, len(ordered), size):
        yield ordered[i:i + size]


def _count_room_day(conn: Connection, out: DayCounts, policy: d.CoveragePolicy, counties: list[int],
                    on_days: list[date]) -> None:
    """Fill out.whole_day by counting room_day inside the database (delivered_min off the
    school_cover_day grid, or school hours changed without a rebuild): every teaching
    space's room-days per school and date; the rooms that are not whole are taken out
    later, room by room, as from school_cover_day."""
    r, rd, s = rooms.c, room_day.c, schools.c
    # Each school's threshold once, not per room-day row: MATERIALIZED keeps the planner
    # from folding the string arithmetic back into the per-row filter.
    need = (select(s.id, (policy.delivered_min * _nominal_day_s(s)).label("need_s"))
            .where(s.county_code.in_(counties)).cte("school_need").prefix_with("MATERIALIZED"))
    live = rd.in_school_observed_s >= need.c.need_s
    for row in conn.execute(select(rd.school_id, rd.date, func.count().filter(live),
                                   func.count().filter(rd.in_school_observed_s > 0))
                            .select_from(room_day.join(rooms, r.id == rd.room_id)
                                         .join(need, need.c.id == rd.school_id))
                            .where(rd.date.in_(on_days), r.teaching_space.is_(True))
                            .group_by(rd.school_id, rd.date)):
        out.whole_day[(row[0], row[1])] = (row[2], row[3])


def _live_expr(step: int | None, delivered_min: float):
    """room_day's in-school seconds against the threshold whole_day was counted with: the
    COVER_STEPS column's expression (school_cover_day), else delivered_min's (room_day)."""
    if step is not None:
        return _cover_live(step)
    return room_day.c.in_school_observed_s >= delivered_min * _nominal_day_s(schools.c)
