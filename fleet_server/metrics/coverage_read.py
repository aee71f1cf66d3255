"""Reading kept coverage (coverage_kept.py) for a region's report: the schools kept over the
whole period come from `coverage_day` (a date) or `coverage_week` (an ISO week), judged
when they were kept with the default policy; the schools not kept are listed for the
request-time path. Only week_min_days is applied here (an integer comparison), so a
report asking other delivered_min or share values is judged at request time (applies).

Each read is one statement (a UNION ALL of the kinds of rows it needs), so it sees one
snapshot: a school is kept, or not, for all of it while the keeper works."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, Float, Integer, String, and_, case, cast, func, literal, null, select, union_all

from fleet_server.db.metrics_schema import NEW_STYLE_DAYS, coverage_day, coverage_kept, coverage_week
from fleet_server.db.registry_schema import schools
from fleet_server.metrics import definitions as d

_DEFAULT = d.CoveragePolicy()


def applies(policy: d.CoveragePolicy) -> bool:
    """Kept rows were judged with the default delivered_min and shares."""
    return (policy.delivered_min, policy.instrumented_share_min, policy.live_share_min) == (
        _DEFAULT.delivered_min, _DEFAULT.instrumented_share_min, _DEFAULT.live_share_min)


def is_week(first: date, last: date) -> bool:
    return first.weekday() == 0 and last == first + timedelta(days=6)


@dataclass
class KeptSchool:
    """An uncovered kept school, as coverage.SchoolCoverage needs it."""
    id: int
    code: str
    name: str
    county_code: int
    spaces: int
    days: int
    covered_days: int
    inst_share_sum: float
    live_share_sum: float
    reason_days: tuple[int, int, int]         # per coverage.REASONS


@dataclass
class KeptRegion:
    per_county: dict[int, tuple[int, int]] = field(default_factory=dict)  # -> (with school days, covered)
    # The first `top` uncovered kept schools in the report's order (coverage.py's key:
    # days short of the week rule, shortfall, code), how many there are in all, and how
    # many have each reason as their main one (1 + its index in coverage.REASONS).
    uncovered: list[KeptSchool] = field(default_factory=list)
    uncovered_total: int = 0
    main_reasons: dict[int, int] = field(default_factory=dict)
    live_new_style: int = 0
    unkept: list[int] = field(default_factory=list)      # schools judged at request time


_N_INT, _N_FLOAT, _N_TEXT = 8, 2, 2


def _row(kind: str, ints=(), floats=(), texts=()):
    """A select's columns in the union's shape: kind, 8 integers, 2 floats, 2 texts."""
    def pad(values, n, type_):
        return [v if v is not None else cast(null(), type_) for v in (*values, *([None] * (n - len(values))))]
    return [literal(kind), *pad(ints, _N_INT, Integer), *pad(floats, _N_FLOAT, Float), *pad(texts, _N_TEXT, String)]


def _unkept_ids(first: date, last: date, counties: list[int]):
    k, s = coverage_kept.c, schools.c
    return (select(s.id).select_from(schools.outerjoin(
        coverage_kept, and_(k.school_id == s.id, k.kept_from <= first, k.kept_to >= last)))
        .where(s.county_code.in_(counties), k.school_id.is_(None)))


def _kept_join(table, first: date, last: date):
    k, s = coverage_kept.c, schools.c
    return (table.join(coverage_kept, and_(k.school_id == table.c.school_id, k.kept_from <= first,
                                           k.kept_to >= last))
            .join(schools, s.id == table.c.school_id))


def _positive(x):
    """Python's max(0.0, x) (both IEEE doubles, so the same value)."""
    return case((x > 0.0, x), else_=0.0)


