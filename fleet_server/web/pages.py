"""Dashboard routes: thin, like the API's. Parse the query, build the page model from
the services (fleet_server.web.views_*), render the template in the chosen locale.
Forms (assign a device, send a command) call the very API route functions, then
redirect back (POST/redirect/GET), so a reload never repeats an action."""
from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from fleet_server.api.auth_deps import PrincipalDep
from fleet_server.api.deps import ConnDep, IngestDep
from fleet_server.auth import scoped_services as scoped
from fleet_server.auth import scoping
from fleet_server.auth.errors import Forbidden
from fleet_server.auth.principal import DEVICES_ASSIGN, DEVICES_COMMAND
from fleet_server.api.routes import devices as device_routes
from fleet_server.api.routes import registry as registry_routes
from fleet_server.api.routes.devices import DeviceId
from fleet_server.api.routes.metrics import _today, csv_response, date_range
from fleet_server.db.registry_schema import device_assignments, rooms
from fleet_server.metrics import rooms as room_svc
from fleet_server.metrics import schools as school_svc
from fleet_server.metrics.schooltime import iso_week, load_hours
from fleet_server.registry import service as registry
from fleet_server.services import devices as device_svc
from fleet_server.web import views_campaigns, views_fleet, views_region, views_school
from fleet_server.web.render import formatter, page
from fleet_server.web.room_day import room_windows

router = APIRouter(include_in_schema=False)
PROVINCE = 330000
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
MAX_FORM_BYTES = 4096


def week_of(day: date) -> str:
    y, w, _ = day.isocalendar()
    return f"{y}-W{w:02d}"


def parse_week(week: str | None) -> tuple[date, date, str]:
    if week is None:
        week = week_of(_today())
    m = _WEEK.match(week)
    try:
        if not m:
            raise ValueError
        first, last = iso_week(int(m.group(1)), int(m.group(2)))
    except ValueError:
        raise HTTPException(422, f"week: {week!r} is not an ISO week YYYY-Www") from None
    return first, last, week


def parse_day(value: str | None) -> date:
    if value is None:
        return _today()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise HTTPException(422, f"date: {value!r} is not a date YYYY-MM-DD") from None


async def form_fields(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (the server does not depend on
    python-multipart, as with the CSV upload)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "form too large")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


@router.get("/", response_class=HTMLResponse)
def home(request: Request, conn: ConnDep, principal: PrincipalDep) -> HTMLResponse:
    r, a = rooms.c, device_assignments.c
    query = select(r.school_id).join(device_assignments, a.room_id == r.id).where(a.to_ts.is_(None))
    allowed = scoping.allowed_school_ids(conn, principal)
    if allowed is not None:
        query = query.where(r.school_id.in_(sorted(allowed)))
    ids = conn.execute(query.distinct().order_by(r.school_id).limit(50)).scalars().all()
    schools = [s for s in (registry.get_school(conn, i) for i in ids) if s]
    total, items = scoped.list_devices(conn, principal, limit=1000, offset=0)
    return page(request, "home.html", {
        "schools": schools, "devices_total": total, "devices_online": sum(1 for d in items if d["online"]),
        "devices_unassigned": device_svc.list_devices(conn, limit=0, offset=0, assigned=False)[0],
        "province": PROVINCE})


@router.get("/schools/{school_id}", response_class=HTMLResponse)
def school(request: Request, conn: ConnDep, principal: PrincipalDep, school_id: int, week: Annotated[str | None, Query()] = None,
           from_: Annotated[str | None, Query(alias="from")] = None,
           to: Annotated[str | None, Query()] = None) -> HTMLResponse:
    """A week (default: this one), or any from/to range such as a term."""
    if from_ is not None or to is not None:
        first, last = date_range(from_, to)
        week = None
    else:
        first, last, week = parse_week(week)
    fmt = formatter(request)
    scoping.check_school(conn, principal, school_id)
    model = views_school.school_page(conn, school_id, first, last, fmt)
    if model is None:
        raise HTTPException(404, f"no school {school_id}")
    return page(request, "school.html", {**model, "first": first, "last": last, "week": week,
                                         "prev_week": week_of(first - timedelta(days=7)),
                                         "next_week": week_of(first + timedelta(days=7)),
                                         "range_q": f"from={first}&to={last}"})


