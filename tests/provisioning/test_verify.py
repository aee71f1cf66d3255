"""verify's plain reasons: the broker unreachable (preflight on the board itself) and a
fitted sensor the node reports missing (the status the server shows)."""
from __future__ import annotations

import json

import pytest

from provisioning.board import Board
from provisioning.deploy import deploy
from provisioning.errors import ProvisionError
from provisioning.register import register
from provisioning.verify import verify
from tests.provisioning.conftest import sim_section
from tests.utils.services import free_port

SQLITE_ONLY = pytest.mark.parametrize("server", ["sqlite"], indirect=True)


@SQLITE_ONLY
def test_verify_names_an_unreachable_broker_before_resetting_the_node(fleet, api, make_board):
    board = make_board()
    with Board(board.port) as b:
        deploy(b)
        reg = register(b, api, school="S1", room="A102", extra={"sim": sim_section()})
        cfg = json.loads(b.read_file("config.json"))
        cfg["mqtt"]["port"] = closed = free_port()
        b.write_file("config.json", json.dumps(cfg).encode())
        with pytest.raises(ProvisionError, match=f"broker unreachable at 127.0.0.1:{closed}"):
            verify(b, api, reg.device_id, reset=board.reset, timeout_s=20)
    assert board.node is None          # not reset: the technician fixes the config first


@SQLITE_ONLY
def test_verify_fails_with_the_missing_sensor_the_server_shows(fleet, api, make_board):
    board = make_board()
    # An s3-v1 has a CO2 sensor; this (virtual) one has none on its bus.
    sim = {**sim_section(), "sensors": {"co2": False}}
    with Board(board.port) as b:
        deploy(b)
        reg = register(b, api, school="S1", room="B201", extra={"sim": sim}, hardware="s3-v1")
        with pytest.raises(ProvisionError) as e:
            verify(b, api, reg.device_id, reset=board.reset, timeout_s=60)
    assert str(e.value).startswith("sensor missing: co2 (fitted on this board but not found")
    assert fleet.device(reg.device_id)["sensors"]["co2"] == "missing"
