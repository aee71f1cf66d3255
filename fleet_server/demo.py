"""`campusfleet demo`: the embedded tier in one command. Starts the server with its
amqtt broker on SQLite, and N virtual nodes running the real firmware on MicroPython,
each replaying the latest school day from 07:30 at --speed until it reaches now."""
from __future__ import annotations

import json
import secrets
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import uvicorn
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fleet_server.app import create_app
from fleet_server.services.devices import list_devices
from fleet_server.settings import Settings, parse_host_port
from fleet_server.virtual_nodes import (
    SCENARIO_MIX, VirtualNode, latest_school_day_start, node_config, prepare_node_dir,
    stop_all, virtual_device_id,
)


class DemoError(Exception):
    pass


DEMO_LOGIN_FILE = "demo-login.txt"


def _demo_operator(app, workdir: Path) -> str:
    """Auth is on in the demo too: an operator `demo` with a random password, printed
    with the dashboard URL and kept (mode 600) in the demo's folder."""
    from fleet_server.auth.users import create_user
    password = secrets.token_urlsafe(12)
    with app.state.engine.begin() as conn:
        create_user(conn, "demo", "operator", password=password)
    path = workdir / DEMO_LOGIN_FILE
    path.touch(mode=0o600)
    path.write_text(f"demo\n{password}\n")
    return password


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _online_count(app) -> int:
    with app.state.engine.connect() as conn:
        _, items = list_devices(conn, limit=1000, offset=0)
    return sum(1 for d in items if d["online"])


# Scenario of a virtual node -> the room type it is installed in.
ROOM_TYPE_FOR_SCENARIO = {"classroom": "classroom", "lab": "lab", "library": "library",
                          "computer_room": "computer_room", "new_style": "new_style",
                          "music": "art_music", "idle": "classroom"}


def _load_demo_school(app, nodes: list[VirtualNode], from_ts: int, console: Console) -> None:
    """Load the demo province (regions, ~300 schools, rooms, timetables, holidays)
    through the real CSV importer, then install the virtual nodes in rooms of the first
    school, from the sim start so every window belongs to its room."""
    from fleet_server.registry.demo_data import load_demo_registry
    from fleet_server.registry.service import assign_device, list_rooms, list_schools

    t0 = time.monotonic()
    try:
        with console.status("loading the demo province: regions, schools, rooms, timetables ..."), \
                app.state.engine.begin() as conn:
            load_demo_registry(conn)
            _, schools = list_schools(conn, limit=1, offset=0)
            school = schools[0]
            free = list_rooms(conn, school["id"])
            for node in nodes:
                scenario = json.loads((node.node_dir / "config.json").read_text())["sim"]["scenario"]
                want = ROOM_TYPE_FOR_SCENARIO.get(scenario, "classroom")
                room = next((r for r in free if r["type"] == want), None) or free[0]
                free.remove(room)
                assign_device(conn, node.device_id, room["id"], from_ts)
        console.print(f"demo province loaded in {time.monotonic() - t0:.1f} s; "
                      f"nodes installed in {school['name']} (school {school['id']})")
    except Exception as e:  # noqa: BLE001 - the demo goes on without the registry
        console.print(f"[red]demo registry not loaded: {e}[/]")


def run_demo(*, nodes: int = 12, speed: float = 60.0, bind: str = "127.0.0.1:8000",
             mqtt_port: int | None = None, workdir: Path = Path("var/demo"),
             duration_s: float | None = None, console: Console | None = None) -> int:
    console = console or Console()
    http_host, http_port = parse_host_port(bind, 8000)
    if not port_free(http_host, http_port):
        raise DemoError(f"{http_host}:{http_port} is in use; pass --bind {http_host}:{http_port + 1} (or stop what holds it)")
    if mqtt_port is None:
        mqtt_port = 1883 if port_free("127.0.0.1", 1883) else free_port()
    elif not port_free("127.0.0.1", mqtt_port):
        raise DemoError(f"MQTT port {mqtt_port} is in use; pass another --mqtt-port")

    # A fresh demo each run: last run's nodes and database would only confuse.
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    settings = Settings(db=f"sqlite:///{workdir.resolve()}/campusfleet.db",
                        mqtt=f"embedded://127.0.0.1:{mqtt_port}", bind=bind,
                        # Virtual nodes are never registered: let them in, each still
                        # confined to its own topics (docs/security.md).
                        require_registration=False)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host=http_host, port=http_port, log_level="warning"))
    server_thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)

    stop = threading.Event()

    def _on_signal(signum, frame):
        stop.set()

    old_term = signal.signal(signal.SIGTERM, _on_signal)
    old_int = signal.signal(signal.SIGINT, _on_signal)
    virtual: list[VirtualNode] = []
    base = f"http://{'[' + http_host + ']' if ':' in http_host else http_host}:{http_port}"
    try:
        server_thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not server_thread.is_alive() or time.monotonic() > deadline:
                raise DemoError("the server did not start; see the messages above")
            time.sleep(0.05)

        login = _demo_operator(app, workdir)
        start = latest_school_day_start()
        console.print(f"[bold]CampusFleet demo[/]: {nodes} virtual nodes (real firmware on MicroPython), "
                      f"replaying from {start:%Y-%m-%d %H:%M} Asia/Shanghai at {speed:g}x")
        for i in range(nodes):
            device_id = virtual_device_id(i + 1)
            cfg = node_config(device_id, mqtt_host="127.0.0.1", mqtt_port=mqtt_port,
                              scenario=SCENARIO_MIX[i % len(SCENARIO_MIX)], start=start,
                              speed=speed, seed=i + 1, truth="truth.csv")
            virtual.append(VirtualNode(device_id, prepare_node_dir(workdir / "nodes" / device_id, cfg)))

        # The registry goes in before the nodes start: one long SQLite write while
        # ingest is busy would hold up its commits (and amqtt gives up on PUBACKs
        # after 5 s).
        _load_demo_school(app, virtual, int(start.timestamp()), console)
        for node in virtual:
            node.start()

        t0 = time.monotonic()
        with Progress(TextColumn("nodes online"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("online", total=nodes)
            while not stop.is_set():
                online = _online_count(app)
                progress.update(task, completed=online)
                if online >= nodes or time.monotonic() - t0 > 90:
                    break
                stop.wait(0.5)
        online = _online_count(app)
        console.print(f"{online}/{nodes} nodes online after {time.monotonic() - t0:.1f} s")
        console.print(f"  dashboard:  {base}/   log in as [bold]demo[/] / [bold]{login}[/]"
                      f"  (also in {workdir / DEMO_LOGIN_FILE})")
        console.print(f"  API docs:   {base}/docs")
        console.print(f"  devices:    {base}/api/v1/devices")
        console.print(f"  metrics:    {base}/metrics")
        console.print(f"  MQTT:       mqtt://127.0.0.1:{mqtt_port}  (embedded amqtt)")
        console.print("Press Ctrl-C to stop.")

        ends = None if duration_s is None else time.monotonic() + duration_s
        while not stop.is_set() and (ends is None or time.monotonic() < ends):
            for node in virtual:
                if node.proc is not None and node.proc.poll() is not None and not stop.is_set():
                    console.print(f"[red]{node.device_id} exited ({node.proc.returncode}); "
                                  f"see {node.node_dir / 'node.log'}; restarting[/]")
                    node.start()
            stop.wait(1.0)
    finally:
        console.print("stopping virtual nodes, server and broker ...")
        stop_all(virtual)
        server.should_exit = True
        server_thread.join(20)
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        console.print("stopped.")
    return 0
