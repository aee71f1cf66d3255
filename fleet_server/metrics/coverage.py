"""Smart-campus coverage (DOMAIN.md "Smart-campus coverage"): per school per school day,
the instrumented share and the live share of its teaching spaces; covered days, covered
weeks, coverage per region and child region against the 95% goal, why each uncovered
school is not covered, and live new-style teaching spaces against the 1000 goal."""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

from sqlalchemy import Connection, func, select

from fleet_server.db.registry_schema import regions, schools
from fleet_server.metrics import coverage_read
from fleet_server.metrics import definitions as d
from fleet_server.metrics.coverage_counts import DayCounts, day_counts
from fleet_server.metrics.coverage_in_db import Judged, judge_in_db

REASONS = ("not_enough_rooms_instrumented", "nodes_offline", "data_gaps")


@dataclass
class SchoolCoverage:
    id: int
    code: str
    name: str
    county_code: int
    teaching_spaces: int = 0
    school_days: int = 0
    covered_days: int = 0
    covered: bool = False
    reasons: dict[str, int] = field(default_factory=dict)     # reason -> uncovered days
    # Instrumented and live shares summed over the school days, in date order (the kept
    # weeks sum them in the same order, so both give the same floats).
    share_days: int = 0
    inst_share_sum: float = 0.0
    live_share_sum: float = 0.0
    live_new_style: int = 0

    def reason(self) -> str | None:
        if self.covered or not self.reasons:
            return None
        top = max(self.reasons.values())
        return next(r for r in REASONS if self.reasons.get(r, 0) == top)


def _region_tree(conn: Connection, region_code: int) -> tuple[dict, list[dict], dict[int, int | None]]:
    """(the region, its child regions, county code -> the child it falls under)."""
    all_regions = {r.code: dict(r._mapping) for r in conn.execute(select(regions))}
    region = all_regions[region_code]
    children = sorted((r for r in all_regions.values() if r["parent_code"] == region_code), key=lambda r: r["code"])
    county_child: dict[int, int | None] = {}
    for r in all_regions.values():
        if r["level"] != "county":
            continue
        chain, code = [], r["code"]
        while code is not None:
            chain.append(code)
            code = all_regions[code]["parent_code"] if code in all_regions else None
        if region_code in chain:
            i = chain.index(region_code)
            county_child[r["code"]] = chain[i - 1] if i > 0 else None
    return region, children, county_child


class SchoolRow(NamedTuple):
    """A school as coverage reads it (a plain tuple: 6,000 of them per province view)."""
    id: int
    code: str
    name: str
    county_code: int
    timezone: str
    day_start: str
    day_end: str
    weekdays_mask: int


def _schools_in(conn: Connection, county_child: dict[int, int | None]) -> list[SchoolRow]:
    s = schools.c
    return [SchoolRow(*r) for r in conn.execute(
        select(s.id, s.code, s.name, s.county_code, s.timezone, s.day_start, s.day_end, s.weekdays_mask)
        .where(s.county_code.in_(sorted(county_child))).order_by(s.code))]


def _days_short(s: SchoolCoverage, policy: d.CoveragePolicy) -> int:
    return max(0, min(policy.week_min_days, s.school_days) - s.covered_days)


def _evaluate(conn: Connection, school_rows: list[Any], first: date, last: date, policy: d.CoveragePolicy,
              week: bool, *, full: bool = False) -> list[SchoolCoverage]:
    """Every school judged: on PostgreSQL those with nothing to judge room by room inside
    the database (coverage_in_db.judge_in_db), the rest here. full: shares and reasons
    of covered schools too (the CSV has them; the report lists uncovered schools only)."""
    counts = day_counts(conn, school_rows, first, last, policy, in_db=True)
    judged = judge_in_db(conn, counts, policy, week, full=full) if counts.in_db else {}
    if judged is None:       # school hours changed without a rebuild: count room_day
        counts, judged = day_counts(conn, school_rows, first, last, policy), {}
    out = []
    for s in school_rows:
        j = judged.get(s.id)
        days = counts.school_days[s.id]
        out.append(judge(s, counts, days, policy, week) if j is None
                   else judged_school(s, j, days, policy, week, full=full))
    return out


