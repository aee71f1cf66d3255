"""Coverage kept per school and school day (docs/metrics.md "Kept coverage days").

A province's coverage over a day, a week or twelve weeks judges ~6,000 schools; judging
them at request time costs a second or more. So each school's school days are judged
ahead, with the same counts and rules the request-time path uses (coverage_counts.day_counts
at the default delivered_min): per school day the teaching spaces, instrumented, live and
offline ones (`coverage_day`) and the live new-style teaching spaces (`coverage_new_style`).
`coverage_kept` says over which dates a school's rows are complete; a report reads the
schools kept over its whole period from the table (coverage_read.py) and judges the
others as before.

What keeps the rows right:
- the keeper (keep_coverage, run by the rollup job after each pass) counts every school
  from BEFORE_WEEKS before the first week with data to AHEAD_DAYS after today, and
  extends the range as the days go by (and back, if older data arrives);
- the rollup job counts again, in its own transaction, the kept school-days it added
  windows to (refresh_days);
- a registry change that can change a school's figures (a node assigned or moved, rooms
  or the school's hours imported, calendar days imported) forgets the school (forget): its
  rows and range are dropped in the writer's transaction, so reports judge it at request
  time until the keeper has counted it again;
- `campusfleet rollup --rebuild` forgets every school.

Counting a school takes its coverage lock (PostgreSQL advisory lock, as
coverage_keep.refresh_schools) before reading, so a count never commits figures older than
a concurrent rollup or registry change; on SQLite the first write takes the database's
write lock before anything is read."""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, or_, select

from fleet_server.db.metrics_schema import (
    NEW_STYLE_DAYS, coverage_day, coverage_kept, coverage_new_style, coverage_week, school_cover_day,
)
from fleet_server.db.registry_schema import SCHOOL_TIMEZONE, schools
from fleet_server.metrics import definitions as d
from fleet_server.metrics.coverage import REASONS, _schools_by_id, judge_day
from fleet_server.metrics.coverage_counts import day_counts
from fleet_server.metrics.coverage_keep import _chunks, _lock_schools
from fleet_server.metrics.schooltime import zone

# The policy the rows are judged with (coverage_read.applies: a report asking other
# delivered_min or share values is judged at request time; week_min_days and the goals
# are applied when reading).
KEPT_POLICY = d.CoveragePolicy()
AHEAD_DAYS = 13          # today's ISO week and the next are always kept
# Kept from this many weeks before the first week with data, so the default trend of a
# new deployment (its first weeks, and the empty ones before) reads kept rows too.
BEFORE_WEEKS = d.TREND_WEEKS - 1
# Schools counted per transaction. On SQLite the transaction holds the database's one
# write lock while it counts (ingest's commits wait), so it is kept short there.
CHUNK_SCHOOLS = {"postgresql": 100, "sqlite": 20}
PIECE_DAYS = 28          # days counted per pass (see count_rows)
_KEPT_TABLES = (coverage_kept, coverage_day, coverage_week, coverage_new_style)


def school_today(now_s: float | None = None) -> date:
    return datetime.fromtimestamp(time.time() if now_s is None else now_s, zone(SCHOOL_TIMEZONE)).date()


def count_rows(conn: Connection, school_rows: list[Any], first: date, last: date
               ) -> tuple[list[dict], list[dict]]:
    """coverage_day and coverage_new_style rows of these schools' school days in
    [first, last], counted and judged as the request-time path counts and judges them
    (coverage_counts.day_counts, coverage.judge_day) at the kept policy."""
    days_out: list[dict] = []
    ns_out: list[dict] = []
    # In pieces of PIECE_DAYS: over a long range most rooms see a node come or go, and
    # those are judged room by room (coverage_counts.day_counts).
    while school_rows and first <= last:
        piece_last = min(last, first + timedelta(days=PIECE_DAYS - 1))
        _count_piece(conn, school_rows, first, piece_last, days_out, ns_out)
        first = piece_last + timedelta(days=1)
    return days_out, ns_out


