"""deploy + register + verify against a virtual board: the MicroPython unix port's REPL
on a pty reached by mpremote, booting the uploaded files against a real Mosquitto and
a real fleet server; a rerun changes nothing."""
from __future__ import annotations

import hashlib
import json
import time

import pytest
from sqlalchemy import select

from fleet_server.db.provisioning_schema import device_credentials
from provisioning.board import Board
from provisioning.deploy import REPO_FIRMWARE_DIR, deploy
from provisioning.errors import ProvisionError
from provisioning.register import register
from provisioning.verify import verify
from tests.provisioning.conftest import sim_section

SQLITE_ONLY = pytest.mark.parametrize("server", ["sqlite"], indirect=True)


@SQLITE_ONLY
def test_deploy_register_verify_brings_a_virtual_node_online_and_rerun_changes_nothing(fleet, api, make_board):
    board = make_board()
    device_id = "cf-" + board.mac.replace(":", "")
    sim = sim_section()
    t0 = time.monotonic()
    with Board(board.port) as b:
        deployed = deploy(b, REPO_FIRMWARE_DIR)
        t_deploy = time.monotonic() - t0
        reg = register(b, api, school="S1", room="A101", extra={"sim": sim}, hardware="sim")
        t_register = time.monotonic() - t0 - t_deploy
        verified = verify(b, api, reg.device_id, reset=board.reset, timeout_s=90)
    t_total = time.monotonic() - t0

    # deploy: every module as .mpy, main.py as source; bytes on flash = the compiled ones
    files = board.files()
    assert deployed.uploaded and not deployed.unchanged
    assert "main.py" in files and "node.mpy" in files and "node.py" not in files
    assert not [p for p in files if p.endswith(".py") and p != "main.py"]
    assert deployed.bytes_uploaded == sum(len(files[p]) for p in deployed.uploaded)
    # register: the device id from the MAC, the room, the per-device secret in config.json
    assert reg.device_id == device_id
    assert (reg.school["code"], reg.room["code"]) == ("S1", "A101")
    cfg = json.loads(files["config.json"])
    assert cfg["device_id"] == device_id and cfg["mqtt"]["user"] == device_id
    secret = cfg["mqtt"]["password"]
    assert len(secret) >= 22  # >= 128 bits, URL-safe base64
    assert "config.json.tmp" not in files
    with fleet.app.state.engine.connect() as conn:
        stored = conn.execute(select(device_credentials).where(device_credentials.c.device_id == device_id)).one()
    assert stored.password_hash.startswith("scrypt$") and secret not in stored.password_hash
    # verify: online on the server with a fresh window and every sensor ok
    assert verified.online and verified.window is not None
    device = fleet.device(device_id)
    assert device["online"] and device["room"]["code"] == "A101" and device["windows_received"] >= 1
    assert set(verified.sensors.values()) == {"ok"}
    print(f"\nPROVISION-FIGURES deploy_s={t_deploy:.2f} register_s={t_register:.2f} "
          f"verify_s={verified.seconds:.2f} total_s={t_total:.2f} upload_bytes={deployed.bytes_uploaded} "
          f"files={len(deployed.uploaded)}")

    # rerun: nothing uploaded, the same secret kept, config.json untouched
    before = board.files()
    board.to_repl()
    t1 = time.monotonic()
    with Board(board.port) as b:
        again = deploy(b, REPO_FIRMWARE_DIR)
        reg2 = register(b, api, school="S1", room="A101", extra={"sim": sim}, hardware="sim")
    assert not again.changed and again.bytes_uploaded == 0 and len(again.unchanged) == len(deployed.uploaded)
    assert reg2.nothing_changed
    after = board.files()
    assert after["config.json"] == before["config.json"]
    assert {p: hashlib.sha256(v).hexdigest() for p, v in after.items() if p.endswith(".mpy")} == \
        {p: hashlib.sha256(v).hexdigest() for p, v in before.items() if p.endswith(".mpy")}
    print(f"PROVISION-FIGURES rerun_s={time.monotonic() - t1:.2f}")
