"""Devices API: the fleet with online state and since, filters (state, unassigned,
school, region), firmware spread, per-day data completeness and health over time,
commands. Thin: parse, call fleet_server.services, shape the reply (JSON or CSV)."""
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from fleet_server.api.auth_deps import PrincipalDep, require
from fleet_server.api.deps import ConnDep, IngestDep
from fleet_server.auth import audit, scoped_services as scoped
from fleet_server.auth.principal import DEVICES_COMMAND, FIRMWARE_UPLOAD, Principal
from fleet_server.auth.scoping import check_device, require_scope
from fleet_server.campaigns.service import in_active_campaign
from fleet_server.firmware_release import store as release_store
from fleet_server.api.routes.metrics import FormatQ, RangeDep, csv_response
from fleet_server.metrics.retention import retained_from_s
from fleet_server.services import devices as svc
from fleet_server.services import devices_health as health_svc

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])
DeviceId = Annotated[str, Path(pattern=r"^cf-[0-9a-f]{12}$")]
RegionQ = Annotated[int | None, Query(ge=100000, le=999999,
                                      description="GB/T 2260 code: province, city or county of the device's school")]
SchoolQ = Annotated[int | None, Query(description="school id: devices assigned to its rooms")]


class DevicePage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[dict[str, Any]]


class CommandCreate(BaseModel):
    op: Literal["identify", "sync", "reboot", "ota"]
    args: dict[str, Any] = Field(default_factory=dict, description=(
        'identify: {"s": seconds}; ota: {"version": an uploaded release} (the server fills in the '
        "download URL, hash and signature; needs the firmware scope)"))
    ttl_s: int = Field(600, ge=10, le=7 * 86400, description="seconds until the command expires")


_CSV: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}},
              "description": "JSON, or with format=csv a streamed CSV (UTF-8 with BOM, for Excel)"}}


@router.get("", response_model=None, responses={200: {"model": DevicePage, **_CSV[200]}})
def list_devices(conn: ConnDep, principal: PrincipalDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 offset: Annotated[int, Query(ge=0)] = 0,
                 state: Annotated[Literal["online", "offline"] | None, Query()] = None,
                 assigned: Annotated[bool | None, Query(description="false: the unassigned devices")] = None,
                 school_id: SchoolQ = None, region: RegionQ = None, format: FormatQ = "json") -> Any:
    """Devices, assigned or not, with online state and since, room and school, the latest
    status (firmware, hardware, RSSI, heap, sensor states) and their last window.
    CSV: every matching device (no paging)."""
    try:
        # CSV: every matching device, not one page.
        total, items = scoped.list_devices(conn, principal, limit=None if format == "csv" else limit,
                                        offset=0 if format == "csv" else offset, state=state,
                                        assigned=assigned, school_id=school_id, region=region)
        if format == "csv":
            return csv_response([svc.csv_row(d) for d in items], "devices.csv")
    except svc.UnknownRegion as e:
        raise HTTPException(404, str(e)) from None
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/firmware", response_model=None, responses=_CSV)
def firmware_spread(conn: ConnDep, principal: PrincipalDep, region: RegionQ = None, school_id: SchoolQ = None,
                    format: FormatQ = "json") -> Any:
    """Firmware version spread: devices (and those online) per version, most common first."""
    try:
        result = scoped.firmware_spread(conn, principal, region=region, school_id=school_id)
    except svc.UnknownRegion as e:
        raise HTTPException(404, str(e)) from None
    if format == "csv":
        return csv_response(result["versions"], f"firmware-{region or 'all'}.csv")
    return result


@router.get("/{device_id}")
def get_device(conn: ConnDep, principal: PrincipalDep, device_id: DeviceId) -> dict:
    check_device(conn, principal, device_id)
    device = svc.get_device(conn, device_id)
    if device is None:
        raise HTTPException(404, f"no device {device_id}")
    return device


