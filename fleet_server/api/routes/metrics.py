"""Metrics API: room usage and environment, school usage and smart-campus coverage, as
JSON or streamed CSV. Thin: parse and check the dates, call fleet_server.metrics, shape
the reply. Dates are school-local (Asia/Shanghai); times are ISO 8601 with offset."""
import csv
import io
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from fleet_server.api.auth_deps import PrincipalDep
from fleet_server.api.deps import ConnDep
from fleet_server.api.report_json import ReportJSON
from fleet_server.auth import scoped_services as scoped
from fleet_server.db.registry_schema import SCHOOL_TIMEZONE
from fleet_server.metrics import coverage_trend as trend_svc
from fleet_server.metrics.definitions import MAX_RANGE_DAYS, TREND_WEEKS, CoveragePolicy
from fleet_server.metrics.schooltime import iso_week, zone

router = APIRouter(prefix="/api/v1", tags=["metrics"])
DEFAULT_RANGE_DAYS = 7
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


def _documented(model: type) -> dict:
    # The reply is the service's dict as is (key order kept); the model documents it.
    return {200: {"model": model, "content": {"text/csv": {"schema": {"type": "string"}}},
                  "description": "JSON, or with format=csv a streamed CSV (UTF-8 with BOM, for Excel)"}}


def _today() -> date:
    return datetime.now(zone(SCHOOL_TIMEZONE)).date()