def region(conn: Connection, counties: list[int], first: date, last: date, policy: d.CoveragePolicy,
           week: bool, top: int) -> KeptRegion:
    """The kept schools of these counties for the date `first` (== last) or, when `week`,
    the ISO week starting `first`; the first `top` uncovered ones in the report's order."""
    s = schools.c
    if week:
        c = coverage_week.c
        base = _kept_join(coverage_week, first, last)
        on_period = and_(c.monday == first, s.county_code.in_(counties))
        required = case((c.days < policy.week_min_days, c.days), else_=policy.week_min_days)
        covered = c.covered_days >= required
        # Live new-style spaces: live on as many school days as the school must be covered on.
        need = case((required < 1, 1), else_=required)
        live_ns = case(*((need == k, c[f"live_ns_{k}"]) for k in NEW_STYLE_DAYS), else_=0)
        school = (c.school_id, s.county_code, c.spaces, c.days, c.covered_days,
                  c.reason_1_days, c.reason_2_days, c.reason_3_days)
        sums = (c.inst_share_sum, c.live_share_sum)
    else:
        c = coverage_day.c
        base = _kept_join(coverage_day, first, last)
        on_period = and_(c.date == first, s.county_code.in_(counties))
        covered = c.reason == 0
        live_ns = c.live_new_style
        school = (c.school_id, s.county_code, c.spaces, literal(1).label("days"), literal(0).label("covered_days"),
                  *(case((c.reason == i, 1), else_=0).label(f"reason_{i}_days") for i in (1, 2, 3)))
        sums = (c.inst_share.label("inst_share_sum"), c.live_share.label("live_share_sum"))
    # The period's kept rows once (PostgreSQL materialises a CTE used twice), then counted
    # per county and listed where not covered.
    kept_rows = (select(*school, *sums, s.code, s.name, covered.label("covered"), live_ns.label("live_ns"))
                 .select_from(base).where(on_period).cte("kept_rows"))
    r = kept_rows.c
    cols = list(r)
    counted = (select(*_row("c", (r.county_code, func.count(), func.sum(case((r.covered, 1), else_=0)),
                                  func.sum(r.live_ns))))
               .group_by(r.county_code))
    # coverage.py's order of the uncovered, by the same double arithmetic: days short of
    # the week rule, then the shortfall from the shares (_closeness), then the code (in
    # code-point order, as Python compares strings).
    days_short = (_positive(case((r.days < policy.week_min_days, r.days), else_=policy.week_min_days)
                            - r.covered_days) if week else literal(0))
    shortfall = (_positive(policy.instrumented_share_min - r.inst_share_sum / r.days)
                 + _positive(policy.live_share_min - r.live_share_sum / r.days))
    code = r.code.collate("C") if conn.dialect.name == "postgresql" else r.code
    first_uncovered = (select(*cols[:12]).where(~r.covered).order_by(days_short, shortfall, code)
                       .limit(top).subquery())
    uncovered = select(*_row("u", list(first_uncovered.c)[:8], list(first_uncovered.c)[8:10],
                             list(first_uncovered.c)[10:12]))
    # A school's main reason: the one with most days, the first of coverage.REASONS on a tie.
    main = case((and_(r.reason_1_days >= r.reason_2_days, r.reason_1_days >= r.reason_3_days), 1),
                (r.reason_2_days >= r.reason_3_days, 2), else_=3)
    reasons = select(*_row("r", (main, func.count()))).where(~r.covered).group_by(main)
    rest = _unkept_ids(first, last, counties).subquery()
    not_kept = select(*_row("k", (rest.c.id,)))
    out = KeptRegion()
    for kind, *ints, f1, f2, code_, name in conn.execute(union_all(counted, uncovered, reasons, not_kept)).all():
        if kind == "c":
            out.per_county[ints[0]] = (int(ints[1]), int(ints[2] or 0))
            out.live_new_style += int(ints[3] or 0)
        elif kind == "u":
            school_id, county, spaces, days, covered_days, r1, r2, r3 = ints
            out.uncovered.append(KeptSchool(school_id, code_, name, county, spaces, days, covered_days,
                                            f1, f2, (r1, r2, r3)))
        elif kind == "r":
            out.main_reasons[ints[0]] = int(ints[1])
            out.uncovered_total += int(ints[1])
        else:
            out.unkept.append(ints[0])
    out.unkept.sort()
    return out


def trend(conn: Connection, counties: list[int], first: date, last: date, policy: d.CoveragePolicy
          ) -> tuple[dict[date, tuple[int, int]], list[int]]:
    """Per ISO week (its Monday) in [first, last] (whole weeks): (kept schools with a
    school day that week, covered ones), as region(week=True) counts them; and the
    schools not kept over [first, last]."""
    c, s = coverage_week.c, schools.c
    required = case((c.days < policy.week_min_days, c.days), else_=policy.week_min_days)
    weeks = (select(*_row("w", (func.count(), func.sum(case((c.covered_days >= required, 1), else_=0))),
                          texts=(cast(c.monday, String),)))
             .select_from(_kept_join(coverage_week, first, last))
             .where(c.monday.between(first, last), s.county_code.in_(counties)).group_by(c.monday))
    rest = _unkept_ids(first, last, counties).subquery()
    not_kept = select(*_row("k", (rest.c.id,)))
    out: dict[date, tuple[int, int]] = {}
    unkept: list[int] = []
    for kind, *ints, _f1, _f2, monday, _name in conn.execute(union_all(weeks, not_kept)).all():
        if kind == "w":
            out[_as_date(monday)] = (int(ints[0]), int(ints[1] or 0))
        else:
            unkept.append(ints[0])
    return out, sorted(unkept)


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


__all__ = ["KeptRegion", "KeptSchool", "applies", "is_week", "region", "trend"]
