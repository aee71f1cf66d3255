"""Shared fixtures: a real Mosquitto, a real fleet server per test (a fresh database,
SQLite and PostgreSQL: every server test runs on both), and virtual nodes running the
real firmware on the MicroPython unix port."""
from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from fleet_server.settings import Settings
from fleet_server.virtual_nodes import DEFAULT_HEAP, VirtualNode, node_config, prepare_node_dir
from tests.utils.postgres import Postgres
from tests.utils.services import FleetServer, Mosquitto, Publisher, clear_retained

# MicroPython test modules under firmware/mp run on the unix port via their runner,
# not under CPython.
collect_ignore_glob = ["firmware/mp/*"]

_node_numbers = itertools.count(0x100)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One throwaway PostgreSQL cluster for the session; each test gets its own database."""
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request, mosquitto, tmp_path) -> Iterator[FleetServer]:
    """The fleet server on a fresh database: every test using it runs on SQLite and on
    PostgreSQL (ids [sqlite] / [postgresql])."""
    pg: Postgres | None = None
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres")  # started only when a PostgreSQL test runs
        db_name = f"fleet_{uuid.uuid4().hex[:12]}"
        db = pg.create_database(db_name)
    else:
        db = f"sqlite:///{tmp_path}/fleet.db"
    settings = Settings(db=db, mqtt=mosquitto.url, ingest_client_id=f"ingest-{uuid.uuid4().hex[:8]}")
    srv = FleetServer(settings).start()
    yield srv
    srv.stop()
    if pg is not None:
        pg.drop_database(db_name)


@pytest.fixture(autouse=True)
def _no_retained_messages_left(request) -> Iterator[None]:
    """After each test on the session's Mosquitto, clear what it left retained (node
    births, statuses): a later test's fresh server would otherwise ingest them as
    devices of its own."""
    broker = request.getfixturevalue("mosquitto") if "mosquitto" in request.fixturenames else None
    yield
    if broker is not None:
        clear_retained(broker)


@pytest.fixture
def publisher(mosquitto) -> Iterator[Publisher]:
    pub = Publisher(mosquitto.host, mosquitto.port, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    yield pub
    pub.close()


def new_device_id() -> str:
    return "cf-0000beef%04x" % next(_node_numbers)


@pytest.fixture
def make_node(mosquitto, tmp_path) -> Iterator:
    """Factory: make_node(scenario=..., start=datetime, speed=..., files={name: bytes} put
    into the node's flash, **config overrides)."""
    nodes: list[VirtualNode] = []

    def factory(*, start: datetime, scenario: str = "classroom", speed: float = 60.0, seed: int = 1,
                window_s: int = 60, status_s: int = 300, device_id: str | None = None,
                heap: str = DEFAULT_HEAP, extra_sim: dict | None = None, broker: Mosquitto | None = None,
                compiled: bool = True, files: dict[str, bytes] | None = None, **overrides) -> VirtualNode:
        device_id = device_id or new_device_id()
        broker = broker or mosquitto
        cfg = node_config(device_id, mqtt_host=broker.host, mqtt_port=broker.port,
                          scenario=scenario, start=start, speed=speed, seed=seed,
                          window_s=window_s, status_s=status_s, truth="truth.csv", extra_sim=extra_sim)
        cfg.update(overrides)
        node = VirtualNode(device_id, prepare_node_dir(Path(tmp_path) / "nodes" / device_id, cfg,
                                                       compiled=compiled))
        for name, data in (files or {}).items():   # more files on its flash, e.g. the CA for TLS
            (node.node_dir / name).write_bytes(data)
        nodes.append(node.start(heap=heap))
        return node

    yield factory
    for n in nodes:
        n.stop()
