from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import text

from fleet_server import __version__
from fleet_server.api.deps import ConnDep, StatsDep

router = APIRouter()


@router.get("/api/v1/health", tags=["health"])
def health(conn: ConnDep, stats: StatsDep) -> dict:
    """Liveness and the state of the database and the broker link."""
    conn.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__, "database": "ok",
            "mqtt": "connected" if stats.connected else "disconnected"}


@router.get("/metrics", response_class=PlainTextResponse, tags=["health"])
def metrics(stats: StatsDep, request: Request) -> str:
    """Prometheus text format: ingest counters by result and reason, and the
    time-series sink's counters when it is on (app.state.tsdb)."""
    text = stats.render_prometheus()
    tsdb = getattr(request.app.state, "tsdb", None)
    return (text + tsdb.render_prometheus()) if tsdb is not None else text
