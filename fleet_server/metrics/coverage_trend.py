"""Coverage trend over ISO weeks (DOMAIN.md "trend over weeks"): per week, the region's
covered schools, coverage and the schools still needed for the 95% goal, each week
judged exactly as GET /coverage?week= judges it; all weeks from one pass of counts."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, select

from fleet_server.db.registry_schema import regions
from fleet_server.metrics import definitions as d
from fleet_server.metrics import coverage_read
from fleet_server.metrics.coverage import _region_tree, _schools_by_id, _schools_in, _tally, judge, summary_of
from fleet_server.metrics.coverage_counts import day_counts
from fleet_server.metrics.coverage_in_db import trend_in_db

MAX_WEEKS = 53


def week_label(monday: date) -> str:
    year, week, _ = monday.isocalendar()
    return f"{year}-W{week:02d}"


def coverage_trend(conn: Connection, region_code: int, last_monday: date, weeks: int, *,
                   policy: d.CoveragePolicy | None = None) -> dict[str, Any] | None:
    """`weeks` ISO weeks ending with the one starting `last_monday`, oldest first."""
    policy = policy or d.CoveragePolicy()
    if conn.execute(select(regions.c.code).where(regions.c.code == region_code)).first() is None:
        return None
    region, _, county_child = _region_tree(conn, region_code)
    first = last_monday - timedelta(weeks=weeks - 1)
    last = last_monday + timedelta(days=6)
    mondays = [first + timedelta(weeks=i) for i in range(weeks)]
    if coverage_read.applies(policy):
        kept, rest = coverage_read.trend(conn, sorted(county_child), first, last, policy)
        school_rows = _schools_by_id(conn, rest) if rest else []
    else:
        kept, school_rows = {}, _schools_in(conn, county_child)
    judged = _judged_weeks(conn, school_rows, first, last, mondays, policy) if school_rows else {}
    n_schools = sum(n for n, _t, _c in _tally(conn, sorted(county_child)).values())
    rows = []
    for monday in mondays:
        total, covered = (a + b for a, b in zip(kept.get(monday, (0, 0)), judged.get(monday, (0, 0))))
        rows.append({"week": week_label(monday), "from": monday.isoformat(),
                     "to": (monday + timedelta(days=6)).isoformat(),
                     **summary_of(n_schools, total, covered, policy), "goal": policy.goal})
    return {
        "region": {k: region[k] for k in ("code", "level", "name_zh", "name_en")},
        "policy": policy.as_dict(),
        "weeks": rows,
        "definitions": {k: d.COVERAGE[k] for k in ("covered_week", "coverage", "gap_schools")}
                       | {"goal": "95% of primary and secondary schools covered (the 2025 work plan)"},
    }


def _judged_weeks(conn: Connection, school_rows: list, first: date, last: date, mondays: list[date],
                  policy: d.CoveragePolicy) -> dict[date, tuple[int, int]]:
    """Per week (its Monday): (schools with a school day that week, covered ones) of these
    schools, judged at request time (in the database on PostgreSQL where it can)."""
    counts = day_counts(conn, school_rows, first, last, policy, in_db=True)
    in_db = trend_in_db(conn, counts, policy) if counts.in_db else {}
    if in_db is None:        # school hours changed without a rebuild: count room_day
        counts, in_db = day_counts(conn, school_rows, first, last, policy), {}
    judged_in_db = set(counts.in_db)
    # The other schools' school days, by week (its Monday), then judged week by week.
    out = {monday: list(in_db.get(monday, (0, 0))) for monday in mondays}
    for s in school_rows:
        if s.id in judged_in_db:
            continue
        days_of: dict[date, list[date]] = {monday: [] for monday in mondays}
        for day in counts.school_days.get(s.id, []):
            days_of[day - timedelta(days=day.weekday())].append(day)
        for monday, days in days_of.items():
            sc = judge(s, counts, days, policy, week=True, new_style=False)
            out[monday][0] += 1 if sc.school_days else 0
            out[monday][1] += 1 if sc.school_days and sc.covered else 0
    return {monday: (v[0], v[1]) for monday, v in out.items()}