def judge_day(spaces: int, n_inst: int, n_live: int, n_offline: int, policy: d.CoveragePolicy
              ) -> tuple[float, float, str | None]:
    """One school day: (instrumented share, live share, why not covered; None: covered)."""
    inst_share = n_inst / spaces if spaces else 0.0
    live_share = n_live / n_inst if n_inst else 0.0
    if inst_share >= policy.instrumented_share_min and live_share >= policy.live_share_min:
        return inst_share, live_share, None
    if inst_share < policy.instrumented_share_min:
        return inst_share, live_share, "not_enough_rooms_instrumented"
    failing = n_inst - n_live
    return inst_share, live_share, "nodes_offline" if 2 * n_offline >= failing else "data_gaps"


def _judge_days(sc: SchoolCoverage, spaces: int, per_day, policy: d.CoveragePolicy) -> None:
    for n_inst, n_live, n_offline in per_day:
        inst_share, live_share, reason = judge_day(spaces, n_inst, n_live, n_offline, policy)
        sc.share_days += 1
        sc.inst_share_sum += inst_share
        sc.live_share_sum += live_share
        if reason is None:
            sc.covered_days += 1
        else:
            sc.reasons[reason] = sc.reasons.get(reason, 0) + 1


def judged_school(s: Any, j: Judged, days: list[date], policy: d.CoveragePolicy, week: bool, *,
                  full: bool = False) -> SchoolCoverage:
    """judge() for a school judged in the database: the same figures. A covered school's
    shares and reasons are worked out only when `full` (nothing else shows them)."""
    required = min(policy.week_min_days, len(days)) if week else len(days)
    covered = bool(days) and j.covered_days >= required
    sc = SchoolCoverage(s.id, s.code, s.name, s.county_code, teaching_spaces=j.spaces, school_days=len(days),
                        live_new_style=j.live_new_style)
    if covered and not full:
        sc.covered_days, sc.covered = j.covered_days, True
        return sc
    _judge_days(sc, j.spaces, j.per_day(), policy)
    sc.covered = bool(days) and sc.covered_days >= required
    return sc


def judge(s: Any, counts: DayCounts, days: list[date], policy: d.CoveragePolicy, week: bool, *,
          new_style: bool = True) -> SchoolCoverage:
    """The school's coverage over `days` (its school days in the period) from the counts;
    new_style=False skips counting live new-style spaces (the trend does not show them)."""
    spaces = counts.spaces.get(s.id, 0)
    sc = SchoolCoverage(s.id, s.code, s.name, s.county_code, teaching_spaces=spaces, school_days=len(days))
    _judge_days(sc, spaces, (counts.day(s.id, day) for day in days), policy)
    required = min(policy.week_min_days, len(days)) if week else len(days)
    sc.covered = bool(days) and sc.covered_days >= required
    if not new_style:
        return sc
    live_days_needed = max(1, required if week else 1)
    wanted = set(days)
    sc.live_new_style = sum(1 for live in counts.new_style_live.get(s.id, {}).values()
                            if len(wanted.intersection(live)) >= live_days_needed)
    return sc


def summary_of(n_schools: int, total: int, covered: int, policy: d.CoveragePolicy) -> dict[str, Any]:
    """The summary of `n_schools` schools, `total` of them with a school day in the period."""
    need = math.ceil(policy.goal * total - 1e-9)
    return {"schools": total, "covered": covered, "coverage": round(covered / total, 4) if total else None,
            "meets_goal": total > 0 and covered >= need, "gap_schools": max(0, need - covered),
            "schools_without_school_days": n_schools - total}


