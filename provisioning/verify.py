"""Verify a node end to end: a preflight on the board itself (Wi-Fi association, the
broker's CONNACK for the node's own credentials), then reset it and wait until the fleet
server shows it online with a fresh window and every fitted sensor `ok`."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from provisioning.board import Board
from provisioning.errors import ProvisionError
from provisioning.server_api import FleetApi

BOARDS_DIR = Path(__file__).resolve().parents[1] / "hardware" / "boards"
ALL_PARTS = ("co2", "th", "lux", "radar", "pir", "mic")

# MQTT 3.1.1 section 3.2.2.3: CONNACK return codes.
CONNACK_REASONS = {1: "unacceptable protocol version", 2: "client id rejected", 3: "broker unavailable",
                   4: "bad user name or password", 5: "not authorized"}

# Run on the board before the reset, with the node's own config.json. Prints one repr:
# {'wifi': None|'ok'|'no_ap'|'wrong_password'|'failed', 'mqtt': None|0..5|'unreachable: ...'}.
# Connects with clean session 0 and no subscription, so the node's queued commands stay.
_PREFLIGHT = r"""
import json, socket, time
with open('config.json') as _f:
    _c = json.load(_f)
_r = {'wifi': None, 'mqtt': None}
try:
    import network
    _w = network.WLAN(network.STA_IF)
    _w.active(True)
    if not _w.isconnected():
        _w.connect(_c['wifi']['ssid'], _c['wifi'].get('password', ''))
        _t = time.ticks_ms()
        while _w.status() == network.STAT_CONNECTING and time.ticks_diff(time.ticks_ms(), _t) < 15000:
            time.sleep_ms(200)
    _s = _w.status()
    _r['wifi'] = 'ok' if _w.isconnected() else {network.STAT_NO_AP_FOUND: 'no_ap',
        network.STAT_WRONG_PASSWORD: 'wrong_password'}.get(_s, 'failed')
except ImportError:
    pass
if _r['wifi'] in (None, 'ok'):
    _m = _c['mqtt']
    def _s8(s):
        s = s.encode()
        return bytes((len(s) >> 8, len(s) & 255)) + s
    _u = _m.get('user', _c['device_id'])
    _flags = 0x80 | (0x40 if _m.get('password') is not None else 0)
    _body = _s8('MQTT') + bytes((4, _flags, 0, 60)) + _s8(_c['device_id']) + _s8(_u)
    if _m.get('password') is not None:
        _body += _s8(_m['password'])
    try:
        _a = socket.getaddrinfo(_m['host'], _m.get('port', 1883), 0, socket.SOCK_STREAM)[0]
        _k = socket.socket(_a[0], socket.SOCK_STREAM)
        _k.settimeout(10)
        _k.connect(_a[-1])
        _n = len(_body)
        _k.write(bytes((0x10, _n)) if _n < 128 else bytes((0x10, _n & 127 | 128, _n >> 7)))
        _k.write(_body)
        _ack = _k.read(4)
        _r['mqtt'] = _ack[3] if _ack and len(_ack) == 4 and _ack[0] == 0x20 else 'unreachable: no CONNACK'
        if _r['mqtt'] == 0:
            _k.write(b'\xe0\x00')
        _k.close()
    except OSError as _e:
        _r['mqtt'] = 'unreachable: %s' % _e
