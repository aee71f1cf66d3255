"""`campusfleet` command line: thin wrappers over the app factory, the ingest worker,
migrations and the demo. Flags override CAMPUSFLEET_* environment variables."""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from fleet_server.firmware_cli import firmware_app
from fleet_server.auth_cli import attach as attach_auth_commands
from fleet_server.security.certs_cli import certs_app
from fleet_server.settings import Settings, parse_host_port

app = typer.Typer(help="CampusFleet fleet server.", no_args_is_help=True, add_completion=False)

MqttOpt = Annotated[str | None, typer.Option("--mqtt", help="mqtt://host:port (Mosquitto) or embedded://host:port (amqtt in-process)")]
DbOpt = Annotated[str | None, typer.Option("--db", help="SQLAlchemy database URL (default sqlite:///./var/campusfleet.db)")]
BindOpt = Annotated[str | None, typer.Option("--bind", help="HTTP listen address host:port, [::]:port for IPv6")]


def _settings(**overrides) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        raise typer.BadParameter(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # amqtt logs every connection and packet at INFO.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)


@app.command()
def serve(mqtt: MqttOpt = None, db: DbOpt = None, bind: BindOpt = None,
          tls_cert: Annotated[Path | None, typer.Option(
              "--tls-cert", help="serve HTTPS with this certificate (PEM; e.g. server.pem of `certs init`)")] = None,
          tls_key: Annotated[Path | None, typer.Option(
              "--tls-key", help="the certificate's private key (PEM, a file readable by this user only)")] = None,
          verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run the API server with ingest (and the embedded broker unless --mqtt mqtt://...)."""
    import uvicorn

    from fleet_server.app import create_app

    settings = _settings(mqtt=mqtt, db=db, bind=bind, tls_cert_file=str(tls_cert) if tls_cert else None,
                         tls_key_file=str(tls_key) if tls_key else None)
    _logging(verbose)
    host, port = parse_host_port(settings.bind, 8000)
    tls = {}
    if settings.tls_cert_file:
        for what, path in (("--tls-cert", settings.tls_cert_file), ("--tls-key", settings.tls_key_file)):
            if not Path(path).is_file():
                raise typer.BadParameter(f"{what}: no file {path}")
        tls = {"ssl_certfile": settings.tls_cert_file, "ssl_keyfile": settings.tls_key_file}
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=host, port=port,
                                           log_level="info" if verbose else "warning", **tls))
    sockets = None
    if host == "::":
        # asyncio makes a '::' listener IPv6-only; [::] here means dual stack (IPv4 too).
        import socket

        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        sockets = [sock]
    server.run(sockets=sockets)


@app.command()
def ingest(mqtt: MqttOpt = None, db: DbOpt = None,
           client_id: Annotated[str | None, typer.Option(
               "--client-id", help="MQTT client id, fixed per worker: the broker keeps its session "
                                   "(default campusfleet-ingest)")] = None,
           shared: Annotated[bool | None, typer.Option(
               "--shared/--no-shared", help="share the load with other workers through "
                                            "$share/campusfleet/campus/v1/+/# (MQTT v5)")] = None,
           mqtt_v5: Annotated[bool | None, typer.Option(
               "--mqtt-v5/--mqtt-v311", help="MQTT protocol version (default 5)")] = None,
           writer_process: Annotated[bool | None, typer.Option(
               "--writer-process/--writer-thread",
               help="decode and store in a process of their own, on another core (default)")] = None,
           verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run an ingest worker alone (no HTTP), against an external broker."""
    from fleet_server.db.engine import make_engine, migrate
    from fleet_server.ingest.mqtt_adapter import MqttIngest
    from fleet_server.ingest.stats import IngestStats
    from fleet_server.ingest.tsdb import TimeSeriesSink
    from fleet_server.settings import EMBEDDED_SCHEME, parse_mqtt_url

    settings = _settings(mqtt=mqtt, db=db, ingest_client_id=client_id, ingest_shared=shared,
                         ingest_mqtt_v5=mqtt_v5, ingest_writer_process=writer_process)
    scheme, host, port = parse_mqtt_url(settings.mqtt)
    if scheme == EMBEDDED_SCHEME:
        raise typer.BadParameter("an ingest worker needs an external broker: --mqtt mqtt://host:port")
    if settings.ingest_shared and not settings.ingest_mqtt_v5:
        raise typer.BadParameter("--shared needs MQTT v5 (drop --mqtt-v311)")
    _logging(verbose)
    engine = make_engine(settings.db)
    migrate(engine)
    stats = IngestStats()
    worker = MqttIngest(engine=engine, host=host, port=port, client_id=settings.ingest_client_id,
                        stats=stats, batch_max=settings.batch_max,
                        batch_max_age_ms=settings.batch_max_age_ms,
                        mqtt_v5=settings.ingest_mqtt_v5, shared=settings.ingest_shared,
                        session_expiry_s=settings.ingest_session_expiry_s,
                        receive_maximum=settings.ingest_receive_maximum or None,
                        writer_process=settings.ingest_writer_process,
                        # The time-series sink runs where the commits are: in the writer
                        # process (built there from the settings), or here.
                        tsdb=None if settings.ingest_writer_process else TimeSeriesSink.from_settings(settings),
                        tsdb_settings=settings if settings.ingest_writer_process else None,
                        tls_ca_file=settings.mqtt_tls_ca(), device_rate=settings.device_rate)
    from fleet_server.security.manager import server_login
    try:
        login = server_login(settings)   # the server's own MQTT login (docs/security.md)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if login is not None:
        worker.client.username_pw_set(login.username, login.password)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker.start()
    while not stop.wait(0.5) and not worker.failed.is_set():
        pass
    worker.stop()
    if worker.tsdb is not None:
        worker.tsdb.close(5.0)
    engine.dispose()
    # What this worker stored, for the operator (and for tests of shared subscriptions).
    typer.echo(f"ingest {settings.ingest_client_id}: {stats.summary()}")
    if worker.failed.is_set():
        raise typer.Exit(1)


app.add_typer(certs_app, name="certs")
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(firmware_app, name="firmware")
attach_auth_commands(app)   # `users`, `tokens` (docs/security.md)


@db_app.command("upgrade")
def db_upgrade(db: DbOpt = None, revision: str = "head") -> None:
    """Apply migrations up to REVISION (default head)."""
    from fleet_server.db.engine import make_engine, migrate

    settings = _settings(db=db)
    migrate(make_engine(settings.db), revision)
    typer.echo(f"database at {revision}")


@db_app.command("prune")
def db_prune(db: DbOpt = None,
             days: Annotated[int | None, typer.Option("--days", min=1, help="keep this many days of raw "
                                                      "windows (default CAMPUSFLEET_RETENTION_DAYS, 400)")] = None
             ) -> None:
    """Delete raw windows, events and status history older than the retention, in small
    transactions; rollups are kept. Safe while the server and ingest run."""
    from fleet_server.db.engine import make_engine, migrate
    from fleet_server.metrics.retention import prune

    settings = _settings(db=db, retention_days=days)
    engine = make_engine(settings.db)
    migrate(engine)
    result = prune(engine, days=settings.retention_days)
    engine.dispose()
    typer.echo(f"pruned data older than {settings.retention_days} days: {result.windows} windows, "
               f"{result.events} events, {result.status_history} statuses; rollups kept")


@app.command()
def demo(nodes: Annotated[int, typer.Option(min=1, max=200, help="virtual nodes to run")] = 12,
         speed: Annotated[float, typer.Option(min=1, help="sim clock speed until it reaches now")] = 60.0,
         bind: Annotated[str, typer.Option(help="HTTP listen address")] = "127.0.0.1:8000",
         mqtt_port: Annotated[int | None, typer.Option(help="embedded broker port (default 1883, or a free one)")] = None,
         workdir: Annotated[Path, typer.Option(help="folder for the demo database and node flash")] = Path("var/demo"),
         duration: Annotated[float | None, typer.Option(help="stop by itself after this many seconds")] = None) -> None:
    """Embedded broker + server on SQLite + virtual nodes running the real firmware."""
    from fleet_server.demo import DemoError, run_demo

    _settings(bind=bind)  # validates --bind with the same rules as serve
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # amqtt logs every late PUBACK and its own races as errors with tracebacks; in the
    # demo they would bury the URLs (the embedded tier's limits: docs/server.md).
    for name in ("amqtt", "transitions", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        raise typer.Exit(run_demo(nodes=nodes, speed=speed, bind=bind, mqtt_port=mqtt_port,
                                  workdir=workdir, duration_s=duration))
    except (DemoError, FileNotFoundError) as e:
        typer.echo(f"campusfleet demo: {e}", err=True)
        raise typer.Exit(2) from None


@app.command()
def rollup(db: DbOpt = None,
           rebuild: Annotated[bool, typer.Option("--rebuild", help="empty the rollups and count every stored "
                                                 "window again (after school hours or assignment history "
                                                 "were rewritten)")] = False) -> None:
    """Roll up the windows stored since the last run (the server also does this every
    few seconds); safe while the server and ingest run."""
    from fleet_server.db.engine import make_engine, migrate
    from fleet_server.metrics.rollup import ensure_queue_trigger, pending, rebuild_rollups, run_rollups

    settings = _settings(db=db)
    engine = make_engine(settings.db)
    migrate(engine)
    if rebuild:
        result = rebuild_rollups(engine)
    else:
        with engine.begin() as conn:
            ensure_queue_trigger(conn)
        result = run_rollups(engine)
    with engine.connect() as conn:
        left = pending(conn)
    engine.dispose()
    typer.echo(f"rolled up {result.windows} windows in {result.batches} batch(es); "
               f"{left['parked_windows']} parked without a room assignment")


@app.command("import")
def import_registry(kind: Annotated[str, typer.Argument(help="schools, rooms, timetable or calendar")],
                    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="the CSV file")],
                    db: DbOpt = None) -> None:
    """Import a registry CSV (columns: docs/registry.md). Nothing is written if any row
    is wrong; importing the same file again changes nothing."""
    from fleet_server.db.engine import make_engine, migrate
    from fleet_server.registry.importer import KINDS, CsvDecodeError, decode_csv_bytes, import_csv
    from fleet_server.registry.service import load_regions

    if kind not in KINDS:
        raise typer.BadParameter(f"KIND must be one of: {', '.join(KINDS)}", param_hint="KIND")
    try:
        text = decode_csv_bytes(file.read_bytes())
    except CsvDecodeError as e:
        raise typer.BadParameter(str(e), param_hint="FILE") from None
    settings = _settings(db=db)
    engine = make_engine(settings.db)
    migrate(engine)
    with engine.begin() as conn:
        load_regions(conn)    # county codes are checked against them
    with engine.connect() as conn:
        result = import_csv(conn, kind, text)
        if result.ok:
            conn.commit()
    engine.dispose()
    if not result.ok:
        # file:line: form, so editors and terminals can jump to the row.
        for e in result.errors:
            typer.echo(f"{file}:{e.line}: {e.column + ': ' if e.column else ''}{e.message}", err=True)
        typer.echo(f"{len(result.errors)} error(s); nothing was imported", err=True)
        raise typer.Exit(1)
    counts = result.as_dict()
    typer.echo(f"{kind}: {counts['rows']} rows, {counts['inserted']} inserted, {counts['updated']} updated, "
               f"{counts['unchanged']} unchanged")


if __name__ == "__main__":
    app()
