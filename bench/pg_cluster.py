"""A PostgreSQL cluster for benches that survives between runs, so a dataset that takes
minutes to build is built once: the test suite's throwaway cluster (tests/utils/postgres.py)
with a fixed data folder that start() reuses and stop() keeps."""
from __future__ import annotations

import os
import pwd
import re
import shutil
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.utils.postgres import Postgres

DEFAULT_DIR = Path(os.environ.get("CAMPUSFLEET_BENCH_PGDIR", "/var/tmp/campusfleet-bench-pg"))
DEFAULT_PORT = 55432
# Sized for a ~4 GB dataset on a shared machine; written once at initdb and listed in
# docs/performance.md with the figures. JIT off: its compile time (tens of ms) lands on
# every large report query and is never won back on queries this short.
BENCH_CONF = (
    "shared_buffers = 1GB\n"
    "work_mem = 64MB\n"
    "maintenance_work_mem = 1GB\n"
    "effective_cache_size = 8GB\n"
    "max_wal_size = 8GB\n"
    "jit = off\n"
)


class KeptPostgres(Postgres):
    """start(): initdb on first use, else start the existing cluster (or attach to it if
    it is running); stop(): shut it down and keep the data folder."""

    def __init__(self, workdir: Path = DEFAULT_DIR, port: int = DEFAULT_PORT) -> None:
        super().__init__(port)
        shutil.rmtree(self.workdir, ignore_errors=True)     # the parent's temp folder: unused
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.log = workdir / "postgres.log"
        workdir.mkdir(parents=True, exist_ok=True)
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            os.chown(workdir, pw.pw_uid, pw.pw_gid)

    def start(self) -> KeptPostgres:
        conf = self.datadir / "postgresql.conf"
        if not (self.datadir / "PG_VERSION").exists():
            super().start()
            with open(conf, "a") as f:
                f.write("\n# campusfleet bench\n" + BENCH_CONF)
            self._run(self.bindir / "pg_ctl", "restart", "-D", self.datadir, "-l", self.log, "-w", "-t", "60")
            return self._attach()
        ports = re.findall(r"^port = (\d+)", conf.read_text(), re.M)
        self.port = int(ports[-1])
        if self._run(self.bindir / "pg_ctl", "status", "-D", self.datadir).returncode != 0:
            r = self._run(self.bindir / "pg_ctl", "start", "-D", self.datadir, "-l", self.log, "-w", "-t", "120")
            if r.returncode != 0:
                raise AssertionError(f"PostgreSQL did not start:\n{r.stdout}\n{r.stderr}\n{self._log_tail()}")
        return self._attach()

    def _attach(self) -> KeptPostgres:
        self._admin = create_engine(self.url("postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as conn:
            conn.execute(text("SELECT 1"))
        return self

    def has_database(self, name: str) -> bool:
        assert self._admin is not None, "start() first"
        with self._admin.connect() as conn:
            return conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is not None

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.dispose()
            self._admin = None
        if (self.datadir / "postmaster.pid").exists():
            self._run(self.bindir / "pg_ctl", "stop", "-D", self.datadir, "-m", "fast", "-w", "-t", "60")
