"""Device credentials: rotate (a new MQTT secret, shown once) and revoke, effective on
the broker at once and without restarting it (docs/security.md)."""
from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request

from fleet_server.api.auth_deps import require
from fleet_server.api.deps import ConnDep
from fleet_server.auth import audit
from fleet_server.auth.principal import DEVICES_REGISTER, Principal
from fleet_server.auth.scoping import check_device
from fleet_server.security import credentials
from fleet_server.security.dynsec import DynsecError
from fleet_server.security.manager import BrokerSecurity

router = APIRouter(prefix="/api/v1/devices", tags=["credentials"])

DeviceId = Annotated[str, Path(pattern=r"^cf-[0-9a-f]{12}$")]
RegisterDep = Annotated[Principal, require(DEVICES_REGISTER)]


def _security(request: Request) -> BrokerSecurity:
    return getattr(request.app.state, "broker_security", None) or BrokerSecurity()


@router.post("/{device_id}/credentials/rotate")
def rotate_credentials(request: Request, conn: ConnDep, device_id: DeviceId, principal: RegisterDep) -> dict:
    """Issue a new secret for the device; the old one stops working at once and a node
    connected with it is disconnected. The secret is in this reply only (the server
    keeps its scrypt hash): put it in the node's config.json (`mqtt.password`)."""
    check_device(conn, principal, device_id)
    security = _security(request)
    now_s = time.time()
    try:
        secret = credentials.rotate(conn, device_id, now_s=now_s)
        audit.record(conn, principal, "device.credentials.rotate", ("device", device_id))
        security.set_device_secret(device_id, secret)
    except credentials.NotRegistered as e:
        raise HTTPException(404, str(e)) from None
    except DynsecError as e:
        conn.rollback()
        raise HTTPException(502, f"the broker did not take the new secret, nothing changed: {e}") from None
    conn.commit()
    security.committed(device_id)
    return {"device_id": device_id, "username": device_id, "password": secret, "issued_s": now_s,
            "broker": security.kind}


@router.post("/{device_id}/credentials/revoke")
def revoke_credentials(request: Request, conn: ConnDep, device_id: DeviceId, principal: RegisterDep) -> dict:
    """Refuse the device from now: its secret stops working and a live connection is
    closed. A rotate (or a new registration) issues a working secret again."""
    check_device(conn, principal, device_id)
    security = _security(request)
    now_s = time.time()
    try:
        credentials.revoke(conn, device_id, now_s=now_s)
        audit.record(conn, principal, "device.credentials.revoke", ("device", device_id))
        security.revoke_device(device_id)
    except credentials.NotRegistered as e:
        raise HTTPException(404, str(e)) from None
    except DynsecError as e:
        conn.rollback()
        raise HTTPException(502, f"the broker did not revoke the device, nothing changed: {e}") from None
    conn.commit()
    security.committed(device_id)
    return {"device_id": device_id, "revoked": True, "revoked_s": now_s, "broker": security.kind}