print(repr(_r))
"""


@dataclass
class Verified:
    device_id: str
    online: bool
    window: dict | None
    sensors: dict
    seconds: float


def preflight(board: Board) -> None:
    """Raises ProvisionError with the plain reason the node could not go online."""
    cfg = board.read_config() or {}
    if "mqtt" not in cfg:
        raise ProvisionError("the node has no config.json with MQTT settings: run `register` first")
    r = board.eval_literal(_PREFLIGHT)
    ssid = (cfg.get("wifi") or {}).get("ssid")
    if r["wifi"] == "no_ap":
        raise ProvisionError(f"no Wi-Fi: the access point {ssid!r} is not in range")
    if r["wifi"] == "wrong_password":
        raise ProvisionError(f"wrong Wi-Fi password for {ssid!r}")
    if r["wifi"] == "failed":
        raise ProvisionError(f"no Wi-Fi: the node cannot join {ssid!r}")
    m = cfg["mqtt"]
    where = f"{m.get('host')}:{m.get('port', 1883)}"
    if isinstance(r["mqtt"], str):
        raise ProvisionError(f"broker unreachable at {where} ({r['mqtt'].split(': ', 1)[-1]})")
    if r["mqtt"]:
        raise ProvisionError(f"broker refused the node at {where}: {CONNACK_REASONS.get(r['mqtt'], r['mqtt'])} "
                             f"(return code {r['mqtt']}); rerun `register`")


def expected_parts(cfg: dict) -> list[str]:
    """The sensors fitted on the node's board (hardware/boards/<board>.json `parts`); a
    virtual node with board "sim" expects those its sim config does not mark absent."""
    board = cfg.get("board")
    path = BOARDS_DIR / f"{board}.json"
    if board and board != "sim" and path.exists():
        return [p for p, on in json.loads(path.read_text()).get("parts", {}).items() if on]
    fitted = (cfg.get("sim") or {}).get("sensors", {})
    return [p for p in ALL_PARTS if fitted.get(p, True) is not False]


def wait_online(api: FleetApi, device_id: str, *, since_windows: int, since_boot: int | None,
                expected: list[str], timeout_s: float = 180.0, poll_s: float = 1.0,
                sleep: Callable[[float], None] = time.sleep) -> Verified:
    """Polls GET /api/v1/devices/{id} until online after a new boot with a window newer
    than `since_windows`, then checks the fitted sensors. Raises with the reason."""
    t0 = time.monotonic()
    last: dict | None = None
    while time.monotonic() - t0 < timeout_s:
        last = api.device(device_id)
        if (last and last["online"] and last["windows_received"] > since_windows
                and (since_boot is None or (last["boot"] or 0) > since_boot)):
            sensors = last.get("sensors") or {}
            missing = [p for p in expected if sensors.get(p) == "missing"]
            failed = [p for p in expected if sensors.get(p) == "failed"]
            if missing:
                raise ProvisionError(f"sensor missing: {', '.join(missing)} (fitted on this board but not "
                                     "found at start: check its cable and connector)")
            if failed:
                raise ProvisionError(f"sensor failed: {', '.join(failed)} (found but erroring now)")
            return Verified(device_id, True, last["last_window"], sensors, time.monotonic() - t0)
        sleep(poll_s)
    if last is None:
        raise ProvisionError(f"the server never heard from {device_id} within {timeout_s:.0f} s: "
                             "no Wi-Fi, wrong Wi-Fi or MQTT password, or the broker refused it")
    if not last["online"]:
        raise ProvisionError(f"{device_id} is offline on the server (last seen {last['last_seen']}): "
                             "it lost Wi-Fi or the broker after the reset")
    if since_boot is not None and (last["boot"] or 0) <= since_boot:
        raise ProvisionError(f"{device_id} did not restart (boot count still {last['boot']}): reset it by hand")
    if last.get("clock") == "none":
        raise ProvisionError(f"{device_id} is online but has no clock yet (NTP unreachable), so it sends no windows")
    raise ProvisionError(f"{device_id} is online but sent no window within {timeout_s:.0f} s")


def baseline(api: FleetApi, device_id: str) -> tuple[int, int | None]:
    """(windows received, boot count) the server holds now, to tell a fresh report."""
    d = api.device(device_id)
    if d is None:
        return 0, None
    return d["windows_received"] or 0, d["boot"]


def verify(board: Board, api: FleetApi, device_id: str, *, reset: Callable[[], None] | None = None,
           timeout_s: float = 180.0) -> Verified:
    """Preflight on the board, reset it (board.hard_reset, or the given reset for a
    virtual board), and wait for the server to show it online with a fresh window."""
    cfg = board.read_config() or {}
    if cfg.get("device_id") != device_id:
        raise ProvisionError(f"the board's config.json is not for {device_id}: run `register` first")
    preflight(board)
    windows, boot = baseline(api, device_id)
    if reset is None:
        board.hard_reset()
    else:
        reset()
    return wait_online(api, device_id, since_windows=windows, since_boot=boot,
                       expected=expected_parts(cfg), timeout_s=timeout_s)
