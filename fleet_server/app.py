"""App factory: builds the FastAPI app for a Settings. Nothing is created at import
time; the lifespan opens the database, runs migrations, starts the embedded broker
(if configured), the ingest and the rollup job, and stops them in reverse order."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from fleet_server import __version__
from fleet_server.api.routes import devices, health, metrics, registry
from fleet_server.broker import EmbeddedBroker
from fleet_server.db.engine import make_engine, migrate
from fleet_server.ingest.mqtt_adapter import MqttIngest
from fleet_server.ingest.stats import IngestStats
from fleet_server.ingest.tsdb import TimeSeriesSink
from fleet_server.metrics.retention import RetentionJob
from fleet_server.metrics.rollup import RollupJob
from fleet_server.alerts.evaluator import AlertJob
from fleet_server.api.routes import alerts as alert_routes
from fleet_server.settings import EMBEDDED_SCHEME, Settings, parse_mqtt_url
from fleet_server.services import devices as device_svc

log = logging.getLogger(__name__)
TEMPLATES_DIR = Path(__file__).with_name("templates")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = make_engine(settings.db)
        migrate(engine)
        scheme, host, port = parse_mqtt_url(settings.mqtt)
        broker = None
        if scheme == EMBEDDED_SCHEME:
            broker = EmbeddedBroker(host, port)
            broker.start()
        stats = IngestStats()
        ingest = None
        # Optional time-series sink (docs/tsdb.md), fed by ingest after each commit.
        tsdb = TimeSeriesSink.from_settings(settings) if settings.ingest else None
        if settings.ingest:
            # amqtt (embedded) speaks MQTT 3.1.1 only, so no v5 and no shared subscription.
            v5 = settings.ingest_mqtt_v5 and scheme != EMBEDDED_SCHEME
            ingest = MqttIngest(engine=engine, host=host, port=port,
                                client_id=settings.ingest_client_id, stats=stats,
                                batch_max=settings.batch_max,
                                batch_max_age_ms=settings.batch_max_age_ms,
                                mqtt_v5=v5, shared=settings.ingest_shared and v5,
                                session_expiry_s=settings.ingest_session_expiry_s,
                                receive_maximum=settings.ingest_receive_maximum or None,
                                tsdb=tsdb)
            ingest.start()
        rollup = RollupJob(engine).start()
        alert_job = AlertJob(engine).start()
        retention = RetentionJob(engine, days=settings.retention_days).start()
        app.state.engine = engine
        app.state.stats = stats
        app.state.ingest = ingest
        app.state.tsdb = tsdb
        app.state.broker = broker
        app.state.rollup = rollup
        app.state.alerts = alert_job
        try:
            yield
        finally:
            retention.stop()
            alert_job.stop()
            rollup.stop()
            if ingest is not None:
                ingest.stop()
            if tsdb is not None:
                tsdb.close(5.0)
            if broker is not None:
                broker.stop()
            engine.dispose()

    app = FastAPI(title="CampusFleet", version=__version__, lifespan=lifespan,
                  description="Room usage, air quality and device health from CampusFleet sensor nodes.")
    app.state.settings = settings
    app.include_router(health.router)
    app.include_router(devices.router)
    app.include_router(registry.router)
    app.include_router(metrics.router)
    app.include_router(alert_routes.router)
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> HTMLResponse:
        # Placeholder fleet overview until the dashboards land; links the API.
        with request.app.state.engine.connect() as conn:
            total, items = device_svc.list_devices(conn, limit=1000, offset=0)
        return templates.TemplateResponse(request, "index.html", {"devices": items, "total": total})

    return app