@router.post("/{device_id}/commands", status_code=202)
def send_command(conn: ConnDep, ingest: IngestDep, device_id: DeviceId, body: CommandCreate,
                 principal: Annotated[Principal, require(DEVICES_COMMAND)], request: Request) -> dict:
    """Queue a command to the node (QoS 1; held by the broker while the node is away).
    Its result appears in GET .../commands once the node acks."""
    check_device(conn, principal, device_id)
    if svc.get_device(conn, device_id) is None:
        raise HTTPException(404, f"no device {device_id}")
    if ingest is None:
        raise HTTPException(503, "this server runs without an MQTT link")
    args = body.args
    if body.op == "ota":
        args = _ota_args(conn, request, principal, device_id, args)
    now = time.time()
    cmd = svc.new_command(body.op, args, exp=int(now) + body.ttl_s)
    # Recorded before it is sent, so a fast ack always finds its command.
    svc.record_command(conn, device_id=device_id, cmd=cmd, created_s=now)
    audit.record(conn, principal, "device.command", ("device", device_id),
                 {"op": body.op, "args": body.args, "cmd_id": cmd["id"]})
    conn.commit()
    try:
        ingest.publish_command(device_id, cmd)
    except ConnectionError as e:
        svc.delete_command(conn, device_id=device_id, cmd_id=cmd["id"])
        conn.commit()
        raise HTTPException(503, str(e)) from None
    return {"id": cmd["id"], "op": cmd["op"], "args": cmd["args"], "exp": svc.iso(cmd["exp"])}


def _ota_args(conn, request: Request, principal: Principal, device_id: str, args: dict) -> dict:
    """One device updated by hand (a campaign is the way for many): the release's `ota`
    args (PROTOCOL.md), refused while the device is in an active campaign."""
    require_scope(principal, FIRMWARE_UPLOAD)
    version = args.get("version")
    if set(args) != {"version"} or not isinstance(version, str):
        raise HTTPException(422, 'ota takes {"version": "<an uploaded release>"}')
    release = release_store.get_release(conn, version)
    if release is None:
        raise HTTPException(404, f"no release {version}")
    if in_active_campaign(conn, device_id):
        raise HTTPException(409, f"{device_id} is in an active campaign: pause or abort it first")
    settings = request.app.state.settings
    return release_store.ota_args(release, settings.public_url or str(request.base_url))


@router.get("/{device_id}/commands")
def list_commands(conn: ConnDep, principal: PrincipalDep, device_id: DeviceId) -> list[dict]:
    check_device(conn, principal, device_id)
    return svc.list_commands(conn, device_id)


@router.get("/{device_id}/completeness", response_model=None, responses=_CSV)
def completeness(request: Request, conn: ConnDep, principal: PrincipalDep, device_id: DeviceId, dates: RangeDep,
                 format: FormatQ = "json") -> Any:
    """Per school-local day: windows expected for the time the device was assigned
    (86400 / window_s for a full day) vs received, and the share."""
    check_device(conn, principal, device_id)
    days = request.app.state.settings.retention_days
    result = health_svc.completeness(conn, device_id, *dates, retained_from_s=retained_from_s(days))
    if result is None:
        raise HTTPException(404, f"no device {device_id}")
    if format == "csv":
        return csv_response(result["days"], f"{device_id}-completeness-{dates[0]}-{dates[1]}.csv")
    return result


@router.get("/{device_id}/health", response_model=None, responses=_CSV)
def device_health(conn: ConnDep, principal: PrincipalDep, device_id: DeviceId, dates: RangeDep,
                  format: FormatQ = "json") -> Any:
    """Heap, RSSI, reboots, reset causes and sensor state changes over school-local days,
    from every status the node sent; CSV: the status series."""
    check_device(conn, principal, device_id)
    result = health_svc.health(conn, device_id, *dates)
    if result is None:
        raise HTTPException(404, f"no device {device_id}")
    if format == "csv":
        return csv_response(health_svc.points_csv_rows(result), f"{device_id}-health-{dates[0]}-{dates[1]}.csv")
    return result
