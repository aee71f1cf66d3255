"""`campusfleet demo` as a newcomer runs it: >= 10 virtual nodes online within 90 s,
then Ctrl-C stops every process it started."""
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fleet_server.virtual_nodes import pids_running_in
from tests.utils.services import free_port, wait_until


def test_demo_brings_ten_nodes_online_and_stops_cleanly_on_ctrl_c(tmp_path):
    http_port, mqtt_port = free_port(), free_port()
    workdir = tmp_path / "demo"
    campusfleet = Path(sys.executable).with_name("campusfleet")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [str(campusfleet), "demo", "--nodes", "10", "--bind", f"127.0.0.1:{http_port}",
         "--mqtt-port", str(mqtt_port), "--workdir", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Auth is on in the demo: log in as the operator it prints (and keeps in a file).
    http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=5)
    login = workdir / "demo-login.txt"

    def logged_in():
        if not login.exists() or len(login.read_text().split()) < 2:
            return False
        user, password = login.read_text().split()[:2]
        try:
            return http.post("/api/v1/auth/login", json={"username": user, "password": password}).status_code == 200
        except httpx.HTTPError:
            return False
    try:
        wait_until(logged_in, 60, 0.5, "the demo's operator login")

        def online():
            try:
                items = http.get("/api/v1/devices", timeout=2).json()["items"]
            except (httpx.HTTPError, ValueError):
                return 0
            return sum(1 for d in items if d["online"])
        wait_until(lambda: online() >= 10, 90, 0.5, "10 demo nodes online")
        elapsed = time.monotonic() - t0
        assert elapsed < 90
        # Windows flow, not just births.
        wait_until(lambda: all(d["windows_received"] > 0 for d in http.get(
            "/api/v1/devices").json()["items"]), 30, 0.5, "windows from every node")
        assert len(pids_running_in(workdir)) == 10
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=60)
        http.close()
    assert proc.returncode == 0, out
    assert "http://127.0.0.1:%d/" % http_port in out and "stopped." in out
    assert pids_running_in(workdir) == []
    for port in (http_port, mqtt_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after the demo stopped"
