"""install/batch over two virtual boards at once (no ROM loader on the unix port, so
--no-flash): progress per step, a summary, a CSV log and labels; a rerun of the same
batch with --redo installs again and says "already provisioned, nothing changed" for
every node. (8 boards with flashing and a broken one: test_batch.py.)"""
from __future__ import annotations

import csv
import time

import pytest

from provisioning.batch import batch, read_batch
from provisioning.install import Job, Options
from tests.provisioning.conftest import sim_section

SQLITE_ONLY = pytest.mark.parametrize("server", ["sqlite"], indirect=True)


@SQLITE_ONLY
def test_batch_provisions_boards_in_parallel_and_a_rerun_changes_nothing(fleet, api, make_board, tmp_path):
    boards = [make_board(), make_board()]
    sheet = tmp_path / "school-S1.csv"
    sheet.write_text("port,school,room\n" + "".join(f"{b.port},S1,{room}\n" for b, room in zip(boards, ("A101", "B201"))))
    jobs = read_batch(sheet)
    by_port = {b.port: b for b in boards}
    opts = Options(api=api, extra={"sim": sim_section()}, do_flash=False, label_dir=tmp_path / "labels",
                   hardware="sim", verify_timeout_s=90, reset_for=lambda port: by_port[port].reset)
    lines: list[tuple[str, str, str]] = []
    log = tmp_path / "provision-log.csv"
    t0 = time.monotonic()
    first = batch(jobs, opts, log_path=log, workers=2, progress=lambda *a: lines.append(a))
    elapsed = time.monotonic() - t0
    assert [o.summary for o in first] == ["provisioned", "provisioned"], [o.error for o in first]
    assert {o.device_id for o in first} == {"cf-" + b.mac.replace(":", "") for b in boards}
    for o in first:
        assert o.steps == {"flash": "skipped", "deploy": "done", "register": "done", "verify": "done", "label": "done"}
        assert fleet.device(o.device_id)["online"]
        assert (tmp_path / "labels" / f"{o.device_id}.png").exists()
    assert {step for _, step, _ in lines} == {"flash", "deploy", "register", "verify", "label"}
    print(f"\nPROVISION-FIGURES batch_2_boards_s={elapsed:.2f}")

    for b in boards:
        b.to_repl()
    again = batch(jobs, opts, log_path=log, workers=2, redo=True)
    assert [o.summary for o in again] == ["already provisioned, nothing changed"] * 2, [o.steps for o in again]
    assert all(o.upload_bytes == 0 for o in again)
    rows = list(csv.DictReader(log.open()))
    assert len(rows) == 4
    assert [r["result"] for r in rows] == ["provisioned"] * 2 + ["already provisioned, nothing changed"] * 2
    assert rows[2]["deploy"] == "unchanged" and rows[2]["register"] == "unchanged" and rows[2]["verify"] == "done"


def test_batch_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "b.csv"
    bad.write_text("/dev/ttyUSB0,S1,A101\n/dev/ttyUSB0,S1,A102\n")
    with pytest.raises(Exception, match="line 2: port /dev/ttyUSB0 appears twice"):
        read_batch(bad)
    bad.write_text("/dev/ttyUSB0,S1\n")
    with pytest.raises(Exception, match="line 1: expected port,school,room"):
        read_batch(bad)
    ok = tmp_path / "ok.csv"
    ok.write_text("# school S1\n/dev/ttyUSB0, S1 ,A101\n")
    assert read_batch(ok) == [Job("/dev/ttyUSB0", "S1", "A101")]
