"""A real PostgreSQL for tests (TESTING.md): `initdb` into a temp folder and
`pg_ctl start` on a free loopback port, with its unix socket in that folder too, so it
never touches a system cluster. As root, the server runs as the unprivileged `postgres`
user (PostgreSQL refuses to run as root); the Debian package creates that user."""
from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from tests.utils.services import free_port

INSTALL_HINT = "run `make sysdeps` as root or `sudo apt-get install -y postgresql`"
RUN_AS = "postgres"
DEBIAN_PG_LIB = Path("/usr/lib/postgresql")
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _version_key(bindir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<ver>/bin: newest major wins (16 > 15 > 9.6).
    return tuple(int(x) for x in re.findall(r"\d+", bindir.parent.name)) or (0,)


def postgres_bindir() -> Path:
    """The folder holding initdb and pg_ctl: Debian's newest /usr/lib/postgresql/<ver>/bin,
    else whatever PATH has (other distributions put them in /usr/bin)."""
    def usable(d: Path) -> bool:
        return all(os.access(d / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres"))

    candidates = sorted((d for d in DEBIAN_PG_LIB.glob("*/bin") if usable(d)),
                        key=_version_key, reverse=True)
    if candidates:
        return candidates[0]
    on_path = shutil.which("pg_ctl")
    if on_path and usable(Path(on_path).resolve().parent):
        return Path(on_path).resolve().parent
    pytest.fail(f"PostgreSQL (initdb, pg_ctl) is not installed; {INSTALL_HINT}", pytrace=False)


class Postgres:
    """A throwaway PostgreSQL cluster: start(), create_database(name) -> URL, stop().

    Durability is off (fsync, synchronous_commit, full_page_writes): a test cluster
    never survives a machine crash anyway, and it makes CREATE DATABASE and commits fast."""

    def __init__(self, port: int | None = None) -> None:
        self.bindir = postgres_bindir()
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.user = "postgres"  # the database superuser initdb creates (-U)
        self.run_as: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(RUN_AS)
            except KeyError:
                pytest.fail(f"no `{RUN_AS}` system user to run PostgreSQL as (it refuses to run as root); "
                            f"{INSTALL_HINT}", pytrace=False)
            self.run_as = RUN_AS
        # Our own folder, not pytest's basetemp: that one is private to root, so the
        # postgres user could not reach a cluster there; as root, right under the
        # world-traversable /tmp for the same reason. Short path: the unix socket path
        # must stay under ~100 characters.
        base = "/tmp" if self.run_as is not None and os.path.isdir("/tmp") else None
        self.workdir = Path(tempfile.mkdtemp(prefix="campusfleet-pg-", dir=base))
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        self.datadir = self.workdir / "data"
        self.log = self.workdir / "postgres.log"
        self._admin: Engine | None = None

    def _run(self, *args: str | Path) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in args]
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
        env.pop("PGDATA", None)
        return subprocess.run(cmd, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def url(self, database: str) -> str:
        return URL.create("postgresql+psycopg", username=self.user, host=self.host, port=self.port,
                          database=database).render_as_string(hide_password=False)

    def start(self) -> Postgres:
        r = self._run(self.bindir / "initdb", "-D", self.datadir, "-U", self.user, "--auth=trust",
                      "--encoding=UTF8", "--locale=C", "--no-sync")
        if r.returncode != 0:
            self.stop()
            raise AssertionError(f"initdb failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# campusfleet tests\n"
                f"listen_addresses = '{self.host}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.workdir}'\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "max_connections = 200\n"
                "log_min_messages = warning\n"
            )
        r = self._run(self.bindir / "pg_ctl", "start", "-D", self.datadir, "-l", self.log, "-w", "-t", "60")
        if r.returncode != 0:
            log = self._log_tail()
            self.stop()
            raise AssertionError(f"PostgreSQL did not start ({r.returncode}):\n{r.stdout}\n{r.stderr}\n"
                                 f"its log:\n{log}")
        self._admin = create_engine(self.url("postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as conn:
            conn.execute(text("SELECT 1"))
        return self

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its SQLAlchemy URL (postgresql+psycopg://)."""
        if not _DB_NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        assert self._admin is not None, "start() first"
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        if not _DB_NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        assert self._admin is not None, "start() first"
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.dispose()
            self._admin = None
        if (self.datadir / "postmaster.pid").exists():
            r = self._run(self.bindir / "pg_ctl", "stop", "-D", self.datadir, "-m", "fast", "-w", "-t", "30")
            if r.returncode != 0:
                self._run(self.bindir / "pg_ctl", "stop", "-D", self.datadir, "-m", "immediate", "-w")
        shutil.rmtree(self.workdir, ignore_errors=True)
