"""Engine construction and migrations. Called by the app factory and the CLI, never
at import time."""
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any constant: the PostgreSQL advisory lock that serialises migrations (below).
_MIGRATION_LOCK_ID = 0x43616D7046  # "CampF"


def normalise_url(url: str) -> URL:
    """A plain postgresql:// (or postgres://) URL means psycopg 3, the driver we ship;
    SQLAlchemy's own default for it would be psycopg2, which is not installed."""
    u = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    return u


def make_engine(url: str) -> Engine:
    u = normalise_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            # WAL: readers (API) never block the ingest writer; NORMAL is durable
            # across application crashes, which is what the broker ack relies on.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if u.get_backend_name() == "postgresql":
        # One pool per process: the API's worker threads and the ingest writer. Pre-ping
        # and recycling let it outlive a database restart or an idle-closing proxy.
        return create_engine(u, pool_pre_ping=True, pool_size=10, max_overflow=10,
                             pool_timeout=30, pool_recycle=1800,
                             connect_args={"application_name": "campusfleet", "connect_timeout": 10})
    return create_engine(u, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (Alembic upgrade)."""
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # The API server and each ingest worker migrate at start; on a shared
            # PostgreSQL they would race to create the same tables. The first holds this
            # lock until its migration commits; the others then find the schema at head.
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