def _closeness(s: SchoolCoverage, policy: d.CoveragePolicy) -> float:
    inst = s.inst_share_sum / s.share_days
    live = s.live_share_sum / s.share_days
    return max(0.0, policy.instrumented_share_min - inst) + max(0.0, policy.live_share_min - live)


def _school_item(s: SchoolCoverage, child: int | None, policy: d.CoveragePolicy) -> dict[str, Any]:
    n = s.share_days
    return {"school_id": s.id, "code": s.code, "name": s.name, "county_code": s.county_code, "child_code": child,
            "teaching_spaces": s.teaching_spaces, "school_days": s.school_days, "covered_days": s.covered_days,
            "covered": s.covered, "reason": s.reason(),
            "reason_days": {k: v for k, v in s.reasons.items() if v},
            "instrumented_share": round(s.inst_share_sum / n, 4) if n else None,
            "live_share": round(s.live_share_sum / n, 4) if n else None,
            "shortfall": round(_closeness(s, policy), 4) if n else None}


def _kept_school(k: coverage_read.KeptSchool, policy: d.CoveragePolicy, week: bool) -> SchoolCoverage:
    """An uncovered school from its kept rows (coverage_read), as judge() gives it."""
    sc = SchoolCoverage(k.id, k.code, k.name, k.county_code, teaching_spaces=k.spaces, school_days=k.days,
                        covered_days=k.covered_days, share_days=k.days, inst_share_sum=k.inst_share_sum,
                        live_share_sum=k.live_share_sum)
    sc.reasons = {r: n for r, n in zip(REASONS, k.reason_days) if n}
    required = min(policy.week_min_days, k.days) if week else k.days
    sc.covered = sc.covered_days >= required
    return sc


def _schools_by_id(conn: Connection, ids: list[int]) -> list[SchoolRow]:
    s = schools.c
    out: list[SchoolRow] = []
    for i in range(0, len(ids), 500):
        out += [SchoolRow(*r) for r in conn.execute(
            select(s.id, s.code, s.name, s.county_code, s.timezone, s.day_start, s.day_end, s.weekdays_mask)
            .where(s.id.in_(ids[i:i + 500])))]
    return sorted(out, key=lambda r: r.code)


def _tally(conn: Connection, counties: list[int]) -> dict[int, list[int]]:
    """county -> [schools, schools with a school day in the period, covered], the first
    filled in: every school of the county."""
    s = schools.c
    return {county: [n, 0, 0] for county, n in conn.execute(
        select(s.county_code, func.count()).where(s.county_code.in_(counties)).group_by(s.county_code))}


@dataclass
class _Region:
    """A region judged: per county [schools, with school days, covered]; the first `top`
    uncovered schools in the report's order, how many are uncovered in all and by main
    reason; live new-style spaces."""
    tally: dict[int, list[int]]
    uncovered: list[SchoolCoverage]
    uncovered_total: int
    main_reasons: Counter
    live_new_style: int


def _order(s: SchoolCoverage, policy: d.CoveragePolicy, week: bool) -> tuple:
    """The uncovered schools' order: closest to qualifying first (coverage_read.region
    orders kept schools by the same key in SQL)."""
    return (_days_short(s, policy) if week else 0, _closeness(s, policy), s.code)


