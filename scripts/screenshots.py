"""`make screenshots`: the dashboards in zh-CN, photographed by headless Chromium into
docs/screenshots/. A server on SQLite in a temp folder with Mosquitto (without it, the
embedded amqtt broker); the demo province loaded through the CSV importer; six rooms of
one school get last week's windows (bench/render.py's synthetic week, stored in the
ingest tables and rolled up by the real rollup, since virtual nodes at 1200x need more
CPU than a shared machine has); then 7 virtual nodes (the real firmware on the
MicroPython unix port) run in real time: six in those rooms, one unassigned, two stopped
again so the offline list has something. One picture per page, and the school page at
phone width."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn  # noqa: E402

from bench.render import feed_week, last_full_week  # noqa: E402
from fleet_server.app import create_app  # noqa: E402
from fleet_server.demo import free_port  # noqa: E402
from fleet_server.registry.demo_data import load_demo_registry  # noqa: E402
from fleet_server.registry.service import list_rooms, list_schools  # noqa: E402
from fleet_server.services.devices import list_devices  # noqa: E402
from fleet_server.settings import Settings  # noqa: E402
from fleet_server.virtual_nodes import (  # noqa: E402
    SCENARIO_MIX, SHANGHAI, VirtualNode, node_config, prepare_node_dir, stop_all, virtual_device_id,
)

OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
NODES = 6
SYNTHETIC_SEQ = 10**9        # the synthetic week's seq numbers never meet the nodes' own


def wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def start_mosquitto(workdir: Path, port: int) -> subprocess.Popen | None:
    """Mosquitto on a loopback port with a throwaway config, if it is installed."""
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        return None
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    + ("user root\n" if os.geteuid() == 0 else "") + "max_inflight_messages 1000\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit("Chromium is not installed: sudo apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    workdir = Path(tempfile.mkdtemp(prefix="cf-shots-"))
    http_port, mqtt_port = free_port(), free_port()
    broker = start_mosquitto(workdir, mqtt_port)
    scheme = "mqtt" if broker is not None else "embedded"
    # A throwaway server on loopback for the pictures: no login (docs/security.md).
    app = create_app(Settings(db=f"sqlite:///{workdir}/fleet.db", mqtt=f"{scheme}://127.0.0.1:{mqtt_port}",
                              auth_required=False))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait(lambda: server.started, 60, "the server")
    base = f"http://127.0.0.1:{http_port}"
    monday = last_full_week()
    ids = [virtual_device_id(i + 1) for i in range(NODES + 1)]
    nodes: list[VirtualNode] = []
    try:
        with app.state.engine.begin() as conn:
            load_demo_registry(conn)
            _, schools = list_schools(conn, limit=1, offset=0)
            school = schools[0]
            rooms = list_rooms(conn, school["id"])
        n = feed_week(app.state.engine, school["id"], monday, device_ids=ids[:NODES], seq_base=SYNTHETIC_SEQ)
        print(f"{n:,} windows of the week of {monday} rolled up for {school['name']}")
        now = datetime.now(SHANGHAI).replace(microsecond=0)
        for i, device_id in enumerate(ids):
            cfg = node_config(device_id, mqtt_host="127.0.0.1", mqtt_port=mqtt_port,
                              scenario=SCENARIO_MIX[i % len(SCENARIO_MIX)], start=now, speed=1, seed=i + 1)
            nodes.append(VirtualNode(device_id, prepare_node_dir(workdir / "nodes" / device_id, cfg)).start())

        def online() -> bool:
            with app.state.engine.connect() as conn:
                return sum(1 for d in list_devices(conn, limit=100, offset=0)[1] if d["online"]) >= len(ids)
        wait(online, 180, "the virtual nodes online")
        stop_all(nodes[NODES - 2:NODES])      # two go offline: the offline list has something
        # An identify command and its ack, for the device page.
        req = urllib.request.Request(f"{base}/api/v1/devices/{ids[0]}/commands", method="POST",
                                     data=json.dumps({"op": "identify"}).encode(),
                                     headers={"content-type": "application/json"})
        urllib.request.urlopen(req, timeout=10).close()

        def acked() -> bool:
            with urllib.request.urlopen(f"{base}/api/v1/devices/{ids[0]}/commands", timeout=10) as r:
                return bool(json.load(r)[0]["acked"])
        wait(acked, 60, "the identify ack")
        y, w, _ = monday.isocalendar()
        week = f"{y}-W{w:02d}"
        pages = [("home", "/"), ("school", f"/schools/{school['id']}?week={week}"),
                 ("room", f"/rooms/{rooms[0]['id']}?date={monday + timedelta(days=2)}"),
                 ("province", f"/regions/330000?week={week}"),
                 ("city", f"/regions/{school['city_code']}?week={week}"),
                 ("county", f"/regions/{school['county_code']}?week={week}"), ("fleet", "/fleet"),
                 ("device", f"/fleet/devices/{ids[0]}")]
        args.out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            for kind, width in (("desktop", 1200), ("phone", 390)):
                context = browser.new_context(locale="zh-CN", viewport={"width": width, "height": 900})
                page = context.new_page()
                for shot, path in pages if kind == "desktop" else [pages[1]]:
                    page.goto(base + path)
                    page.wait_for_load_state("networkidle")
                    target = args.out / (f"{shot}.png" if kind == "desktop" else f"{shot}-phone.png")
                    page.screenshot(path=str(target), full_page=True)
                    print(f"wrote {target}")
                context.close()
            browser.close()
    finally:
        stop_all(nodes)
        server.should_exit = True
        thread.join(20)
        if broker is not None:
            broker.terminate()
            broker.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
