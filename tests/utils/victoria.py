"""A real VictoriaMetrics for tests (TESTING.md): Debian's single-node binary on a free
loopback port with a temp -storageDataPath; stop() / start() for outage tests."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.utils.services import free_port, wait_until

# /usr/bin/victoria-metrics is where Debian's package puts it (dpkg -L victoria-metrics).
DEBIAN_BINARY = "/usr/bin/victoria-metrics"


def victoria_metrics_binary() -> str:
    for candidate in (shutil.which("victoria-metrics"), shutil.which("victoria-metrics-prod"),
                      DEBIAN_BINARY):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("VictoriaMetrics is not installed; run `make sysdeps` as root or "
                "`sudo apt-get install -y victoria-metrics`", pytrace=False)


class VictoriaMetrics:
    """Single-node VictoriaMetrics; it takes InfluxDB line protocol on /api/v2/write, the
    same endpoint influxdb-client writes to on InfluxDB 2."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()  # kept across stop()/start(): clients keep their URL
        self.data = workdir / "data"
        self.log = workdir / "victoria-metrics.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> VictoriaMetrics:
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [victoria_metrics_binary(), f"-storageDataPath={self.data}",
             f"-httpListenAddr={self.host}:{self.port}",
             # Answer queries with points up to now (the default hides the last 30 s),
             # and keep samples from any time (tests write windows of fixed past dates).
             "-search.latencyOffset=0s", "-retentionPeriod=100y",
             "-loggerLevel=WARN"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        try:
            wait_until(self._healthy, 20, 0.05, f"victoria-metrics on port {self.port}")
        except AssertionError:
            self.stop()
            raise AssertionError(f"victoria-metrics did not start; its log:\n{self.log.read_text()}") from None
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"victoria-metrics exited ({self.proc.returncode}):\n{self.log.read_text()}")
        try:
            return httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every stored sample of the series matching `match` (a series selector), after
        making what was just written searchable (VictoriaMetrics buffers new rows ~1 s)."""
        httpx.get(f"{self.url}/internal/force_flush", timeout=10).raise_for_status()
        r = httpx.post(f"{self.url}/api/v1/export", data={"match[]": match}, timeout=10)
        r.raise_for_status()
        return [json.loads(line) for line in r.text.splitlines() if line.strip()]

    def samples(self, match: str) -> dict[tuple[str, str], dict[int, float]]:
        """{(metric name, device_id): {ts_s: value}} for the series matching `match`."""
        out: dict[tuple[str, str], dict[int, float]] = {}
        for series in self.export(match):
            key = (series["metric"]["__name__"], series["metric"].get("device_id", ""))
            points = out.setdefault(key, {})
            for ts_ms, value in zip(series["timestamps"], series["values"]):
                points[ts_ms // 1000] = value
        return out
