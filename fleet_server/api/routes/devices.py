import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from fleet_server.api.deps import ConnDep, IngestDep
from fleet_server.services import devices as svc

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])
DeviceId = Annotated[str, Path(pattern=r"^cf-[0-9a-f]{12}$")]


class DevicePage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[dict[str, Any]]


class CommandCreate(BaseModel):
    op: Literal["identify", "sync", "reboot"]
    args: dict[str, Any] = Field(default_factory=dict)
    ttl_s: int = Field(600, ge=10, le=7 * 86400, description="seconds until the command expires")


@router.get("", response_model=DevicePage)
def list_devices(conn: ConnDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                 offset: Annotated[int, Query(ge=0)] = 0) -> dict:
    """All devices, assigned or not, with online state and their last window."""
    total, items = svc.list_devices(conn, limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/{device_id}")
def get_device(conn: ConnDep, device_id: DeviceId) -> dict:
    device = svc.get_device(conn, device_id)
    if device is None:
        raise HTTPException(404, f"no device {device_id}")
    return device


@router.post("/{device_id}/commands", status_code=202)
def send_command(conn: ConnDep, ingest: IngestDep, device_id: DeviceId, body: CommandCreate) -> dict:
    """Queue a command to the node (QoS 1; held by the broker while the node is away).
    Its result appears in GET .../commands once the node acks."""
    if svc.get_device(conn, device_id) is None:
        raise HTTPException(404, f"no device {device_id}")
    if ingest is None:
        raise HTTPException(503, "this server runs without an MQTT link")
    now = time.time()
    cmd = svc.new_command(body.op, body.args, exp=int(now) + body.ttl_s)
    # Recorded before it is sent, so a fast ack always finds its command.
    svc.record_command(conn, device_id=device_id, cmd=cmd, created_s=now)
    conn.commit()
    try:
        ingest.publish_command(device_id, cmd)
    except ConnectionError as e:
        svc.delete_command(conn, device_id=device_id, cmd_id=cmd["id"])
        conn.commit()
        raise HTTPException(503, str(e)) from None
    return {"id": cmd["id"], "op": cmd["op"], "args": cmd["args"], "exp": svc.iso(cmd["exp"])}


@router.get("/{device_id}/commands")
def list_commands(conn: ConnDep, device_id: DeviceId) -> list[dict]:
    return svc.list_commands(conn, device_id)
