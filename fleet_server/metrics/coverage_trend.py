"""Coverage trend over ISO weeks (DOMAIN.md "trend over weeks"): per week, the region's
covered schools, coverage and the schools still needed for the 95% goal, each week
judged exactly as GET /coverage?week= judges it; all weeks from one pass of counts."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, select

from fleet_server.db.registry_schema import regions
from fleet_server.metrics import definitions as d
from fleet_server.metrics.coverage import _region_tree, _schools_in, judge, summary_of
from fleet_server.metrics.coverage_counts import day_counts, trend_in_db

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
    school_rows = _schools_in(conn, county_child)
    first = last_monday - timedelta(weeks=weeks - 1)
    last = last_monday + timedelta(days=6)
    counts = day_counts(conn, school_rows, first, last, policy, in_db=True)
    in_db = trend_in_db(conn, counts, policy) if counts.in_db else {}
    if in_db is None:        # school hours changed without a rebuild: count room_day
        counts, in_db = day_counts(conn, school_rows, first, last, policy), {}
    judged_in_db = set(counts.in_db)
    mondays = [first + timedelta(weeks=i) for i in range(weeks)]
    # The other schools' school days, by week (its Monday), then judged week by week.
    by_week: dict[date, list[tuple]] = {monday: [] for monday in mondays}
    for s in school_rows:
        if s.id in judged_in_db:
            continue
        days_of: dict[date, list[date]] = {monday: [] for monday in mondays}
        for day in counts.school_days.get(s.id, []):
            days_of[day - timedelta(days=day.weekday())].append(day)
        for monday, days in days_of.items():
            by_week[monday].append((s, days))
    rows = []
    for monday in mondays:
        total, covered = in_db.get(monday, (0, 0))
        for s, days in by_week[monday]:
            sc = judge(s, counts, days, policy, week=True, new_style=False)
            total += 1 if sc.school_days else 0
            covered += 1 if sc.school_days and sc.covered else 0
        rows.append({"week": week_label(monday), "from": monday.isoformat(),
                     "to": (monday + timedelta(days=6)).isoformat(),
                     **summary_of(len(school_rows), total, covered, policy), "goal": policy.goal})
    return {
        "region": {k: region[k] for k in ("code", "level", "name_zh", "name_en")},
        "policy": policy.as_dict(),
        "weeks": rows,
        "definitions": {k: d.COVERAGE[k] for k in ("covered_week", "coverage", "gap_schools")}
                       | {"goal": "95% of primary and secondary schools covered (the 2025 work plan)"},
    }