def _parse_date(name: str, value: str) -> date:
    try:
        if not _DATE.match(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise HTTPException(422, f"{name}: {value!r} is not a date YYYY-MM-DD") from None


def date_range(from_: Annotated[str | None, Query(alias="from", description="first school-local date "
                                                  "YYYY-MM-DD (default: 6 days before `to`)")] = None,
               to: Annotated[str | None, Query(description="last school-local date YYYY-MM-DD, inclusive "
                                               "(default: today, Asia/Shanghai)")] = None) -> tuple[date, date]:
    last = _parse_date("to", to) if to is not None else _today()
    first = _parse_date("from", from_) if from_ is not None else last - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if last < first:
        raise HTTPException(422, f"to ({last}) is before from ({first})")
    if (last - first).days + 1 > MAX_RANGE_DAYS:
        raise HTTPException(422, f"the range is {(last - first).days + 1} days; at most {MAX_RANGE_DAYS}")
    return first, last


RangeDep = Annotated[tuple[date, date], Depends(date_range)]
FormatQ = Annotated[Literal["json", "csv"], Query(description="json, or csv for a streamed table")]
LimitQ = Annotated[int, Query(ge=1, le=1000)]
OffsetQ = Annotated[int, Query(ge=0)]


def csv_response(rows: list[dict[str, Any]], filename: str) -> StreamingResponse:
    columns = list(rows[0]) if rows else []

    def lines() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        buf.write("\ufeff")              # Excel reads UTF-8 only with the BOM (zh-CN names)
        writer.writerow(columns)
        for i, row in enumerate(rows, 1):
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
            if i % 500 == 0:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()

    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class RoomUsage(_Open):
    room: dict[str, Any]
    utilisation: float | None = Field(description="occupied minutes within available / available minutes")
    available_minutes: float
    occupied_minutes: float
    occupied_hours: float
    heatmap: list[dict[str, Any]] = Field(description="{weekday, hour, occupied_minutes, observed_minutes, utilisation}")
    periods: list[dict[str, Any]] = Field(description="per booked timetable period: scheduled vs occupied, no-shows")
    no_shows: list[dict[str, Any]]
    unscheduled_use: list[dict[str, Any]] = Field(description="{date, start, end (ISO 8601), minutes}")
    days: list[dict[str, Any]] = Field(description="one row per date of the range (also the CSV rows)")
    definitions: dict[str, str]


class RoomEnvironment(_Open):
    room: dict[str, Any]
    thresholds: dict[str, Any]
    worst_hour: dict[str, Any] | None = Field(description="{start, end (ISO 8601), co2_mean_ppm, co2_max_ppm}")
    days: list[dict[str, Any]] = Field(description="one row per date of the range (also the CSV rows)")
    definitions: dict[str, str]


class SchoolUsage(_Open):
    school: dict[str, Any]
    utilisation: float | None
    rooms: dict[str, Any] = Field(description="{total, limit, offset, items}: rooms ranked by utilisation")
    rooms_never_used: list[dict[str, Any]]
    rooms_over_used: list[dict[str, Any]]
    definitions: dict[str, str]


class Coverage(_Open):
    region: dict[str, Any]
    policy: dict[str, Any]
    coverage: float | None = Field(description="covered schools / schools with a school day in the period")
    gap_schools: int
    children: list[dict[str, Any]]
    uncovered: dict[str, Any] = Field(description="{total, limit, offset, items}: closest to qualifying first")
    new_style: dict[str, Any]
    definitions: dict[str, str]


@router.get("/rooms/{room_id}/usage", response_model=None, responses=_documented(RoomUsage))
def room_usage(conn: ConnDep, principal: PrincipalDep, room_id: int, dates: RangeDep, format: FormatQ = "json") -> Any:
    """Utilisation, occupied hours, weekday x hour heatmap, per-period use against the
    timetable, no-shows and unscheduled use of one room over school-local dates."""
    result = scoped.room_usage(conn, principal, room_id, *dates)
    if result is None:
        raise HTTPException(404, f"no room {room_id}")
    if format == "csv":
        return csv_response(result["days"], f"room-{room_id}-usage-{dates[0]}-{dates[1]}.csv")
    return ReportJSON(result)


@router.get("/rooms/{room_id}/environment", response_model=None, responses=_documented(RoomEnvironment))
def room_environment(conn: ConnDep, principal: PrincipalDep, room_id: int, dates: RangeDep, format: FormatQ = "json") -> Any:
    """Minutes over the CO2 thresholds, the worst hour, shares of occupied time in the
    temperature, humidity and light bands, and unoccupied background noise."""
    result = scoped.room_environment(conn, principal, room_id, *dates)
    if result is None:
        raise HTTPException(404, f"no room {room_id}")
    if format == "csv":
        return csv_response(result["days"], f"room-{room_id}-environment-{dates[0]}-{dates[1]}.csv")
    return ReportJSON(result)


@router.get("/schools/{school_id}/usage", response_model=None, responses=_documented(SchoolUsage))
def school_usage(conn: ConnDep, principal: PrincipalDep, school_id: int, dates: RangeDep, format: FormatQ = "json",
                 limit: LimitQ = 100, offset: OffsetQ = 0) -> Any:
    """The school's rooms rolled up: utilisation, rooms ranked (paginated), rooms never
    used and over-used, no-shows, unscheduled use and environment. CSV: every room."""
    if format == "csv":
        rows = scoped.school_usage_rows(conn, principal, school_id, *dates)
        if rows is None:
            raise HTTPException(404, f"no school {school_id}")
        return csv_response(rows, f"school-{school_id}-usage-{dates[0]}-{dates[1]}.csv")
    result = scoped.school_usage(conn, principal, school_id, *dates, limit=limit, offset=offset)
    if result is None:
        raise HTTPException(404, f"no school {school_id}")
    return ReportJSON(result)


def coverage_policy(
        instrumented_share_min: Annotated[float, Query(gt=0, le=1)] = CoveragePolicy.instrumented_share_min,
        live_share_min: Annotated[float, Query(gt=0, le=1)] = CoveragePolicy.live_share_min,
        delivered_min: Annotated[float, Query(gt=0, le=1)] = CoveragePolicy.delivered_min,
        week_min_days: Annotated[int, Query(ge=1, le=7)] = CoveragePolicy.week_min_days) -> CoveragePolicy:
    return CoveragePolicy(instrumented_share_min, live_share_min, delivered_min, week_min_days)


PolicyDep = Annotated[CoveragePolicy, Depends(coverage_policy)]
RegionQ = Annotated[int, Query(ge=100000, le=999999, description="GB/T 2260 code: province, city or county")]


def _parse_week(week: str) -> tuple[date, date]:
    m = _WEEK.match(week)
    try:
        if not m:
            raise ValueError
        return iso_week(int(m.group(1)), int(m.group(2)))
    except ValueError:
        raise HTTPException(422, f"week: {week!r} is not an ISO week YYYY-Www") from None


@router.get("/coverage", response_model=None, responses=_documented(Coverage))
def coverage(conn: ConnDep, principal: PrincipalDep, region: RegionQ, policy: PolicyDep,
             day: Annotated[str | None, Query(alias="date", description="one school day YYYY-MM-DD "
                                              "(default: today, Asia/Shanghai)")] = None,
             week: Annotated[str | None, Query(description="an ISO week YYYY-Www instead of a date")] = None,
             format: FormatQ = "json", limit: LimitQ = 100, offset: OffsetQ = 0) -> Any:
    """Smart-campus coverage of a region for a school day or an ISO week: the policy
    used, coverage against the 95% goal and the schools still needed, per child region,
    the uncovered schools (closest to qualifying first) with the reason, and live
    new-style teaching spaces against the 1000 goal."""
    if day is not None and week is not None:
        raise HTTPException(422, "give date or week, not both")
    if week is not None:
        first, last = _parse_week(week)
    else:
        first = last = _parse_date("date", day) if day is not None else _today()
    if format == "csv":
        rows = scoped.coverage_rows(conn, principal, region, first, last, week=week is not None, policy=policy)
        if rows is None:
            raise HTTPException(404, f"no region {region}")
        return csv_response(rows, f"coverage-{region}-{week or first}.csv")
    result = scoped.coverage(conn, principal, region, first, last, week=week is not None, policy=policy,
                                   limit=limit, offset=offset)
    if result is None:
        raise HTTPException(404, f"no region {region}")
    return ReportJSON(result)


class CoverageTrend(_Open):
    region: dict[str, Any]
    policy: dict[str, Any]
    weeks: list[dict[str, Any]] = Field(description="oldest first: {week, from, to, schools, covered, coverage, "
                                                    "meets_goal, gap_schools, schools_without_school_days, goal}")
    definitions: dict[str, str]


@router.get("/coverage/trend", response_model=None, responses=_documented(CoverageTrend))
def coverage_trend(conn: ConnDep, principal: PrincipalDep, region: RegionQ, policy: PolicyDep,
                   weeks: Annotated[int, Query(ge=1, le=trend_svc.MAX_WEEKS, description="how many ISO weeks")] = TREND_WEEKS,
                   week: Annotated[str | None, Query(description="the last ISO week YYYY-Www "
                                                     "(default: the current week, Asia/Shanghai)")] = None,
                   format: FormatQ = "json") -> Any:
    """Coverage of a region per ISO week, oldest first, ending with `week`: covered and
    total schools, coverage, the schools still needed for the 95% goal, and the policy
    used; each week judged as GET /coverage?week= judges it."""
    if week is not None:
        last_monday = _parse_week(week)[0]
    else:
        today = _today()
        last_monday = today - timedelta(days=today.weekday())
    result = scoped.coverage_trend(conn, principal, region, last_monday, weeks, policy=policy)
    if result is None:
        raise HTTPException(404, f"no region {region}")
    if format == "csv":
        rows = [row | {k: v for k, v in result["policy"].items() if k != "goal"} for row in result["weeks"]]
        return csv_response(rows, f"coverage-trend-{region}-{result['weeks'][-1]['week']}-{weeks}w.csv")
    return ReportJSON(result)
