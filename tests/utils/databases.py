"""A fresh database per test for the tests parametrised over ["sqlite", "postgresql"]
(TESTING.md): SQLite in the test's tmp_path, or a new database in the session's real
PostgreSQL (started only when a PostgreSQL case runs), dropped afterwards."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine

from fleet_server.db.engine import make_engine, migrate
from fleet_server.registry import service as registry
from fleet_server.registry.importer import import_csv


@contextmanager
def database_url(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> Iterator[str]:
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres")
        db = f"{name}_{uuid.uuid4().hex[:12]}"
        url = pg.create_database(db)
        try:
            yield url
        finally:
            pg.drop_database(db)
    else:
        yield f"sqlite:///{tmp_path}/{name}.db"


@contextmanager
def migrated_engine(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> Iterator[Engine]:
    """An engine on a fresh database migrated to the head revision."""
    with database_url(request, tmp_path, name) as url:
        eng = make_engine(url)
        try:
            migrate(eng)
            yield eng
        finally:
            eng.dispose()


def load_registry(eng: Engine, *csv_files: tuple[str, str]) -> None:
    """The GB/T 2260 regions, then each (kind, CSV text) through the real importer,
    committed; a row error fails the test."""
    with eng.begin() as conn:
        registry.load_regions(conn)
    for kind, text in csv_files:
        with eng.connect() as conn:
            assert import_csv(conn, kind, text).errors == []
            conn.commit()
