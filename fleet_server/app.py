"""App factory: builds the FastAPI app for a Settings. Nothing is created at import
time; the lifespan opens the database, runs migrations, starts the embedded broker
(if configured), the ingest and the rollup job, and stops them in reverse order."""
from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from fleet_server import __version__
from fleet_server.api.routes import devices, health, metrics, registry
from fleet_server.db.engine import make_engine, migrate
from fleet_server.ingest.mqtt_adapter import MqttIngest
from fleet_server.ingest.stats import IngestStats
from fleet_server.ingest.tsdb import TimeSeriesSink
from fleet_server.metrics.retention import RetentionJob
from fleet_server.metrics.rollup import RollupJob
from fleet_server.alerts.evaluator import AlertJob
from fleet_server.campaigns.engine import CampaignJob
from fleet_server.api.routes import campaigns as campaign_routes
from fleet_server.api.routes import alerts as alert_routes
from fleet_server.api.routes import provisioning as provisioning_routes
from fleet_server.api.routes import firmware as firmware_routes
from fleet_server.api.routes import credentials as credential_routes
from fleet_server.api import auth_deps
from fleet_server.api.auth_deps import require
from fleet_server.api.routes import auth as auth_routes
from fleet_server.auth.principal import READ
from fleet_server.web import auth_pages
from fleet_server.security.http import HardeningMiddleware
from fleet_server.security.manager import start_broker_security
from fleet_server.settings import EMBEDDED_SCHEME, Settings, parse_mqtt_url
from fleet_server.web import campaign_pages, pages
from fleet_server.web.render import STATIC_DIR

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = make_engine(settings.db)
        migrate(engine)
        scheme, host, port = parse_mqtt_url(settings.mqtt)
        stats = IngestStats()
        # The embedded broker (started here) or Mosquitto's dynamic security, and the
        # server's own MQTT login (docs/security.md).
        broker, security, login = start_broker_security(settings, engine, stats)
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
                                tsdb=tsdb, tls_ca_file=settings.mqtt_tls_ca(),
                                device_rate=settings.device_rate)
            if login is not None:
                ingest.client.username_pw_set(login.username, login.password)
            ingest.start()
        rollup = RollupJob(engine)
        alert_job = AlertJob(engine)
        retention = RetentionJob(engine, days=settings.retention_days)
        # OTA campaigns: sends `ota` commands through ingest's MQTT client (docs/ota.md).
        campaigns = CampaignJob(engine, ingest.publish_command if ingest is not None else None,
                                interval_s=settings.campaign_interval_s,
                                max_in_flight=settings.campaign_max_in_flight,
                                max_per_school=settings.campaign_max_per_school)
        jobs = (rollup, alert_job, retention, campaigns) if settings.jobs else ()
        for job in jobs:
            job.start()
        app.state.engine = engine
        app.state.stats = stats
        app.state.ingest = ingest
        app.state.tsdb = tsdb
        app.state.broker = broker
        app.state.broker_security = security
        app.state.rollup = rollup
        app.state.alerts = alert_job
        app.state.campaigns = campaigns
        # What startup made (modules, the schema, routes, templates, the jobs) lives as long
        # as the server: moved out of the garbage collector's view, so a full collection
        # during a request walks only what requests made. Measured on the province coverage
        # report: without it one request in ~20 took 80 ms longer (bench/queries.py).
        gc.freeze()
        try:
            yield
        finally:
            for job in reversed(jobs):
                job.stop()
            if ingest is not None:
                ingest.stop()
            if tsdb is not None:
                tsdb.close(5.0)
            security.close()
            if broker is not None:
                broker.stop()
            engine.dispose()

    app = FastAPI(title="CampusFleet", version=__version__, lifespan=lifespan,
                  description="Room usage, air quality and device health from CampusFleet sensor nodes.")
    app.state.settings = settings
    # Body size limit (413) and security headers on every response (docs/security.md).
    app.add_middleware(HardeningMiddleware, max_body=settings.max_request_bytes, max_upload=settings.max_upload_bytes)
    # Every endpoint but health, /metrics, login and the OTA downloads nodes make needs a
    # user (session or API token); writes add their own scope (docs/security.md).
    auth_deps.install(app)
    read = [require(READ)]
    app.include_router(health.router)
    app.include_router(auth_routes.router)
    app.include_router(devices.router, dependencies=read)
    app.include_router(registry.router, dependencies=read)
    app.include_router(metrics.router, dependencies=read)
    app.include_router(alert_routes.router, dependencies=read)
    app.include_router(provisioning_routes.router, dependencies=read)
    app.include_router(firmware_routes.router)
    app.include_router(campaign_routes.router, dependencies=read)
    app.include_router(credential_routes.router, dependencies=read)
    # Dashboards (fleet_server/web): server-rendered pages and their own static files.
    app.include_router(auth_pages.router)
    app.include_router(pages.router, dependencies=read)
    app.include_router(campaign_pages.router, dependencies=read)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    return app