@router.get("/rooms/{room_id}", response_class=HTMLResponse)
def room(request: Request, conn: ConnDep, principal: PrincipalDep, room_id: int,
         day: Annotated[str | None, Query(alias="date")] = None) -> HTMLResponse:
    the_day = parse_day(day)
    scoping.check_room(conn, principal, room_id)
    model = views_school.room_page(conn, room_id, the_day, formatter(request))
    if model is None:
        raise HTTPException(404, f"no room {room_id}")
    return page(request, "room.html", {**model, "day": the_day, "prev_day": the_day - timedelta(days=1),
                                       "next_day": the_day + timedelta(days=1), "week": week_of(the_day)})


@router.get("/regions/{code}", response_class=HTMLResponse)
def region(request: Request, conn: ConnDep, principal: PrincipalDep, code: int, week: Annotated[str | None, Query()] = None,
           day: Annotated[str | None, Query(alias="date")] = None) -> HTMLResponse:
    """Coverage for an ISO week (default: this one) or one school day (?date=)."""
    if day is not None:
        first = last = parse_day(day)
        period_q, is_week = f"date={first}", False
    else:
        first, last, week = parse_week(week)
        period_q, is_week = f"week={week}", True
    scoping.check_region(conn, principal, code)
    model = views_region.region_page(conn, code, first, last, week=is_week, fmt=formatter(request))
    if model is None:
        raise HTTPException(404, f"no region {code}")
    return page(request, "region.html", {**model, "first": first, "last": last, "week": week if is_week else None,
                                         "day": None if is_week else first, "period_q": period_q,
                                         "prev_week": week_of(first - timedelta(days=7)),
                                         "next_week": week_of(first + timedelta(days=7))})


@router.get("/fleet", response_class=HTMLResponse)
def fleet(request: Request, conn: ConnDep, principal: PrincipalDep,
          offset: Annotated[int, Query(ge=0)] = 0) -> HTMLResponse:
    school_id, region = scoped.device_filters(conn, principal, None, None)
    model = views_fleet.fleet_page(conn, offset=offset, school_id=school_id, region=region,
                                   show_unassigned=principal.unrestricted or principal.has(DEVICES_ASSIGN))
    # OTA campaigns span schools: listed for accounts not confined to a region or school.
    model["campaigns"] = views_campaigns.recent(conn) if principal.unrestricted else None
    return page(request, "fleet.html", model)


@router.get("/fleet/devices/{device_id}", response_class=HTMLResponse)
def fleet_device(request: Request, conn: ConnDep, principal: PrincipalDep, device_id: DeviceId,
                 school: Annotated[int | None, Query()] = None,
                 error: Annotated[str | None, Query(max_length=300)] = None) -> HTMLResponse:
    scoping.check_device(conn, principal, device_id)
    if school is not None:
        scoping.check_school(conn, principal, school)
    model = views_fleet.device_page(conn, device_id, school_id=school,
                                    school_ids=scoping.allowed_school_ids(conn, principal))
    if model is None:
        raise HTTPException(404, f"no device {device_id}")
    now_iso = datetime.now(UTC).isoformat(timespec="seconds")
    # Refresh while a recent command waits for its ack (and has not expired).
    waiting = any(c["acked"] is None and c["op"] and (c["exp"] or "") > now_iso for c in model["commands"][:5])
    return page(request, "device.html", {**model, "waiting": waiting, "error": error,
                                         "refresh_s": 2 if waiting else None})


def _back(device_id: str, error: str | None = None) -> RedirectResponse:
    url = f"/fleet/devices/{device_id}" + (f"?error={quote(error[:300])}" if error else "")
    return RedirectResponse(url, status_code=303)


