"""Device queries: the fleet as the API shows it. Online per DOMAIN.md "Device health":
last status online and a message within 3 x window; offline on the will or silence."""
from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from fleet_server.db.schema import commands, devices

DEFAULT_WINDOW_S = 60
ONLINE_WINDOWS = 3


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def is_online(row: Any, now_s: float) -> bool:
    if not row.online or row.last_seen_s is None:
        return False
    win = row.win_s or DEFAULT_WINDOW_S
    return now_s - row.last_seen_s <= ONLINE_WINDOWS * win


def _public(row: Any, now_s: float) -> dict[str, Any]:
    online = is_online(row, now_s)
    if online:
        since = row.online_since_s
    elif row.online:  # went silent: offline since the silence limit passed
        since = (row.last_seen_s or row.first_seen_s) + ONLINE_WINDOWS * (row.win_s or DEFAULT_WINDOW_S)
    else:
        since = row.online_since_s
    return {
        "device_id": row.device_id,
        "online": online,
        "since": iso(since),
        "last_seen": iso(row.last_seen_s),
        "first_seen": iso(row.first_seen_s),
        "assigned": row.room_id is not None,
        "room_id": row.room_id,
        "fw": row.fw,
        "hw": row.hw,
        "boot": row.boot,
        "reset": row.reset_cause,
        "uptime_s": row.uptime_s,
        "heap_free": row.heap_free,
        "rssi": row.rssi,
        "ip": row.ip,
        "clock": row.clock,
        "outbox": row.outbox,
        "sensors": json.loads(row.sensors) if row.sensors else None,
        "present": row.present,
        "present_ts": iso(row.present_ts),
        "windows_received": row.windows_received,
        "last_window": json.loads(row.last_window) if row.last_window else None,
    }


def list_devices(conn: Connection, *, limit: int, offset: int, now_s: float | None = None) -> tuple[int, list[dict]]:
    now_s = time.time() if now_s is None else now_s
    total = conn.execute(select(func.count()).select_from(devices)).scalar_one()
    rows = conn.execute(select(devices).order_by(devices.c.device_id).limit(limit).offset(offset))
    return total, [_public(r, now_s) for r in rows]


def get_device(conn: Connection, device_id: str, now_s: float | None = None) -> dict | None:
    row = conn.execute(select(devices).where(devices.c.device_id == device_id)).first()
    return None if row is None else _public(row, time.time() if now_s is None else now_s)


def new_command(op: str, args: dict, *, exp: int) -> dict:
    """A PROTOCOL.md command with a fresh id."""
    return {"v": 1, "id": "c-" + uuid.uuid4().hex[:12], "op": op, "args": args, "exp": exp}


def delete_command(conn: Connection, *, device_id: str, cmd_id: str) -> None:
    conn.execute(commands.delete().where((commands.c.device_id == device_id) & (commands.c.cmd_id == cmd_id)))


def record_command(conn: Connection, *, device_id: str, cmd: dict, created_s: float) -> None:
    conn.execute(commands.insert().values(
        cmd_id=cmd["id"], device_id=device_id, op=cmd["op"],
        args=json.dumps(cmd["args"]), created_s=created_s, exp=cmd["exp"]))


def list_commands(conn: Connection, device_id: str, limit: int = 50) -> list[dict]:
    rows = conn.execute(select(commands).where(commands.c.device_id == device_id)
                        .order_by(commands.c.created_s.desc().nulls_last()).limit(limit))
    return [{
        "id": r.cmd_id, "op": r.op, "args": json.loads(r.args) if r.args else None,
        "created": iso(r.created_s), "exp": iso(r.exp),
        "acked": iso(r.acked_s), "ok": r.ok, "err": r.err,
    } for r in rows]
