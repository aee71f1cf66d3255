"""Provisioning API: a technician's CLI registers a freshly flashed node to a room and
receives its MQTT settings and per-device secret (only the secret's scrypt hash is kept).

The broker checks the credentials issued here: Mosquitto learns them through dynamic
security before the registration commits, the embedded broker reads them from the
database (docs/security.md). The technician's bearer token (scope devices:register)
is checked, and the room must be in the technician's region."""
from __future__ import annotations

import ipaddress
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import Connection, select

from fleet_server.api.auth_deps import require
from fleet_server.api.deps import ConnDep
from fleet_server.auth import audit
from fleet_server.auth.principal import DEVICES_REGISTER, Principal
from fleet_server.auth.scoping import check_device, check_school
from fleet_server.db.provisioning_schema import device_credentials
from fleet_server.db.registry_schema import rooms, schools
from fleet_server.registry import service as registry
from fleet_server.security.credentials import SECRET_BYTES, check_secret, hash_secret, new_secret
from fleet_server.security.dynsec import DynsecError
from fleet_server.security.manager import BrokerSecurity
from fleet_server.settings import parse_mqtt_url

router = APIRouter(prefix="/api/v1/provisioning", tags=["provisioning"])

__all__ = ["SECRET_BYTES", "check_secret", "hash_secret", "register", "router"]
DEFAULT_WINDOW_S = 60
DEFAULT_STATUS_S = 300
DEFAULT_NTP = ["ntp.aliyun.com", "pool.ntp.org"]


class Registration(BaseModel):
    device_id: Annotated[str, Field(pattern=r"^cf-[0-9a-f]{12}$")]
    school_code: Annotated[str | None, Field(max_length=32)] = None
    school_id: int | None = None
    room_code: Annotated[str, Field(min_length=1, max_length=32)]
    hardware: Annotated[str | None, Field(max_length=32)] = None
    firmware: Annotated[str | None, Field(max_length=32)] = None
    # The secret the node holds now (read from its config.json): if it still matches,
    # it is kept and a rerun changes nothing on the node.
    current_password: Annotated[str | None, Field(max_length=128)] = None

    @model_validator(mode="after")
    def _one_school(self) -> "Registration":
        if (self.school_code is None) == (self.school_id is None):
            raise ValueError("give exactly one of school_code and school_id")
        return self


# -- service (takes the connection; no globals) ---------------------------------------

def find_room(conn: Connection, *, room_code: str, school_code: str | None = None,
              school_id: int | None = None) -> Any:
    stmt = (select(rooms.c.id.label("room_id"), rooms.c.code.label("room_code"), rooms.c.name.label("room_name"),
                   rooms.c.type, schools.c.id.label("school_id"), schools.c.code.label("school_code"),
                   schools.c.name.label("school_name"))
            .join(schools, schools.c.id == rooms.c.school_id).where(rooms.c.code == room_code))
    stmt = stmt.where(schools.c.code == school_code if school_code is not None else schools.c.id == school_id)
    row = conn.execute(stmt).first()
    if row is None:
        school = school_code if school_code is not None else f"id {school_id}"
        raise registry.NotFound(f"no room {room_code!r} in school {school}")
    return row


def issue_credentials(conn: Connection, device_id: str, current: str | None, *, hardware: str | None,
                      firmware: str | None, now_s: float) -> tuple[str, bool]:
    """(secret, newly issued?). A presented secret that matches the stored hash is kept;
    otherwise a new random one replaces it (the old one stops being valid)."""
    row = conn.execute(select(device_credentials).where(device_credentials.c.device_id == device_id)).first()
    if row is not None and current and check_secret(current, row.password_hash):
        return current, False
    secret = new_secret()
    values = {"password_hash": hash_secret(secret), "issued_s": now_s, "hardware": hardware, "firmware": firmware}
    if row is None:
        conn.execute(device_credentials.insert().values(device_id=device_id, **values))
    else:
        conn.execute(device_credentials.update().where(device_credentials.c.device_id == device_id).values(**values))
    return secret, True