@router.post("/fleet/devices/{device_id}/room")
async def fleet_assign(request: Request, principal: PrincipalDep, device_id: DeviceId) -> RedirectResponse:
    fields = await form_fields(request)
    raw = fields.get("room_id", "")
    room_id = int(raw) if raw.isdigit() else None
    with request.app.state.engine.connect() as conn:
        try:
            scoping.require_scope(principal, DEVICES_ASSIGN)
            registry_routes.assign_room(conn, device_id, registry_routes.RoomAssignment(room_id=room_id, from_ts=None),
                                        principal)
        except HTTPException as e:
            return _back(device_id, str(e.detail))
        except Forbidden as e:
            return _back(device_id, str(e))
    return _back(device_id)


@router.post("/fleet/devices/{device_id}/commands")
async def fleet_command(request: Request, principal: PrincipalDep, ingest: IngestDep,
                        device_id: DeviceId) -> RedirectResponse:
    fields = await form_fields(request)
    op = fields.get("op")
    if op not in ("identify", "sync", "reboot"):
        return _back(device_id, f"unknown command {op!r}")
    with request.app.state.engine.connect() as conn:
        try:
            scoping.require_scope(principal, DEVICES_COMMAND)
            device_routes.send_command(conn, ingest, device_id, device_routes.CommandCreate.model_validate({"op": op}),
                                       principal, request)
        except HTTPException as e:
            return _back(device_id, str(e.detail))
        except Forbidden as e:
            return _back(device_id, str(e))
    return _back(device_id)


# -- CSV for the figures the JSON API has no CSV of (same service calls as the page) --

@router.get("/schools/{school_id}/heatmap.csv")
def school_heatmap_csv(conn: ConnDep, principal: PrincipalDep, school_id: int, from_: Annotated[str | None, Query(alias="from")] = None,
                       to: Annotated[str | None, Query()] = None):
    first, last = date_range(from_, to)
    usage = scoped.school_usage(conn, principal, school_id, first, last, limit=1, offset=0)
    if usage is None:
        raise HTTPException(404, f"no school {school_id}")
    return csv_response(usage["heatmap"], f"school-{school_id}-heatmap-{first}-{last}.csv")


@router.get("/schools/{school_id}/environment.csv")
def school_environment_csv(conn: ConnDep, principal: PrincipalDep, school_id: int,
                           from_: Annotated[str | None, Query(alias="from")] = None,
                           to: Annotated[str | None, Query()] = None):
    first, last = date_range(from_, to)
    if scoped.get_school(conn, principal, school_id) is None:
        raise HTTPException(404, f"no school {school_id}")
    room_list = registry.list_rooms(conn, school_id)
    env = views_school.room_environments(conn, school_id, first, last, room_list)
    rows = [{"room_id": r["id"], "code": r["code"], "name": r["name"], **env[r["id"]]} for r in room_list]
    return csv_response(rows, f"school-{school_id}-environment-{first}-{last}.csv")


@router.get("/schools/{school_id}/live.csv")
def school_live_csv(conn: ConnDep, principal: PrincipalDep, school_id: int):
    if scoped.get_school(conn, principal, school_id) is None:
        raise HTTPException(404, f"no school {school_id}")
    live = views_school.live_rooms(conn, registry.list_rooms(conn, school_id))
    rows = [{"room_id": r["room"]["id"], "code": r["room"]["code"], "name": r["room"]["name"],
             "device_id": d["device_id"], "online": d["online"], "since": d["since"], "present": d["present"],
             "present_ts": d["present_ts"]} for r in live["rooms"] for d in r["devices"]]
    return csv_response(rows, f"school-{school_id}-live.csv")


@router.get("/rooms/{room_id}/windows.csv")
def room_windows_csv(conn: ConnDep, principal: PrincipalDep, room_id: int,
                     day: Annotated[str | None, Query(alias="date")] = None):
    the_day = parse_day(day)
    scoping.check_room(conn, principal, room_id)
    room = room_svc.get_room(conn, room_id)
    if room is None:
        raise HTTPException(404, f"no room {room_id}")
    tz = load_hours(conn, [room["school_id"]])[room["school_id"]].timezone
    rows = room_windows(conn, room_id=room_id, day=the_day, timezone=tz)
    return csv_response(rows, f"room-{room_id}-windows-{the_day}.csv")
