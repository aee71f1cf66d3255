"""FastAPI dependencies as Annotated aliases (the full-stack-fastapi-template habit)."""
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Connection

from fleet_server.ingest.mqtt_adapter import MqttIngest
from fleet_server.ingest.stats import IngestStats


def get_conn(request: Request) -> Iterator[Connection]:
    with request.app.state.engine.connect() as conn:
        yield conn


def get_stats(request: Request) -> IngestStats:
    return request.app.state.stats


def get_ingest(request: Request) -> MqttIngest | None:
    return request.app.state.ingest


ConnDep = Annotated[Connection, Depends(get_conn)]
StatsDep = Annotated[IngestStats, Depends(get_stats)]
IngestDep = Annotated[MqttIngest | None, Depends(get_ingest)]
