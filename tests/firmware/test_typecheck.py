"""Type-checks every firmware module with mypy against MicroPython's ESP32 stubs, so that
`machine`, `network`, `ntptime` and `micropython.const` are checked as on the board.

firmware/mypy.ini explains the stub tree built here. By hand, from the repo root:
    .venv/bin/python -m tests.firmware.test_typecheck
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
CONFIG = FIRMWARE / "mypy.ini"
ESP32_STUBS = "micropython-esp32-stubs"
STDLIB_STUBS = "micropython-stdlib-stubs"  # installed by ESP32_STUBS (typeshed-shaped stdlib/)
INSTALL_HINT = "install the dev extras: .venv/bin/pip install -e '.[dev]'"
# Modules the firmware imports that only MicroPython has; each must come from the stubs.
MICROPYTHON_MODULES = ("machine", "network", "ntptime", "micropython")


class ToolMissing(Exception):
    pass


def _dist_files(dist: str) -> list[importlib.metadata.PackagePath]:
    try:
        files = importlib.metadata.files(dist)
    except importlib.metadata.PackageNotFoundError:
        raise ToolMissing(f"{dist} is not installed; {INSTALL_HINT}") from None
    if not files:
        raise ToolMissing(f"{dist} lists no files (installed without a RECORD?); reinstall it")
    return list(files)


def build_typeshed(dest: Path) -> Path:
    """Lays the two stub distributions out as a typeshed for --custom-typeshed-dir:
    dest/stdlib/ = micropython-stdlib-stubs' stdlib/ and _mpy_shed/ plus every module of
    micropython-esp32-stubs (the port's own stub wins a clash); dest/stubs/ = its
    stubs/ (mypy refuses to start without stubs/mypy-extensions)."""
    for dist in (STDLIB_STUBS, ESP32_STUBS):
        for f in _dist_files(dist):
            if f.parts[0].endswith(".dist-info") or (f.suffix != ".pyi" and f.name != "VERSIONS"):
                continue
            rel = Path(*f.parts) if f.parts[0] in ("stdlib", "stubs") else Path("stdlib", *f.parts)
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(str(f.locate())), out)
    ext = dest / "stubs" / "mypy-extensions"
    spec = importlib.util.find_spec("mypy")
    if not ext.exists() and spec and spec.submodule_search_locations:
        # Older stdlib stubs lack it; mypy's own typeshed has the same file.
        bundled = Path(list(spec.submodule_search_locations)[0], "typeshed", "stubs", "mypy-extensions")
        if bundled.is_dir():
            shutil.copytree(bundled, ext)
    missing = [m for m in MICROPYTHON_MODULES if not (dest / "stdlib" / f"{m}.pyi").exists()]
    if missing or not (dest / "stdlib" / "VERSIONS").exists():
        raise ToolMissing(f"the stubs lack {missing or 'stdlib/VERSIONS'}; "
                          f"reinstall {ESP32_STUBS} (>= 1.23)")
    return dest


def mypy_command(typeshed: Path, cache: Path) -> list[str]:
    if importlib.util.find_spec("mypy") is None:
        raise ToolMissing(f"mypy is not installed in {sys.executable}; {INSTALL_HINT}")
    return [sys.executable, "-m", "mypy", "--config-file", str(CONFIG.relative_to(REPO)),
            "--custom-typeshed-dir", str(typeshed), "--cache-dir", str(cache), "firmware"]


def firmware_module_count() -> int:
    return sum(1 for p in FIRMWARE.rglob("*.py") if "__pycache__" not in p.parts)


def run_mypy(workdir: Path) -> tuple[list[str], subprocess.CompletedProcess]:
    cmd = mypy_command(build_typeshed(workdir / "typeshed"), workdir / "mypy_cache")
    return cmd, subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_firmware_typechecks_against_micropython_stubs(tmp_path):
    try:
        cmd, r = run_mypy(tmp_path)
    except ToolMissing as e:
        pytest.fail(str(e), pytrace=False)
    out = (r.stdout + r.stderr).strip()
    exit_code = r.returncode
    assert exit_code == 0, f"mypy found errors:\n$ {' '.join(cmd)}\n{out}"
    # Every module was checked, not just the ones mypy happened to reach.
    checked = re.search(r"in (\d+) source files?", out)
    assert checked and int(checked.group(1)) == firmware_module_count(), out


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        try:
            cmd, r = run_mypy(Path(tmp))
        except ToolMissing as e:
            sys.exit(str(e))
        print("$", " ".join(cmd))
        print((r.stdout + r.stderr).strip())
        sys.exit(r.returncode)
