"""Region page model (province, city, county): coverage against the 95% goal with its
policy, child regions ranked, uncovered schools with the reason, live new-style spaces,
all from fleet_server.metrics.coverage, the function /api/v1/coverage calls."""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection

from fleet_server.metrics import coverage as coverage_svc
from fleet_server.metrics import coverage_trend as trend_svc
from fleet_server.metrics.definitions import TREND_WEEKS, CoveragePolicy
from fleet_server.registry import service as registry
from fleet_server.web import charts
from fleet_server.web.i18n import Formatter

UNCOVERED_SHOWN = 20      # closest to qualifying; the CSV beside it has every school


def coverage_trend(conn: Connection, region_code: int, last_week: date) -> list[dict] | None:
    """The weekly trend, as GET /api/v1/coverage/trend gives it (same service, default
    policy, TREND_WEEKS weeks): its rows, oldest first, ending with the week of
    `last_week` (any date in it). None if the region is unknown."""
    monday = last_week - timedelta(days=last_week.weekday())
    result = trend_svc.coverage_trend(conn, region_code, monday, TREND_WEEKS, policy=CoveragePolicy())
    return None if result is None else result["weeks"]


def trend_svg(weeks: list[dict], fmt: Formatter, goal: float):
    points = [charts.TrendPoint(w["week"], w["coverage"], f'trend.{w["week"]}.coverage',
                                f' ({w["covered"]}/{w["schools"]})') for w in weeks]
    return charts.trend(points, fmt, title=fmt.t("trend"), goal=goal)


def region_page(conn: Connection, code: int, first: date, last: date, *, week: bool,
                fmt: Formatter) -> dict[str, Any] | None:
    policy = CoveragePolicy()
    cov = coverage_svc.coverage(conn, code, first, last, week=week, policy=policy, limit=UNCOVERED_SHOWN, offset=0)
    if cov is None:
        return None
    region = registry.get_region(conn, code)
    assert region is not None                  # coverage() found it
    ancestors: list[dict] = []
    parent = region["parent_code"]
    while parent is not None:
        p = registry.get_region(conn, parent)
        if p is None:
            break
        ancestors.insert(0, p)
        parent = p["parent_code"]
    name_key = "name_zh" if fmt.zh else "name_en"
    # Ranked: highest coverage first, regions without a school day last.
    children = sorted(cov["children"], key=lambda c: (c["coverage"] is None, -(c["coverage"] or 0), c["code"]))
    bars = [charts.Bar(c[name_key], c["coverage"], f'child.{c["code"]}.coverage', f'/regions/{c["code"]}',
                       f' ({c["covered"]}/{c["schools"]})') for c in children]
    schools = None
    if region["level"] == "county":
        rows = coverage_svc.coverage_rows(conn, code, first, last, week=week, policy=policy) or []
        schools = sorted(rows, key=lambda r: (not r["covered"], r["shortfall"] or 0, r["code"]))
    trend = coverage_trend(conn, code, last)
    return {
        "cov": cov, "region": region, "ancestors": ancestors, "children": children, "schools": schools,
        "name_key": name_key, "trend": trend, "trend_weeks": TREND_WEEKS,
        "trend_week": trend[-1]["week"] if trend else None,
        "trend_svg": trend_svg(trend, fmt, policy.goal) if trend else None,
        "coverage_svg": charts.meter(cov["coverage"] or 0.0, policy.goal, fmt, title=fmt.t("coverage"),
                                     figure="region.coverage", as_share=True),
        "new_style_svg": charts.meter(cov["new_style"]["live"], cov["new_style"]["goal"], fmt,
                                      title=fmt.t("new_style"), figure="region.new_style_live", as_share=False),
        "children_svg": charts.ranked_bars(bars, fmt, title=fmt.t("regions_ranked"), goal=policy.goal)
        if bars else None,
    }
