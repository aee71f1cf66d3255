"""Host-side validation of a node's config.json (PROTOCOL.md "Node config file"), with
units and ranges, before anything is written to a board. The node validates again
(firmware/nodeconfig.py) and refuses a bad file; this catches it at the technician."""
from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Any

from provisioning.errors import ProvisionError

DEVICE_ID = re.compile(r"^cf-[0-9a-f]{12}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
# Same ranges as firmware/nodeconfig.py _RANGES (seconds).
INT_RANGES_S = {"window_s": (10, 900), "status_s": (30, 86400)}
PRESENCE_RANGES_S = {"hold_s": (10, 3600), "radar_hold_s": (5, 3600)}
BOARDS = ("esp32-devkit", "s3-v1", "s3-lite", "c3-mini", "sim")


class ConfigError(ProvisionError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("config.json not written: " + "; ".join(problems))


def device_id_from_mac(mac: str) -> str:
    """PROTOCOL.md: cf- + the 12 lowercase hex digits of the Wi-Fi station MAC."""
    digits = re.sub(r"[^0-9a-fA-F]", "", mac).lower()
    if len(digits) != 12:
        raise ProvisionError(f"not a MAC address: {mac!r}")
    return "cf-" + digits


def _host_ok(host: Any) -> bool:
    if not isinstance(host, str) or not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(host))


def _int_in(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def problems(cfg: Any) -> list[str]:
    """Every problem of cfg, each as '<key>: <what is wrong, with the unit>'; [] if good."""
    if not isinstance(cfg, dict):
        return ["config must be a JSON object"]
    out: list[str] = []
    if cfg.get("v") != 1:
        out.append('v: must be 1 (protocol version)')
    dev = cfg.get("device_id")
    if not isinstance(dev, str) or not DEVICE_ID.match(dev):
        out.append(f"device_id: {dev!r} does not match cf-<12 lowercase hex digits>")
    board = cfg.get("board")
    if board is not None and board not in BOARDS:
        out.append(f"board: {board!r} is not one of {', '.join(BOARDS)}")
    wifi = cfg.get("wifi")
    if "sim" not in cfg or wifi is not None:
        if not isinstance(wifi, dict):
            out.append("wifi: an object {ssid, password} is required")
        else:
            ssid, pw = wifi.get("ssid"), wifi.get("password", "")
            if not isinstance(ssid, str) or not 1 <= len(ssid.encode()) <= 32:
                out.append("wifi.ssid: 1..32 bytes (IEEE 802.11 SSID)")
            # WPA2-PSK passphrase: 8..63 ASCII characters, or empty for an open network.
            if not isinstance(pw, str) or not (pw == "" or 8 <= len(pw) <= 63) or not pw.isascii():
                out.append("wifi.password: empty (open network) or 8..63 ASCII characters (WPA2)")
    mqtt = cfg.get("mqtt")
    if not isinstance(mqtt, dict):
        out.append("mqtt: an object {host, port, tls, user, password} is required")
    else:
        if not _host_ok(mqtt.get("host")):
            out.append(f"mqtt.host: {mqtt.get('host')!r} is not a host name or IP address")
        if not _int_in(mqtt.get("port", 1883), 1, 65535):
            out.append("mqtt.port: an integer TCP port 1..65535 (1883 plain, 8883 TLS)")
        tls = mqtt.get("tls", False)
        if not isinstance(tls, bool):
            out.append("mqtt.tls: true or false")
        elif tls and not isinstance(mqtt.get("ca"), str):
            out.append("mqtt.ca: the CA file name on the node is required with tls")
        user = mqtt.get("user", dev)
        if user != dev:
            out.append(f"mqtt.user: must equal device_id ({dev}), not {user!r}")
        pw = mqtt.get("password")
        if pw is not None and not isinstance(pw, str):
            out.append("mqtt.password: a string")
    for key, (lo, hi) in INT_RANGES_S.items():
        if key in cfg and not _int_in(cfg[key], lo, hi):
            out.append(f"{key}: an integer {lo}..{hi} s, not {cfg[key]!r}")
    presence = cfg.get("presence", {})
    if not isinstance(presence, dict):
        out.append("presence: an object")
    else:
        for key, (lo, hi) in PRESENCE_RANGES_S.items():
            if key in presence and not _int_in(presence[key], lo, hi):
                out.append(f"presence.{key}: an integer {lo}..{hi} s, not {presence[key]!r}")
    ntp = cfg.get("ntp", ["pool.ntp.org"])
    if not isinstance(ntp, list) or not 1 <= len(ntp) <= 3 or not all(_host_ok(h) for h in ntp):
        out.append("ntp: a list of 1..3 NTP server host names")
    sim = cfg.get("sim")
    if sim is not None:
        out.extend(_sim_problems(sim))
    return out


def _sim_problems(sim: Any) -> list[str]:
    if not isinstance(sim, dict):
        return ["sim: an object (virtual nodes only)"]
    out = []
    if not isinstance(sim.get("scenario"), str):
        out.append("sim.scenario: a scenario name")
    try:
        start = datetime.fromisoformat(sim.get("start", ""))
        if start.tzinfo is None:
            out.append("sim.start: needs a UTC offset, e.g. 2026-11-23T07:30:00+08:00")
    except (TypeError, ValueError):
        out.append("sim.start: an ISO 8601 time with offset")
    speed = sim.get("speed", 1)
    if not isinstance(speed, (int, float)) or isinstance(speed, bool) or not 0 < speed <= 100000:
        out.append("sim.speed: a number > 0 (times real time)")
    return out


def validate(cfg: Any) -> dict:
    """cfg unchanged if good, else ConfigError listing every problem."""
    found = problems(cfg)
    if found:
        raise ConfigError(found)
    return cfg