def broker_address(mqtt_url: str, api_host: str | None) -> tuple[str, int]:
    """Host and port nodes should use. A broker bound to loopback or to every address
    is, seen from a node, the host the technician reached this API on."""
    _, host, port = parse_mqtt_url(mqtt_url)
    try:
        local = ipaddress.ip_address(host).is_loopback or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        local = host == "localhost"
    if local and api_host:
        try:
            api_local = ipaddress.ip_address(api_host).is_loopback
        except ValueError:
            api_local = api_host == "localhost"
        if not api_local:
            host = api_host
    return host, port


def register(conn: Connection, body: Registration, *, mqtt_url: str, api_host: str | None,
             now_s: float | None = None, security: BrokerSecurity | None = None) -> dict[str, Any]:
    """Writes the assignment and credentials (not committed) and, before the caller
    commits, makes the broker accept the device's secret (`security`)."""
    now_s = time.time() if now_s is None else now_s
    room = find_room(conn, room_code=body.room_code, school_code=body.school_code, school_id=body.school_id)
    before = registry.current_assignment(conn, body.device_id)
    assignment = registry.assign_device(conn, body.device_id, room.room_id, int(now_s), now_s=now_s)
    moved = before["room_id"] != room.room_id
    secret, issued = issue_credentials(conn, body.device_id, body.current_password,
                                       hardware=body.hardware, firmware=body.firmware, now_s=now_s)
    if security is not None:
        if issued:
            security.set_device_secret(body.device_id, secret)
        else:
            security.ensure_device(body.device_id, secret)
    host, port = broker_address(mqtt_url, api_host)
    mqtt = {"host": host, "port": port, "tls": False, "username": body.device_id, "password": secret}
    config = {"v": 1, "device_id": body.device_id,
              "mqtt": {"host": host, "port": port, "tls": False, "user": body.device_id, "password": secret},
              "window_s": DEFAULT_WINDOW_S, "status_s": DEFAULT_STATUS_S, "ntp": DEFAULT_NTP}
    if body.hardware:
        config["board"] = body.hardware
    return {"device_id": body.device_id,
            "room": {"id": room.room_id, "code": room.room_code, "name": room.room_name, "type": room.type},
            "school": {"id": room.school_id, "code": room.school_code, "name": room.school_name},
            "assigned_from_ts": assignment["from_ts"],
            "mqtt": mqtt, "config": config,
            "changed": {"assignment": moved, "credentials": issued}}


# -- route ----------------------------------------------------------------------------

@router.post("/register")
def register_device(request: Request, conn: ConnDep, body: Registration,
                    principal: Annotated[Principal, require(DEVICES_REGISTER)]) -> dict:
    """Assign the device to the room (school code or id + room code) from now, issue or
    keep its MQTT secret, and return the broker settings and a config fragment for the
    node's config.json. Rerunning with the node's current secret changes nothing."""
    security = getattr(request.app.state, "broker_security", None) or BrokerSecurity()
    try:
        room = find_room(conn, room_code=body.room_code, school_code=body.school_code, school_id=body.school_id)
        check_school(conn, principal, room.school_id)
        check_device(conn, principal, body.device_id)
        result = register(conn, body, mqtt_url=request.app.state.settings.mqtt,
                          api_host=request.url.hostname, security=security)
        audit.record(conn, principal, "device.register", ("device", body.device_id),
                     {"room_id": result["room"]["id"], "school_id": result["school"]["id"],
                      "hardware": body.hardware, "firmware": body.firmware, **result["changed"]})
    except registry.NotFound as e:
        raise HTTPException(404, str(e)) from None
    except registry.Conflict as e:
        raise HTTPException(409, str(e)) from None
    except DynsecError as e:
        conn.rollback()
        raise HTTPException(502, f"the broker did not take the device's credentials, nothing changed: {e}") from None
    conn.commit()
    if result["changed"]["credentials"]:
        security.committed(body.device_id)
    return result
