"""Judging coverage inside the database (PostgreSQL): for the schools of
DayCounts.in_db (whole teaching spaces only: no room judged one by one, nothing taken out
of school_cover_day, regular days), per school and school day: instrumented = whole,
live = school_cover_day's live_<step> (0 without a row), offline = whole - seen; the
shares and the covered-day test are the float expressions coverage.judge_day evaluates
(float8 division of the same integers, compared with the same parameters). Schools are
sent in groups sharing their school days and nominal day length
(docs/metrics.md "How coverage is counted at province scale")."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Connection, text

from fleet_server.metrics import definitions as d
from fleet_server.metrics.coverage_counts import DayCounts

_PER_DAY_SQL = """
WITH sch AS (SELECT unnest(CAST(:ids AS integer[])) AS id),
w AS (SELECT n.school_id, sum(n.rooms) AS n FROM school_node_spans n JOIN sch ON sch.id = n.school_id
      WHERE n.teaching_space AND n.from_ts <= :t_first AND n.to_ts >= :t_last
      GROUP BY n.school_id),
b AS (SELECT sch.id, COALESCE(sp.teaching_spaces, 0) AS spaces, COALESCE(w.n, 0) AS whole
      FROM sch LEFT JOIN school_spaces sp ON sp.school_id = sch.id LEFT JOIN w ON w.school_id = sch.id),
cv AS (SELECT c.school_id, c.date, c.{live} AS live, c.seen, c.day_s FROM school_cover_day c
       JOIN sch ON sch.id = c.school_id WHERE c.date = ANY(CAST(:days AS date[]))),
p AS (SELECT b.id, b.spaces, b.whole, d.date, COALESCE(c.live, 0) AS live, COALESCE(c.seen, 0) AS seen,
             d.i, (c.day_s IS NOT NULL AND (c.day_s <> :nominal OR :nominal <= 0)) AS stale,
             (CASE WHEN b.spaces > 0 THEN CAST(b.whole AS float8) / b.spaces ELSE 0.0 END) >= :imin
             AND (CASE WHEN b.whole > 0 THEN CAST(COALESCE(c.live, 0) AS float8) / b.whole ELSE 0.0 END) >= :lmin
               AS covered
      FROM b CROSS JOIN unnest(CAST(:days AS date[])) WITH ORDINALITY AS d(date, i)
      LEFT JOIN cv c ON c.school_id = b.id AND c.date = d.date)
"""
_JUDGE_SQL = _PER_DAY_SQL + """,
ns AS (SELECT x.school_id, count(*) AS n FROM (
         SELECT v.school_id, v.room_id FROM new_style_day v JOIN sch ON sch.id = v.school_id
         WHERE v.date = ANY(CAST(:days AS date[])) AND v.in_school_observed_s >= :need
         GROUP BY v.school_id, v.room_id HAVING count(*) >= :ns_days) x
       GROUP BY x.school_id)
SELECT p.id, min(p.spaces), min(p.whole), count(*) FILTER (WHERE p.covered),
       CASE WHEN count(*) FILTER (WHERE p.covered) >= :arrays_below THEN NULL
            ELSE array_agg(ARRAY[p.i, p.live, p.seen]) END,
       bool_or(p.stale), COALESCE(min(ns.n), 0)
FROM p LEFT JOIN ns ON ns.school_id = p.id GROUP BY p.id
"""
_TREND_SQL = _PER_DAY_SQL + """,
pw AS (SELECT id, date - (CAST(EXTRACT(ISODOW FROM date) AS integer) - 1) AS monday, count(*) AS n,
              count(*) FILTER (WHERE covered) AS c, bool_or(stale) AS stale
       FROM p GROUP BY id, monday)
SELECT monday, count(*), count(*) FILTER (WHERE c >= least(:min_days, n)), bool_or(stale) FROM pw GROUP BY monday
"""


@dataclass(slots=True)
class Judged:
    """One school's figures from the database: its teaching spaces, whole ones, covered
    days, and per school day (day number, live, seen) of its whole teaching spaces."""
    spaces: int
    whole: int
    covered_days: int
    days: list[list[int]]
    live_new_style: int

    def per_day(self):
        """(instrumented, live, offline) per school day in date order, as DayCounts.day
        gives them."""
        whole = self.whole
        return [(whole, live, whole - seen) for _i, live, seen in sorted(self.days)]


def _groups(counts: DayCounts) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = defaultdict(list)
    keys: dict[tuple[int, int], tuple] = {}     # (id of the days list, id of the hours) -> group
    for school_id in counts.in_db:
        days, h = counts.school_days.get(school_id, []), counts.hours[school_id]
        key = keys.get((id(days), id(h)))
        if key is None:
            key = keys[(id(days), id(h))] = (tuple(days), h.day_s)
        groups[key].append(school_id)
    return groups


def _params(counts: DayCounts, policy: d.CoveragePolicy, ids: list[int], days: tuple, nominal: int) -> dict:
    return {"ids": ids, "days": list(days), "t_first": counts.t_first, "t_last": counts.t_last,
            "nominal": nominal, "imin": policy.instrumented_share_min, "lmin": policy.live_share_min}


def judge_in_db(conn: Connection, counts: DayCounts, policy: d.CoveragePolicy, week: bool, *,
                full: bool = False) -> dict[int, Judged] | None:
    """Figures for the schools of counts.in_db; None if a school's school_cover_day rows
    were counted on other school hours than its current ones (then count again without
    in_db: room_day is read, as _read_cover does). The per-day counts come for the
    schools not covered only, unless `full`."""
    out: dict[int, Judged] = {}
    sql = text(_JUDGE_SQL.format(live=f"live_{counts.step}"))
    for (days, nominal), ids in _groups(counts).items():
        if not days:
            for school_id in ids:
                out[school_id] = Judged(counts.spaces.get(school_id, 0), 0, 0, [], 0)
            continue
        required = min(policy.week_min_days, len(days)) if week else len(days)
        params = _params(counts, policy, ids, days, nominal) | {
            "need": policy.delivered_min * nominal, "ns_days": max(1, required if week else 1),
            "arrays_below": len(days) + 1 if full else required}
        for school_id, spaces, whole, covered, per_day, stale, ns in conn.execute(sql, params).all():
            if stale:
                return None
            out[school_id] = Judged(spaces, int(whole), covered, per_day or [], ns)
    return out


def trend_in_db(conn: Connection, counts: DayCounts, policy: d.CoveragePolicy
                ) -> dict[date, tuple[int, int]] | None:
    """Per ISO week (its Monday): (schools with a school day that week, covered schools)
    over the schools of counts.in_db; None as judge_in_db."""
    out: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    sql = text(_TREND_SQL.format(live=f"live_{counts.step}"))
    for (days, nominal), ids in _groups(counts).items():
        if not days:
            continue
        params = _params(counts, policy, ids, days, nominal) | {"min_days": policy.week_min_days}
        for monday, n, covered, stale in conn.execute(sql, params):
            if stale:
                return None
            out[monday][0] += n
            out[monday][1] += covered
    return {k: (v[0], v[1]) for k, v in out.items()}
