"""Fleet page models for technicians: devices with online/offline since, RSSI, heap,
firmware, sensor states; unassigned devices; one device with its room, history and
commands. Reads through fleet_server.services.devices and the registry service."""
from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection

from fleet_server.registry import service as registry
from fleet_server.api.routes.metrics import _today
from fleet_server.services import devices as device_svc
from fleet_server.services import devices_health as health_svc

PAGE = 200
UNASSIGNED_SHOWN = 200
SCHOOLS_IN_PICKER = 1000


def fleet_page(conn: Connection, *, offset: int, school_id: int | None = None, region: int | None = None,
               show_unassigned: bool = True) -> dict[str, Any]:
    """school_id / region: a user's confinement (fleet_server.auth.scoped_services)."""
    total, items = device_svc.list_devices(conn, limit=PAGE, offset=offset, school_id=school_id, region=region)
    # Data completeness today per node: GET /api/v1/devices/{id}/completeness?from=today&to=today's share.
    today = _today()
    now_s = time.time()
    for d in items:
        c = health_svc.completeness(conn, d["device_id"], today, today, now_s=now_s)
        d["completeness"] = None if c is None else c["share"]
    # The devices API's own filter (GET /api/v1/devices?assigned=false), one query.
    unassigned = (device_svc.list_devices(conn, limit=UNASSIGNED_SHOWN, offset=0, assigned=False)[1]
                  if show_unassigned else [])
    # Firmware spread over the devices this user sees (GET /api/v1/devices/firmware).
    spread = health_svc.firmware_spread(conn, region=region, school_id=school_id, now_s=now_s)
    rooms: dict[int, dict] = {}
    for d in items:
        if d["room_id"] is not None and d["room_id"] not in rooms:
            a = registry.current_assignment(conn, d["device_id"])
            rooms[d["room_id"]] = a
    return {"total": total, "items": items, "offset": offset, "page": PAGE, "unassigned": unassigned,
            "today": today, "firmware": spread["versions"],
            "rooms": rooms, "online": sum(1 for d in items if d["online"])}


def device_page(conn: Connection, device_id: str, *, school_id: int | None,
                school_ids: set[int] | None = None) -> dict[str, Any] | None:
    """school_ids: the schools the user may pick from (None = all)."""
    device = device_svc.get_device(conn, device_id)
    if device is None:
        return None
    current = registry.current_assignment(conn, device_id)
    chosen = school_id if school_id is not None else current["school_id"]
    _, schools = registry.list_schools(conn, limit=SCHOOLS_IN_PICKER, offset=0, school_ids=school_ids)
    commands = device_svc.list_commands(conn, device_id)
    return {"device": device, "current": current, "history": registry.assignment_history(conn, device_id),
            "schools": schools, "school_id": chosen,
            "rooms": registry.list_rooms(conn, chosen) if chosen is not None else [],
            "commands": commands}