def _judged_region(conn: Connection, county_child: dict[int, int | None], first: date, last: date,
                   policy: d.CoveragePolicy, week: bool, top: int) -> _Region:
    """Kept schools from coverage_day / coverage_week (coverage_read), the others judged here."""
    counties = sorted(county_child)
    out = _Region(_tally(conn, counties), [], 0, Counter(), 0)
    if coverage_read.applies(policy) and (coverage_read.is_week(first, last) if week else first == last):
        kept = coverage_read.region(conn, counties, first, last, policy, week, top)
        for county, (total, covered) in kept.per_county.items():
            out.tally[county][1] += total
            out.tally[county][2] += covered
        out.uncovered += (_kept_school(k, policy, week) for k in kept.uncovered)
        out.uncovered_total = kept.uncovered_total
        out.main_reasons.update({REASONS[i - 1]: n for i, n in kept.main_reasons.items()})
        out.live_new_style += kept.live_new_style
        rest = _schools_by_id(conn, kept.unkept) if kept.unkept else []
    else:
        rest = _schools_in(conn, county_child)
    for sc in _evaluate(conn, rest, first, last, policy, week) if rest else []:
        out.live_new_style += sc.live_new_style
        if sc.school_days:
            out.tally[sc.county_code][1] += 1
            out.tally[sc.county_code][2] += 1 if sc.covered else 0
            if not sc.covered:
                out.uncovered.append(sc)
                out.uncovered_total += 1
                out.main_reasons[sc.reason()] += 1
    # The first `top` of both parts hold the first `top` of all.
    out.uncovered.sort(key=lambda s: _order(s, policy, week))
    del out.uncovered[top:]
    return out


def _summed(tally: dict[int, list[int]], counties, policy: d.CoveragePolicy) -> dict[str, Any]:
    n = [0, 0, 0]
    for county in counties:
        for i, v in enumerate(tally.get(county, (0, 0, 0))):
            n[i] += v
    return summary_of(n[0], n[1], n[2], policy)


def coverage(conn: Connection, region_code: int, first: date, last: date, *, week: bool,
             policy: d.CoveragePolicy | None = None, limit: int = 100, offset: int = 0) -> dict[str, Any] | None:
    """Coverage of the region over one school day (first == last) or one ISO week."""
    policy = policy or d.CoveragePolicy()
    if conn.execute(select(regions.c.code).where(regions.c.code == region_code)).first() is None:
        return None
    region, children, county_child = _region_tree(conn, region_code)
    judged = _judged_region(conn, county_child, first, last, policy, week, offset + limit)
    tally, live_new_style = judged.tally, judged.live_new_style
    counties_of: dict[int, list[int]] = defaultdict(list)
    for county, child in county_child.items():
        if child is not None:
            counties_of[child].append(county)
    return {
        "region": {k: region[k] for k in ("code", "level", "name_zh", "name_en")},
        "period": ({"week": f"{first.isocalendar()[0]}-W{first.isocalendar()[1]:02d}"} if week
                   else {"date": first.isoformat()}) | {"from": first.isoformat(), "to": last.isoformat()},
        "policy": policy.as_dict(),
        **_summed(tally, county_child, policy),
        "uncovered_by_reason": {r: judged.main_reasons[r] for r in REASONS},
        "children": [{k: c[k] for k in ("code", "level", "name_zh", "name_en")}
                     | _summed(tally, counties_of[c["code"]], policy) for c in children],
        "new_style": {"live": live_new_style, "goal": policy.new_style_goal,
                      "gap": max(0, policy.new_style_goal - live_new_style)},
        "uncovered": {"total": judged.uncovered_total, "limit": limit, "offset": offset,
                      "items": [_school_item(s, county_child.get(s.county_code), policy)
                                for s in judged.uncovered[offset:offset + limit]]},
        "definitions": d.COVERAGE,
    }


def coverage_rows(conn: Connection, region_code: int, first: date, last: date, *, week: bool,
                  policy: d.CoveragePolicy | None = None) -> list[dict] | None:
    """One row per school of the region, for the CSV export."""
    policy = policy or d.CoveragePolicy()
    if conn.execute(select(regions.c.code).where(regions.c.code == region_code)).first() is None:
        return None
    _, _, county_child = _region_tree(conn, region_code)
    items = _evaluate(conn, _schools_in(conn, county_child), first, last, policy, week, full=True)
    rows = [_school_item(s, county_child.get(s.county_code), policy) for s in items]
    return [{k: v for k, v in row.items() if k != "reason_days"} for row in rows]
