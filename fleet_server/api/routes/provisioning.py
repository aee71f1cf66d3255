"""Provisioning API: a technician's CLI registers a freshly flashed node to a room and
receives its MQTT settings and per-device secret (fleet_server/services/registration.py).

Thin: parse the registration, check the technician's bearer token (scope
devices:register) and that the room is in their region, call the service, audit,
commit, and only then tell the broker security the secret is final (docs/security.md)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, model_validator

from fleet_server.api.auth_deps import require
from fleet_server.api.deps import ConnDep
from fleet_server.auth import audit
from fleet_server.auth.principal import DEVICES_REGISTER, Principal
from fleet_server.auth.scoping import check_device, check_school
from fleet_server.security.credentials import SECRET_BYTES, check_secret, hash_secret
from fleet_server.security.dynsec import DynsecError
from fleet_server.security.manager import BrokerSecurity
from fleet_server.services import registration

router = APIRouter(prefix="/api/v1/provisioning", tags=["provisioning"])

__all__ = ["SECRET_BYTES", "Registration", "check_secret", "hash_secret", "router"]


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


@router.post("/register")
def register_device(request: Request, conn: ConnDep, body: Registration,
                    principal: Annotated[Principal, require(DEVICES_REGISTER)]) -> dict:
    """Assign the device to the room (school code or id + room code) from now, issue or
    keep its MQTT secret, and return the broker settings and a config fragment for the
    node's config.json. Rerunning with the node's current secret changes nothing."""
    security = getattr(request.app.state, "broker_security", None) or BrokerSecurity()
    try:
        room = registration.find_room(conn, room_code=body.room_code, school_code=body.school_code,
                                      school_id=body.school_id)
        check_school(conn, principal, room.school_id)
        check_device(conn, principal, body.device_id)
        result = registration.register_device(
            conn, **body.model_dump(), mqtt_url=request.app.state.settings.mqtt,
            api_host=request.url.hostname, security=security)
        audit.record(conn, principal, "device.register", ("device", body.device_id),
                     {"room_id": result["room"]["id"], "school_id": result["school"]["id"],
                      "hardware": body.hardware, "firmware": body.firmware, **result["changed"]})
    except registration.NotFound as e:
        raise HTTPException(404, str(e)) from None
    except registration.Conflict as e:
        raise HTTPException(409, str(e)) from None
    except DynsecError as e:
        conn.rollback()
        raise HTTPException(502, f"the broker did not take the device's credentials, nothing changed: {e}") from None
    conn.commit()
    if result["changed"]["credentials"]:
        security.committed(body.device_id)
    return result
