"""Provisioning fixtures: a fleet server with a small registry (schools S1..S3, rooms
from tests/utils/registry_samples.py), virtual boards on ptys, the ROM loader simulator."""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from provisioning.server_api import FleetApi
from tests.provisioning.virtual_board import VirtualBoard
from tests.utils.registry_samples import ROOMS, SCHOOLS
from tests.utils.services import FleetServer

_macs = itertools.count(0x10)


def pytest_addoption(parser):
    group = parser.getgroup("provisioning hardware tests (-m hardware)")
    group.addoption("--port", default=None, help="serial port of a real board, e.g. /dev/ttyUSB0")
    group.addoption("--chip", default="auto", help="esp32, esp32s3, esp32c3 or auto")
    group.addoption("--firmware", default=None, help="MicroPython image for the flash test")


def seed_registry(server: FleetServer) -> None:
    for kind, text in (("schools", SCHOOLS), ("rooms", ROOMS)):
        r = server.http.post(f"/api/v1/import/{kind}", content=text.encode(),
                             headers={"Content-Type": "text/csv; charset=utf-8"})
        assert r.status_code == 200, r.text


@pytest.fixture
def fleet(server) -> FleetServer:
    """The fleet server (SQLite and PostgreSQL) with the sample registry."""
    seed_registry(server)
    return server


@pytest.fixture
def api(fleet) -> FleetApi:
    fleet.add_user("technician", "technician")
    return FleetApi(fleet.base_url, token=fleet.token_for("technician"))


@pytest.fixture
def make_board(tmp_path) -> Iterator:
    """Factory: a virtual board (REPL on a pty) with an empty flash and a made-up MAC."""
    boards: list[VirtualBoard] = []

    def factory() -> VirtualBoard:
        mac = "02:ca:fe:00:%02x:%02x" % divmod(next(_macs), 256)
        board = VirtualBoard(Path(tmp_path) / f"board-{len(boards)}", mac).start()
        boards.append(board)
        return board

    yield factory
    for b in boards:
        b.stop()


def sim_section(minutes_ago: int = 5, speed: float = 30.0) -> dict:
    """A virtual node's sim config: its clock starts a few minutes back and catches up."""
    start = datetime.now(timezone(timedelta(hours=8))).replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)
    return {"scenario": "classroom", "start": start.isoformat(timespec="seconds"), "speed": speed, "seed": 1}


def pytest_collection_modifyitems(config, items):
    """`hardware` tests need a real board: they run only with -m hardware --port PORT."""
    if config.getoption("--port"):
        return
    skip = pytest.mark.skip(reason="needs a real board: pytest -m hardware tests/provisioning --port /dev/ttyUSB0")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def board_port(request) -> str:
    return request.config.getoption("--port")
