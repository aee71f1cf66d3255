"""Region and school scoping, called by the service layer (and the scoped service
wrappers), not only by routes: a province/city/county user reads its region, a school
admin its school, technicians (optionally a region) and operators everything."""
from __future__ import annotations

from sqlalchemy import Connection, select

from fleet_server.auth.errors import Forbidden
from fleet_server.auth.principal import DEVICES_ASSIGN, Principal
from fleet_server.db.registry_schema import regions, rooms, schools
from fleet_server.db.schema import devices


def require_scope(principal: Principal, scope: str) -> None:
    if not principal.has(scope):
        raise Forbidden(f"{principal.username} ({principal.role}) may not use {scope}")


def region_codes_under(conn: Connection, code: int) -> set[int]:
    """The region and every region under it (GB/T 2260: province -> city -> county)."""
    found, frontier = {code}, {code}
    while frontier:
        frontier = set(conn.execute(select(regions.c.code).where(
            regions.c.parent_code.in_(sorted(frontier)))).scalars()) - found
        found |= frontier
    return found


def allowed_county_codes(conn: Connection, principal: Principal) -> set[int] | None:
    """Region codes a school's county_code may take for this principal; None = any."""
    if principal.school_id is not None:
        county = conn.execute(select(schools.c.county_code).where(schools.c.id == principal.school_id)).scalar()
        return {county} if county is not None else set()
    if principal.region_code is not None:
        return region_codes_under(conn, principal.region_code)
    return None


def allowed_school_ids(conn: Connection, principal: Principal) -> set[int] | None:
    """The schools the principal may see; None = every school."""
    if principal.school_id is not None:
        return {principal.school_id}
    counties = allowed_county_codes(conn, principal)
    if counties is None:
        return None
    return set(conn.execute(select(schools.c.id).where(schools.c.county_code.in_(sorted(counties)))).scalars())


def check_region(conn: Connection, principal: Principal, code: int) -> None:
    """A region report (coverage, region page): the region must lie within the
    principal's. School admins see their school, not a region."""
    if principal.unrestricted:
        return
    if principal.school_id is not None:
        raise Forbidden(f"{principal.username} sees school {principal.school_id}, not region reports")
    if code not in region_codes_under(conn, principal.region_code):
        raise Forbidden(f"region {code} is outside {principal.username}'s region {principal.region_code}")


def check_school(conn: Connection, principal: Principal, school_id: int) -> None:
    if principal.unrestricted:
        return
    if principal.school_id is not None:
        if school_id != principal.school_id:
            raise Forbidden(f"school {school_id} is not {principal.username}'s school")
        return
    county = conn.execute(select(schools.c.county_code).where(schools.c.id == school_id)).scalar()
    if county is None or county not in region_codes_under(conn, principal.region_code):
        raise Forbidden(f"school {school_id} is outside {principal.username}'s region {principal.region_code}")


def check_room(conn: Connection, principal: Principal, room_id: int) -> None:
    if principal.unrestricted:
        return
    school_id = conn.execute(select(rooms.c.school_id).where(rooms.c.id == room_id)).scalar()
    if school_id is None:
        raise Forbidden(f"room {room_id} is outside {principal.username}'s region")
    check_school(conn, principal, school_id)


def check_device(conn: Connection, principal: Principal, device_id: str) -> None:
    """A device is in the school of the room it is assigned to now. An unassigned (or
    unknown) device belongs to no school: those who may assign devices may see it."""
    if principal.unrestricted:
        return
    school_id = conn.execute(select(rooms.c.school_id).join(devices, devices.c.room_id == rooms.c.id)
                             .where(devices.c.device_id == device_id)).scalar()
    if school_id is None:
        if principal.has(DEVICES_ASSIGN):
            return
        raise Forbidden(f"device {device_id} is not in {principal.username}'s region")
    check_school(conn, principal, school_id)
