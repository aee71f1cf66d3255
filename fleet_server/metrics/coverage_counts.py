"""Per school and school day, the counts coverage is judged on: teaching spaces,
instrumented spaces, live ones and offline ones (DOMAIN.md "Smart-campus coverage").

A province has ~100,000 instrumented rooms, so rooms are not read one by one. Rooms with
a node assigned throughout the period are counted per school and date: from
school_cover_day (kept by the rollup job; the rooms that are not such teaching spaces are
taken out of its counts) when delivered_min is on its grid, else inside the database from
room_day. Only rooms whose node came or went during the period (and the schools whose
school day is not its nominal length, on a daylight-saving change) are judged room by
room, by the same rule. Every path gives the figures the room-by-room rule gives
(docs/metrics.md "Coverage counts")."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Connection, Integer, Select, and_, cast, exists, false, func, or_, select

from fleet_server.db.metrics_schema import COVER_STEPS, room_day, school_cover_day
from fleet_server.db.registry_schema import device_assignments, rooms, schools
from fleet_server.metrics import definitions as d
from fleet_server.metrics.schooltime import SchoolHours, dates, school_days

_IN_CHUNK = 500
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
    for school_id, day, day_s, seen, live in conn.execute(
            select(c.school_id, c.date, c.day_s, c.seen, c[f"live_{step}"])
            .where(c.date.in_(on_days), c.school_id.in_(in_region))).all():
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


def day_counts(conn: Connection, school_rows: list[Any], first: date, last: date,
               policy: d.CoveragePolicy) -> DayCounts:
    """Counts for every school day in [first, last] of the schools in `school_rows`
    (rows with id, county_code and the school-hours columns)."""
    hours = {s.id: SchoolHours(s.id, s.timezone, s.day_start, s.day_end, s.weekdays_mask) for s in school_rows}
    teaching_days = school_days(conn, hours, first, last)
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
    on_days = sorted(set().union(*teaching_days.values()))
    counties = sorted({s.county_code for s in school_rows})
    r, a, rd, s = rooms.c, device_assignments.c, room_day.c, schools.c
    in_region = select(schools.c.id).where(s.county_code.in_(counties)).scalar_subquery()
    # Correlated EXISTS: a county probes the assignments of its own rooms by index, a
    # province gets a semi-join; an uncorrelated IN would read every assignment.
    a2 = device_assignments.alias("whole")

    def whole_for(room_id):
        return exists().where(a2.c.room_id == room_id, a2.c.from_ts <= t_first,
                              or_(a2.c.to_ts.is_(None), a2.c.to_ts >= t_last))
    is_whole = and_(whole_for(r.id), r.school_id.not_in(irregular)) if irregular else whole_for(r.id)

    for row in conn.execute(select(r.school_id, func.count(), func.count().filter(is_whole))
                            .where(r.teaching_space.is_(True), r.school_id.in_(in_region))
                            .group_by(r.school_id)):
        out.spaces[row[0]], out.whole[row[0]] = row[1], row[2]
    if not on_days:
        return out

    # Each school's threshold once, not per room-day row: MATERIALIZED keeps the planner
    # from folding the string arithmetic back into the per-row filter.
    need = (select(s.id, (policy.delivered_min * (60 * (_minutes(s.day_end) - _minutes(s.day_start))))
                   .label("need_s")).where(s.county_code.in_(counties))
            .cte("school_need").prefix_with("MATERIALIZED"))
    live = rd.in_school_observed_s >= need.c.need_s
    from_whole = room_day.join(rooms, r.id == rd.room_id).join(need, need.c.id == r.school_id)
    where = (rd.date.in_(on_days), rd.school_id.in_(select(need.c.id)), r.teaching_space.is_(True), is_whole)
    step = cover_step(policy.delivered_min)
    from_table = step is not None and _read_cover(conn, out, step, on_days, in_region)
    if not from_table:
        for row in conn.execute(select(r.school_id, rd.date, func.count().filter(live),
                                       func.count().filter(rd.in_school_observed_s != 0))
                                .select_from(from_whole).where(*where).group_by(r.school_id, rd.date)):
            out.whole_day[(row[0], row[1])] = (row[2], row[3])
    # New-style whole teaching spaces first (a few thousand in a province), then their
    # room-days in one read; the threshold is the database's need_s, compared here as the
    # database compares it, and room_day's school_id is checked here too (in the query
    # it would make the planner join every room-day of the region).
    new_style = (select(r.id, r.school_id, need.c.need_s).join(need, need.c.id == r.school_id)
                 .where(r.new_style.is_(True), r.teaching_space.is_(True), is_whole)
                 .cte("new_style_whole").prefix_with("MATERIALIZED"))
    for school_id, room_id, day, day_school in conn.execute(
            select(new_style.c.school_id, new_style.c.id, rd.date, rd.school_id)
            .select_from(new_style.join(room_day, rd.room_id == new_style.c.id))
            .where(rd.date.in_(on_days), rd.in_school_observed_s >= new_style.c.need_s)).all():
        if day_school in hours:
            out.new_style_live.setdefault(school_id, {}).setdefault(room_id, set()).add(day)

    # Rooms whose node came or went during the period, and every room of an irregular school.
    one_by_one: dict[int, _Room] = {}
    # Widened by _MARGIN_S before the period: a room whose node left just before the first
    # school day can still hold in-school seconds of a window that began before it left;
    # school_cover_day counted it, so it is read here (and, not instrumented, judged so).
    overlaps = and_(a.from_ts < t_last, or_(a.to_ts.is_(None), a.to_ts > t_first - _MARGIN_S))
    rest = or_(~whole_for(a.room_id), r.school_id.in_(irregular)) if irregular else ~whole_for(a.room_id)
    # From the table, also the other rooms that had a node then: school_cover_day counts
    # every room, coverage teaching spaces only, so their room-days are taken out.
    others: set[int] = set()
    if from_table:
        others.update(conn.execute(select(a.room_id).join(rooms, r.id == a.room_id)
                                   .where(r.teaching_space.is_(False), r.school_id.in_(in_region), overlaps))
                      .scalars())
    for row in conn.execute(select(a.room_id, r.school_id, r.new_style, a.from_ts, a.to_ts)
                            .join(rooms, r.id == a.room_id)
                            .where(r.teaching_space.is_(True), r.school_id.in_(in_region), overlaps, rest)):
        room = one_by_one.get(row.room_id)
        if room is None:
            room = one_by_one[row.room_id] = _Room(row.room_id, row.new_style)
            out.one_by_one.setdefault(row.school_id, []).append(room)
        room.assigned.append((row.from_ts, row.to_ts))
    ids = sorted(others.union(one_by_one))
    for i in range(0, len(ids), _IN_CHUNK):
        for row in conn.execute(select(rd.room_id, rd.date, rd.in_school_observed_s, rd.school_id,
                                       _cover_live(step).label("cover_live"))
                                .select_from(room_day.join(schools, s.id == rd.school_id))
                                .where(rd.room_id.in_(ids[i:i + _IN_CHUNK]), rd.date.in_(on_days),
                                       rd.school_id.in_(in_region))):
            if row.room_id in one_by_one:
                one_by_one[row.room_id].observed[row.date] = row.in_school_observed_s
            if from_table:
                _take_out(out, row)
    for school_id, rooms_ in out.one_by_one.items():
        for day in teaching_days.get(school_id, []):
            for room, instrumented, observed_s, need in out._judged(school_id, day):
                if room.new_style and instrumented and observed_s >= need:
                    out.new_style_live.setdefault(school_id, {}).setdefault(room.id, set()).add(day)
    return out
