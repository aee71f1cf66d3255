"""Device registration: assign a node to a room and issue (or keep) its per-device MQTT
secret, of which only the scrypt hash is stored. Takes its connection; no globals.

The caller commits. Before it does, `security` makes the broker accept the secret
(Mosquitto's dynamic security, or the embedded broker reading the database), so a
registration that the broker did not take can be rolled back (docs/security.md)."""
from __future__ import annotations

import ipaddress
import time
from typing import Any

from sqlalchemy import Connection, select

from fleet_server.db.provisioning_schema import device_credentials
from fleet_server.db.registry_schema import rooms, schools
from fleet_server.registry import service as registry
from fleet_server.security.credentials import check_secret, hash_secret, new_secret
from fleet_server.security.manager import BrokerSecurity
from fleet_server.settings import parse_mqtt_url

# The config fragment a freshly registered node gets (PROTOCOL.md "Node config file").
DEFAULT_WINDOW_S = 60
DEFAULT_STATUS_S = 300
DEFAULT_NTP = ["ntp.aliyun.com", "pool.ntp.org"]

NotFound = registry.NotFound
Conflict = registry.Conflict


def find_room(conn: Connection, *, room_code: str, school_code: str | None = None,
              school_id: int | None = None) -> Any:
    """The room (with its school) by room code and school code or id; NotFound names both."""
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


def register_device(conn: Connection, *, device_id: str, room_code: str, school_code: str | None = None,
                    school_id: int | None = None, hardware: str | None = None, firmware: str | None = None,
                    current_password: str | None = None, mqtt_url: str, api_host: str | None,
                    now_s: float | None = None, security: BrokerSecurity | None = None) -> dict[str, Any]:
    """Writes the assignment (from now) and the credentials, not committed, and makes
    the broker accept the device's secret (`security`) before the caller commits.
    Returns the broker settings and the config fragment for the node's config.json;
    `changed` says whether the assignment or the secret changed (a rerun: neither)."""
    now_s = time.time() if now_s is None else now_s
    room = find_room(conn, room_code=room_code, school_code=school_code, school_id=school_id)
    before = registry.current_assignment(conn, device_id)
    assignment = registry.assign_device(conn, device_id, room.room_id, int(now_s), now_s=now_s)
    moved = before["room_id"] != room.room_id
    secret, issued = issue_credentials(conn, device_id, current_password,
                                       hardware=hardware, firmware=firmware, now_s=now_s)
    if security is not None:
        if issued:
            security.set_device_secret(device_id, secret)
        else:
            security.ensure_device(device_id, secret)
    host, port = broker_address(mqtt_url, api_host)
    mqtt = {"host": host, "port": port, "tls": False, "username": device_id, "password": secret}
    config = {"v": 1, "device_id": device_id,
              "mqtt": {"host": host, "port": port, "tls": False, "user": device_id, "password": secret},
              "window_s": DEFAULT_WINDOW_S, "status_s": DEFAULT_STATUS_S, "ntp": DEFAULT_NTP}
    if hardware:
        config["board"] = hardware
    return {"device_id": device_id,
            "room": {"id": room.room_id, "code": room.room_code, "name": room.room_name, "type": room.type},
            "school": {"id": room.school_id, "code": room.school_code, "name": room.school_name},
            "assigned_from_ts": assignment["from_ts"],
            "mqtt": mqtt, "config": config,
            "changed": {"assignment": moved, "credentials": issued}}
