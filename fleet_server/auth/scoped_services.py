"""The list and report services, entered through the principal: each wrapper confines
the call to the principal's region or school (fleet_server.auth.scoping) and then calls
the service. A thin layer because fleet_server/metrics is being reworked for query
performance at the same time; routes and pages call these, never the bare services,
for anything a region or school user may read."""
from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Connection

from fleet_server.alerts import service as alert_svc
from fleet_server.auth import scoping
from fleet_server.auth.errors import Forbidden
from fleet_server.auth.principal import Principal
from fleet_server.metrics import coverage as coverage_svc
from fleet_server.metrics import coverage_trend as trend_svc
from fleet_server.metrics import rooms as room_svc
from fleet_server.metrics import schools as school_svc
from fleet_server.registry import service as registry
from fleet_server.services import devices as device_svc
from fleet_server.services import devices_health as health_svc


def device_filters(conn: Connection, p: Principal, school_id: int | None, region: int | None
                    ) -> tuple[int | None, int | None]:
    """(school_id, region) filters narrowed to what the principal may see."""
    if school_id is not None:
        scoping.check_school(conn, p, school_id)
    if p.school_id is not None:
        return p.school_id, region            # region, if given, only narrows further
    if p.region_code is not None:
        if region is not None:
            scoping.check_region(conn, p, region)
        return school_id, region if region is not None else p.region_code
    return school_id, region


def list_devices(conn: Connection, p: Principal, *, school_id: int | None = None, region: int | None = None,
                 **kw: Any) -> tuple[int, list[dict]]:
    school_id, region = device_filters(conn, p, school_id, region)
    return device_svc.list_devices(conn, school_id=school_id, region=region, **kw)


def firmware_spread(conn: Connection, p: Principal, *, region: int | None = None,
                    school_id: int | None = None) -> dict[str, Any]:
    school_id, region = device_filters(conn, p, school_id, region)
    return health_svc.firmware_spread(conn, region=region, school_id=school_id)


def get_device(conn: Connection, p: Principal, device_id: str) -> dict | None:
    scoping.check_device(conn, p, device_id)
    return device_svc.get_device(conn, device_id)


def alert_filters(conn: Connection, p: Principal, *, school_id: int | None, region: int | None
                  ) -> tuple[int | None, set[int] | None]:
    """(school_id, counties) for alert_svc; raises LookupError for an unknown region."""
    if school_id is not None:
        scoping.check_school(conn, p, school_id)
    if region is not None:
        if p.school_id is None:
            scoping.check_region(conn, p, region)
        counties = alert_svc.region_counties(conn, region)
        if counties is None:
            raise LookupError(f"no region {region}")
    else:
        counties = scoping.allowed_county_codes(conn, p)
    if p.school_id is not None:
        school_id = p.school_id
    return school_id, counties


def list_schools(conn: Connection, p: Principal, *, county: int | None = None, city: int | None = None,
                 limit: int = 100, offset: int = 0) -> tuple[int, list[dict]]:
    for code in (county, city):
        if code is not None and p.school_id is None:
            scoping.check_region(conn, p, code)
    school_ids = {p.school_id} if p.school_id is not None else None
    return registry.list_schools(conn, county=county, city=city, limit=limit, offset=offset,
                                 counties=scoping.allowed_county_codes(conn, p), school_ids=school_ids)


def get_school(conn: Connection, p: Principal, school_id: int) -> dict | None:
    scoping.check_school(conn, p, school_id)
    return registry.get_school(conn, school_id)


def school_usage(conn: Connection, p: Principal, school_id: int, first: date, last: date, **kw: Any):
    scoping.check_school(conn, p, school_id)
    return school_svc.school_usage(conn, school_id, first, last, **kw)


def school_usage_rows(conn: Connection, p: Principal, school_id: int, first: date, last: date):
    scoping.check_school(conn, p, school_id)
    return school_svc.school_usage_rows(conn, school_id, first, last)


def room_usage(conn: Connection, p: Principal, room_id: int, first: date, last: date):
    scoping.check_room(conn, p, room_id)
    return room_svc.room_usage(conn, room_id, first, last)


def room_environment(conn: Connection, p: Principal, room_id: int, first: date, last: date):
    scoping.check_room(conn, p, room_id)
    return room_svc.room_environment(conn, room_id, first, last)


def coverage(conn: Connection, p: Principal, region_code: int, first: date, last: date, **kw: Any):
    scoping.check_region(conn, p, region_code)
    return coverage_svc.coverage(conn, region_code, first, last, **kw)


def coverage_rows(conn: Connection, p: Principal, region_code: int, first: date, last: date, **kw: Any):
    scoping.check_region(conn, p, region_code)
    return coverage_svc.coverage_rows(conn, region_code, first, last, **kw)


def coverage_trend(conn: Connection, p: Principal, region_code: int, last_monday: date, weeks: int, **kw: Any):
    scoping.check_region(conn, p, region_code)
    return trend_svc.coverage_trend(conn, region_code, last_monday, weeks, **kw)


__all__ = ["Forbidden", "alert_filters", "coverage", "coverage_rows", "coverage_trend", "firmware_spread",
           "get_device", "get_school", "list_devices", "list_schools", "room_environment", "room_usage",
           "school_usage", "school_usage_rows"]