def _count_piece(conn: Connection, school_rows: list[Any], first: date, last: date, days_out: list[dict],
                 ns_out: list[dict]) -> None:
    counts = day_counts(conn, school_rows, first, last, KEPT_POLICY)
    for s in school_rows:
        days = counts.school_days.get(s.id, [])
        spaces = counts.spaces.get(s.id, 0)
        live_ns: dict[date, int] = defaultdict(int)
        wanted = set(days)
        for room_id, live_days in counts.new_style_live.get(s.id, {}).items():
            for day in sorted(live_days & wanted):
                ns_out.append({"date": day, "school_id": s.id, "room_id": room_id})
                live_ns[day] += 1
        for day in days:
            inst, live, offline = counts.day(s.id, day)
            inst_share, live_share, reason = judge_day(spaces, inst, live, offline, KEPT_POLICY)
            days_out.append({"date": day, "school_id": s.id, "spaces": spaces, "instrumented": inst, "live": live,
                             "offline": offline, "inst_share": inst_share, "live_share": live_share,
                             "reason": 0 if reason is None else REASONS.index(reason) + 1,
                             "live_new_style": live_ns.get(day, 0)})


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def week_rows(day_rows: list[Any], ns_rows: list[Any]) -> list[dict]:
    """coverage_week rows from coverage_day rows (of whole weeks) and the new-style
    (school_id, date, room_id) rows of the same weeks: the days summed in date order, as
    coverage.judge sums a week's shares."""
    live_days: dict[tuple[int, date], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for school_id, day, room_id in ns_rows:
        live_days[(school_id, _monday(day))][room_id] += 1
    weeks: dict[tuple[int, date], dict] = {}
    for r in sorted(day_rows, key=lambda r: (r.school_id, r.date)):
        key = (r.school_id, _monday(r.date))
        w = weeks.get(key)
        if w is None:
            w = weeks[key] = {"monday": key[1], "school_id": r.school_id, "spaces": r.spaces, "days": 0,
                              "covered_days": 0, "inst_share_sum": 0.0, "live_share_sum": 0.0,
                              **{f"reason_{i}_days": 0 for i in (1, 2, 3)}}
        w["days"] += 1
        w["inst_share_sum"] += r.inst_share
        w["live_share_sum"] += r.live_share
        if r.reason == 0:
            w["covered_days"] += 1
        else:
            w[f"reason_{r.reason}_days"] += 1
    for key, w in weeks.items():
        per_room = live_days.get(key, {}).values()
        w.update({f"live_ns_{k}": sum(1 for n in per_room if n >= k) for k in NEW_STYLE_DAYS})
    return list(weeks.values())


def _replace(conn: Connection, ids: list[int], first: date, last: date, rows: list[dict], ns: list[dict]) -> None:
    """These schools' rows in [first, last] replaced; then their weeks touching it counted
    again from the day rows of those whole weeks."""
    for table in (coverage_day, coverage_new_style):
        for part in _chunks(ids):
            conn.execute(table.delete().where(table.c.school_id.in_(part), table.c.date.between(first, last)))
    if rows:
        conn.execute(insert(coverage_day), rows)
    if ns:
        conn.execute(insert(coverage_new_style), ns)
    w_first, w_last = _monday(first), _monday(last) + timedelta(days=6)
    c, n, w = coverage_day.c, coverage_new_style.c, coverage_week.c
    for part in _chunks(ids):
        day_rows = conn.execute(select(c.school_id, c.date, c.spaces, c.inst_share, c.live_share, c.reason)
                                .where(c.school_id.in_(part), c.date.between(w_first, w_last))).all()
        ns_rows = conn.execute(select(n.school_id, n.date, n.room_id)
                               .where(n.school_id.in_(part), n.date.between(w_first, w_last))).all()
        conn.execute(coverage_week.delete().where(w.school_id.in_(part), w.monday.between(w_first, w_last)))
        weeks = week_rows(day_rows, ns_rows)
        if weeks:
            conn.execute(insert(coverage_week), weeks)


def forget(conn: Connection, school_ids: Iterable[int] | None = None) -> None:
    """Drop these schools' kept coverage (None: every school's), in the caller's
    transaction: reports judge them at request time until the keeper counts them again."""
    if school_ids is None:
        for table in _KEPT_TABLES:
            conn.execute(table.delete())
        return
    ids = sorted({int(i) for i in school_ids if i is not None})
    for part in _chunks(ids):
        for table in _KEPT_TABLES:
            conn.execute(table.delete().where(table.c.school_id.in_(part)))


def refresh_days(conn: Connection, keys: Iterable[tuple[int, date]]) -> None:
    """Count again the kept (school_id, date) keys, in the caller's transaction (the
    rollup job's, after its room_day and school_cover_day changes). Keys outside a
    school's kept range are left to the keeper."""
    by_school: dict[int, list[date]] = defaultdict(list)
    for school_id, day in keys:
        by_school[school_id].append(day)
    if not by_school:
        return
    _lock_schools(conn, sorted(by_school))
    k = coverage_kept.c
    kept: dict[int, tuple[date, date]] = {}
    for part in _chunks(by_school):
        kept.update((r.school_id, (r.kept_from, r.kept_to))
                    for r in conn.execute(select(k.school_id, k.kept_from, k.kept_to).where(k.school_id.in_(part))))
    # Schools sharing the clipped range are counted together (a rollup pass usually
    # touches one date for many schools).
    groups: dict[tuple[date, date], list[int]] = defaultdict(list)
    for school_id, days in by_school.items():
        if school_id not in kept:
            continue
        lo, hi = max(min(days), kept[school_id][0]), min(max(days), kept[school_id][1])
        if lo <= hi:
            groups[(lo, hi)].append(school_id)
    for (lo, hi), ids in groups.items():
        rows, ns = count_rows(conn, _schools_by_id(conn, ids), lo, hi)
        _replace(conn, ids, lo, hi, rows, ns)


def _first_kept_day(conn: Connection, today: date) -> date:
    """The Monday BEFORE_WEEKS weeks before the first week with data (or this week)."""
    first = conn.execute(select(func.min(school_cover_day.c.date))).scalar()
    first = min(first, today) if first is not None else today
    return first - timedelta(days=first.weekday(), weeks=BEFORE_WEEKS)


def _keep_chunk(conn: Connection, ids: list[int], want_from: date, want_to: date) -> int:
    """Count what these schools miss of [want_from, want_to]; the number counted."""
    _lock_schools(conn, ids)
    k = coverage_kept.c
    kept = {r.school_id: (r.kept_from, r.kept_to)
            for r in conn.execute(select(k.school_id, k.kept_from, k.kept_to).where(k.school_id.in_(ids)))}
    # The write lock on SQLite (before anything is counted), and the new ranges.
    conn.execute(coverage_kept.delete().where(k.school_id.in_(ids)))
    parts: dict[tuple[date, date], list[int]] = defaultdict(list)
    ranges = {}
    afresh = []
    for school_id in ids:
        old = kept.get(school_id)
        if old is None or old[1] < want_from - timedelta(days=1) or old[0] > want_to:
            afresh.append(school_id)           # nothing usable kept: counted from nothing
            parts[(want_from, want_to)].append(school_id)
            ranges[school_id] = (want_from, want_to)
            continue
        if want_from < old[0]:
            parts[(want_from, old[0] - timedelta(days=1))].append(school_id)
        if old[1] < want_to:
            parts[(old[1] + timedelta(days=1), want_to)].append(school_id)
        ranges[school_id] = (min(old[0], want_from), max(old[1], want_to))
    for table in _KEPT_TABLES[1:]:
        conn.execute(table.delete().where(table.c.school_id.in_(afresh)))
    rows_by_id = {r.id: r for r in _schools_by_id(conn, ids)}
    for (lo, hi), part_ids in parts.items():
        present = [rows_by_id[i] for i in part_ids if i in rows_by_id]
        rows, ns = count_rows(conn, present, lo, hi)
        _replace(conn, part_ids, lo, hi, rows, ns)
    conn.execute(insert(coverage_kept), [{"school_id": i, "kept_from": ranges[i][0], "kept_to": ranges[i][1]}
                                         for i in ids if i in rows_by_id])
    return len(rows_by_id)


def keep_coverage(engine: Engine, *, today: date | None = None, budget_s: float | None = None,
                  should_stop=lambda: False) -> int:
    """Count every school not kept over [_first_kept_day, today + AHEAD_DAYS], in
    transactions of CHUNK_SCHOOLS schools, until done or `budget_s` has passed (the next
    run goes on). Returns the number of schools counted."""
    t0 = time.monotonic()
    today = today or school_today()
    with engine.connect() as conn:
        want_from, want_to = _first_kept_day(conn, today), today + timedelta(days=AHEAD_DAYS)
        s, k = schools.c, coverage_kept.c
        todo = sorted(conn.execute(
            select(s.id).select_from(schools.outerjoin(coverage_kept, k.school_id == s.id))
            .where(or_(k.school_id.is_(None), k.kept_from > want_from, k.kept_to < want_to))).scalars())
    done = 0
    chunk = CHUNK_SCHOOLS.get(engine.dialect.name, 20)
    for i in range(0, len(todo), chunk):
        with engine.begin() as conn:
            done += _keep_chunk(conn, todo[i:i + chunk], want_from, want_to)
        if should_stop() or (budget_s is not None and time.monotonic() - t0 > budget_s):
            break
    return done


__all__ = ["AHEAD_DAYS", "KEPT_POLICY", "count_rows", "forget", "keep_coverage", "refresh_days",
           "school_today"]
