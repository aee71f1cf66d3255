"""Register a node: its device id from the MAC, a room by school + room code (or a
scanned room QR text), the server's MQTT settings and per-device secret merged into
the node's config.json, validated on the host before it is written."""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from provisioning.board import Board
from provisioning.deploy import write_config
from provisioning.errors import ProvisionError
from provisioning.nodeconfig import device_id_from_mac, validate
from provisioning.server_api import FleetApi

# Settings the technician gives (not the server): Wi-Fi of the school's IoT network.
WIFI_KEYS = ("ssid", "password")


@dataclass
class Registered:
    device_id: str
    school: dict
    room: dict
    config: dict
    config_written: bool
    changed: dict

    @property
    def nothing_changed(self) -> bool:
        return not (self.config_written or self.changed.get("assignment") or self.changed.get("credentials"))


def parse_room_qr(text: str) -> tuple[str, str]:
    """(school code, room code) from a room QR: `campusfleet://room?school=S&room=R`
    (what `campus-provision label --room-qr` prints) or plain `S/R`."""
    text = text.strip()
    if "://" in text:
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(text).query)
        if q.get("school") and q.get("room"):
            return q["school"][0], q["room"][0]
    elif text.count("/") == 1 and all(text.split("/")):
        school, room = text.split("/")
        return school, room
    raise ProvisionError(f"not a room QR code: {text!r} (expected campusfleet://room?school=S&room=R or S/R)")


def build_config(current: dict | None, server_config: dict, wifi: dict | None,
                 extra: dict | None = None) -> dict:
    """The node's new config: what it has now (sim, presence tweaks, board), then the
    server's fragment (identity, MQTT, windows), then the technician's Wi-Fi and extras."""
    cfg: dict[str, Any] = {}
    if current and current.get("device_id") == server_config.get("device_id"):
        cfg.update(current)
    cfg.update(server_config)
    for key in ("window_s", "status_s", "presence"):   # kept if set on this node before
        if current and key in current and current.get("device_id") == server_config.get("device_id"):
            cfg[key] = current[key]
    if wifi is not None:
        cfg["wifi"] = {k: wifi[k] for k in WIFI_KEYS if k in wifi}
    elif current and "wifi" in current:
        cfg["wifi"] = current["wifi"]
    cfg.update(extra or {})
    return cfg


def register(board: Board, api: FleetApi, *, school: str | None = None, room: str | None = None,
             room_qr: str | None = None, school_id: int | None = None, wifi: dict | None = None,
             extra: dict | None = None, hardware: str | None = None, firmware: str | None = None,
             mac: str | None = None) -> Registered:
    if room_qr:
        school, room = parse_room_qr(room_qr)
    if not room or (school is None and school_id is None):
        raise ProvisionError("give --school and --room, or --room-qr")
    if mac is None:
        mac = board.info().mac
        if not mac:
            raise ProvisionError("cannot read the board's MAC address; give --mac")
    device_id = device_id_from_mac(mac)
    current = board.read_config()
    if wifi is None and not (current and "wifi" in current) and not (extra and "sim" in extra):
        raise ProvisionError("the node has no Wi-Fi settings yet: give --wifi-ssid and --wifi-password")
    body: dict[str, Any] = {"device_id": device_id, "room_code": room, "hardware": hardware, "firmware": firmware}
    body["school_code" if school is not None else "school_id"] = school if school is not None else school_id
    if current and current.get("device_id") == device_id:
        body["current_password"] = (current.get("mqtt") or {}).get("password")
    # Validate what we can before the server is asked (a bad Wi-Fi password should not
    # rotate the node's secret), then the full config once the server answered.
    if wifi is not None:
        probe = build_config(current, {"v": 1, "device_id": device_id, "mqtt": {"host": "localhost"}}, wifi, extra)
        validate(probe)
    reply = api.register(body)
    cfg = build_config(current, reply["config"], wifi, extra)
    validate(cfg)
    written = write_config(board, cfg)
    return Registered(device_id=device_id, school=reply["school"], room=reply["room"], config=cfg,
                      config_written=written, changed=reply["changed"])
