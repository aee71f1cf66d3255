"""Install one node: flash, deploy, register, verify, label, with a progress line per
step and one outcome. Rerunning on a provisioned node changes nothing and says so.
Many nodes at once: provisioning/batch.py."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from provisioning import firmware_cache
from provisioning.board import Board
from provisioning.deploy import REPO_FIRMWARE_DIR, deploy
from provisioning.errors import ProvisionError
from provisioning.flash import flash
from provisioning.label import Label, write as write_label
from provisioning.register import register
from provisioning.server_api import FleetApi
from provisioning.verify import verify

STEPS = ("flash", "deploy", "register", "verify", "label")
Progress = Callable[[str, str, str], None]       # (port, step, message)


@dataclass
class Job:
    port: str
    school: str
    room: str


@dataclass
class Options:
    api: FleetApi
    firmware_dir: Path = REPO_FIRMWARE_DIR
    wifi: dict | None = None
    extra: dict | None = None
    chip: str = "auto"
    do_flash: bool = True
    label_dir: Path | None = None
    hardware: str | None = None
    verify_timeout_s: float = 180.0
    # A virtual board's reset (tests); None: machine.reset() over the REPL.
    reset_for: Callable[[str], Callable[[], None]] | None = None
    # Where the board's ROM loader answers when not on the REPL's port (tests: the ROM
    # loader simulator's socket:// URL); None: the same port, as on every real board.
    flash_port_for: Callable[[str], str] | None = None


@dataclass
class Outcome:
    port: str
    school: str
    room: str
    device_id: str | None = None
    steps: dict[str, str] = field(default_factory=dict)     # step -> done | unchanged | skipped | failed
    error: str | None = None
    seconds: float = 0.0
    upload_bytes: int = 0
    first_window: dict | None = None
    label: Label | None = None
    # Skipped in a rerun: the log says it was done and the server shows it online in its room.
    done_earlier: str | None = None       # the log row's time

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def changed(self) -> bool:
        return any(self.steps.get(s) == "done" for s in ("flash", "deploy", "register"))

    @property
    def summary(self) -> str:
        if not self.ok:
            failed = next((s for s, v in self.steps.items() if v == "failed"), "?")
            return f"FAILED at {failed}: {self.error}"
        if self.done_earlier:
            return f"done earlier ({self.done_earlier}), online: skipped"
        if not self.changed:
            return "already provisioned, nothing changed"
        return "provisioned"


def _open_board(port: str, wait_s: float = 10.0) -> Board:
    """The REPL after a flash takes a moment (MicroPython's first boot makes its filesystem)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return Board(port)
        except ProvisionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def install(job: Job, opts: Options, progress: Progress | None = None) -> Outcome:
    out = Outcome(job.port, job.school, job.room)
    t0 = time.monotonic()
    say = (lambda step, msg: progress(job.port, step, msg)) if progress else (lambda step, msg: None)
    step = "flash"
    try:
        if opts.do_flash:
            rom_port = opts.flash_port_for(job.port) if opts.flash_port_for else job.port
            r = flash(rom_port, lambda chip: firmware_cache.find(chip)[1], chip=opts.chip)
            out.steps["flash"] = "unchanged" if r.already_flashed else "done"
            say("flash", f"{r.chip} {r.mac}: " + ("image already in flash" if r.already_flashed
                                                  else f"{r.size} B written at {r.offset:#x}, verified"))
        else:
            out.steps["flash"] = "skipped"
            say("flash", "skipped")
        step = "deploy"
        with _open_board(job.port) as board:
            d = deploy(board, opts.firmware_dir)
            out.upload_bytes = d.bytes_uploaded
            out.steps["deploy"] = "done" if d.changed else "unchanged"
            say("deploy", f"{len(d.uploaded)} files uploaded ({d.bytes_uploaded} B), {len(d.unchanged)} unchanged")
            step = "register"
            reg = register(board, opts.api, school=job.school, room=job.room, wifi=opts.wifi,
                           extra=opts.extra, hardware=opts.hardware)
            out.device_id = reg.device_id
            out.steps["register"] = "unchanged" if reg.nothing_changed else "done"
            say("register", f"{reg.device_id} -> {reg.school['code']} {reg.room['code']} "
                            + ("(unchanged)" if reg.nothing_changed else "(config.json written)"))
            step = "verify"
            reset = opts.reset_for(job.port) if opts.reset_for else None
            v = verify(board, opts.api, reg.device_id, reset=reset, timeout_s=opts.verify_timeout_s)
        out.first_window = v.window
        out.steps["verify"] = "done"
        say("verify", f"online after {v.seconds:.1f} s; first window: {describe_window(v.window)}")
        step = "label"
        if opts.label_dir is not None:
            out.label = Label(reg.device_id, f"{reg.school['code']} {reg.school['name']}",
                              f"{reg.room['code']} {reg.room['name']}")
            files = write_label(out.label, opts.label_dir)
            out.steps["label"] = "done"
            say("label", ", ".join(str(f) for f in files))
        else:
            out.steps["label"] = "skipped"
    except ProvisionError as e:
        out.steps[step] = "failed"
        out.error = str(e)
        say(step, f"FAILED: {e}")
    out.seconds = time.monotonic() - t0
    return out


def describe_window(w: dict | None) -> str:
    if not w:
        return "none"
    occ, env = w.get("occ") or {}, w.get("env") or {}
    parts = [f"occupied {occ.get('occupied_s')}/{w.get('win')} s"]
    for key, unit in (("co2_ppm", "ppm CO2"), ("temp_c", "°C"), ("rh_pct", "% RH"), ("lux", "lx"),
                      ("noise_dba", "dBA")):
        if env.get(key) is not None:
            parts.append(f"{env[key]} {unit}")
    return ", ".join(parts)
