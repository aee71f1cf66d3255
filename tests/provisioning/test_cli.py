"""The CLI's errors: a bad argument or a failed step is one line saying what to do."""
from __future__ import annotations

import subprocess
import sys

import pytest

from provisioning.cli import main


@pytest.mark.parametrize("argv,expected", [
    (["flash"], "campus-provision flash: error: Missing option '--port'"),
    (["flash", "--port", "x", "--chip", "esp8266"], "Invalid value for '--chip'"),
    (["flash", "--port", "x", "--baud", "5"], "Invalid value for '--baud'"),
    (["install", "--port", "x", "--server", "http://h", "--school", "S1"], "Missing option '--room'"),
    (["fly"], "campus-provision: error: No such command 'fly'"),
    (["verify", "--port", "x", "--server", "http://h", "--timeout", "1"], "Invalid value for '--timeout'"),
])
def test_bad_arguments_get_a_one_line_explanation_and_exit_2(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and "--help" in err


@pytest.mark.parametrize("argv,expected", [
    (["deploy", "--port", "/dev/nonexistent-tty"], "campus-provision: cannot open /dev/nonexistent-tty"),
    (["label", "--device-id", "cf-12", "--school", "S1", "--room", "A101"], "is not cf-<12 lowercase hex"),
    (["register", "--port", "/dev/x", "--server", "http://h", "--room-qr", "junk"], "not a room QR code"),
    (["batch", "/nonexistent.csv", "--server", "http://h"], "cannot read /nonexistent.csv"),
])
def test_a_failing_step_is_one_line_and_exit_1(capsys, argv, expected):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("campus-provision: ") and expected in err


def test_the_module_entry_point_runs_without_a_traceback():
    r = subprocess.run([sys.executable, "-m", "provisioning.cli", "flash"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
