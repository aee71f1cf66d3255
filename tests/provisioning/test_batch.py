"""`batch` end to end over 8 virtual boards at once against one real fleet server: each
board flashed by real esptool through its own ROM loader simulator, then deploy,
register, verify, label. One board's USB link drops in every flash attempt: it is
reported with its plain reason in the summary table and the CSV log, the other 7 go
online unaffected. A rerun resumes: the 7 are skipped without touching their boards,
only the failed one is installed; a third run changes nothing at all."""
from __future__ import annotations

import csv
import re
import time

import pytest

from provisioning import firmware_cache
from provisioning.batch import batch, read_batch, summary_table
from provisioning.install import Options
from tests.provisioning.conftest import sim_section
from tests.provisioning.images import esp_image
from tests.provisioning.rom_sim import RomSimulator

SQLITE_ONLY = pytest.mark.parametrize("server", ["sqlite"], indirect=True)
N_BOARDS = 8
BROKEN = 5          # the board whose cable drops mid-write
ROOMS = [f"C1{i:02d}" for i in range(1, N_BOARDS + 1)]


@pytest.fixture
def cart(fleet, make_board, tmp_path, monkeypatch):
    """8 virtual boards (REPL on a pty) each with its ROM loader simulator (same MAC), a
    firmware cache holding an ESP32-S3 image, and 8 rooms of school S1 to put them in."""
    rooms_csv = "school_code,room_code,name,type\n" + "".join(f"S1,{r},{r}教室,classroom\n" for r in ROOMS)
    r = fleet.http.post("/api/v1/import/rooms", content=rooms_csv.encode(),
                        headers={"Content-Type": "text/csv; charset=utf-8"})
    assert r.status_code == 200, r.text
    monkeypatch.setenv("CAMPUS_PROVISION_HOME", str(tmp_path / "home"))
    image = tmp_path / "ESP32_GENERIC_S3-20251209-v1.27.0.bin"
    image.write_bytes(esp_image("esp32s3", size=64_000))
    firmware_cache.add(image)
    boards = [make_board() for _ in range(N_BOARDS)]
    sims = {b.port: RomSimulator("esp32s3", b.mac).start() for b in boards}
    yield boards, sims, image.read_bytes()
    for s in sims.values():
        s.stop()


@SQLITE_ONLY
def test_batch_of_8_boards_reports_the_broken_one_and_a_rerun_resumes_only_it(fleet, api, cart, tmp_path):
    boards, sims, image = cart
    by_port = {b.port: b for b in boards}
    broken = boards[BROKEN]
    broken_id = "cf-" + broken.mac.replace(":", "")
    sims[broken.port].inject_link_drop(after_blocks=1, times=1000)     # a bad cable: every attempt cut
    sheet = tmp_path / "cart.csv"
    sheet.write_text("port,school,room\n" + "".join(f"{b.port},S1,{room}\n" for b, room in zip(boards, ROOMS)))
    jobs = read_batch(sheet)
    opts = Options(api=api, extra={"sim": sim_section()}, label_dir=tmp_path / "labels", hardware="sim",
                   verify_timeout_s=120, reset_for=lambda port: by_port[port].reset,
                   flash_port_for=lambda port: sims[port].url)
    log = tmp_path / "provision-log.csv"
    lines: list[tuple[str, str, str]] = []

    t0 = time.monotonic()
    first = batch(jobs, opts, log_path=log, workers=N_BOARDS, progress=lambda *a: lines.append(a),
                  sheet_path=tmp_path / "sheet-1.pdf")
    wall_s = time.monotonic() - t0

    # the 7 good boards: flashed, online in their rooms, labelled
    good = [o for i, o in enumerate(first) if i != BROKEN]
    assert [o.summary for o in good] == ["provisioned"] * 7, [o.error for o in good]
    for o, b, room in zip(first, boards, ROOMS):
        if b is broken:
            continue
        assert o.steps == {"flash": "done", "deploy": "done", "register": "done", "verify": "done", "label": "done"}
        assert o.device_id == "cf-" + b.mac.replace(":", "")
        device = fleet.device(o.device_id)
        assert device["online"] and device["room"]["code"] == room and device["school"]["code"] == "S1", device
        assert bytes(sims[b.port].flash[:len(image)]) == image      # ESP32-S3: the image at 0x0
        assert (tmp_path / "labels" / f"{o.device_id}.png").exists()
    # the broken board: failed at flash with the plain reason, nothing after it was tried
    bad = first[BROKEN]
    assert not bad.ok and bad.steps == {"flash": "failed"}
    assert re.fullmatch(r"flashing socket://\S+ failed \(460800 baud: .+; 115200 baud: .+\): check the USB cable.*",
                        bad.error)
    assert set(broken.files()) == {".mac"}                          # the REPL was never written to
    assert api.device(broken_id) is None
    assert bytes(sims[broken.port].flash[:len(image)]) != image
    table = summary_table(first)
    assert table[0].split() == ["port", "device", "school", "room", "result"]
    assert len(table) == N_BOARDS + 2 and table[-1] == "7 of 8 nodes ok (0 done earlier), 1 failed"
    broken_line = next(line for line in table if line.startswith(broken.port + " "))
    assert "FAILED at flash: flashing socket://" in broken_line and "check the USB cable" in broken_line
    rows = list(csv.DictReader(log.open()))
    assert [r["result"] for r in rows] == ["provisioned"] * BROKEN + ["failed"] + ["provisioned"] * (N_BOARDS - BROKEN - 1)
    assert rows[BROKEN]["flash"] == "failed" and rows[BROKEN]["deploy"] == "" and rows[BROKEN]["error"] == bad.error
    assert all(int(r["upload_bytes"]) > 0 for i, r in enumerate(rows) if i != BROKEN)
    # one sheet PDF of the 7 labels: one A4 page
    pdf = (tmp_path / "sheet-1.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type /Page\b", pdf)) == 1
    assert {s for _, s, _ in lines} >= {"flash", "deploy", "register", "verify", "label"}
    print(f"\nPROVISION-FIGURES batch_{N_BOARDS}_boards_wall_s={wall_s:.1f} "
          f"per_node_s={sorted(round(o.seconds, 1) for o in good)}")

    # rerun after the cable is replaced: only the broken board is touched
    sims[broken.port].inject_link_drop(after_blocks=1, times=0)
    for s in sims.values():
        s.commands.clear()
    running = {b.port: b.node.proc.pid for b in boards if b is not broken}
    t1 = time.monotonic()
    second = batch(jobs, opts, log_path=log, workers=N_BOARDS, sheet_path=tmp_path / "sheet-2.pdf")
    rerun_s = time.monotonic() - t1
    assert [o.ok for o in second] == [True] * N_BOARDS, [o.error for o in second]
    assert second[BROKEN].summary == "provisioned" and second[BROKEN].steps["flash"] == "done"
    assert fleet.device(broken_id)["online"] and fleet.device(broken_id)["room"]["code"] == ROOMS[BROKEN]
    for i, o in enumerate(second):
        if i == BROKEN:
            continue
        assert o.summary.startswith("done earlier (") and o.summary.endswith("online: skipped")
        assert set(o.steps.values()) == {"skipped"} and o.device_id == first[i].device_id
        assert sims[boards[i].port].commands == []                   # its ROM loader not even opened
        assert boards[i].node.proc.pid == running[boards[i].port] and boards[i].node.running()
    assert summary_table(second)[-1] == "8 of 8 nodes ok (7 done earlier), 0 failed"
    rows = list(csv.DictReader(log.open()))[N_BOARDS:]
    assert [r["result"] for r in rows] == ["done earlier, skipped"] * BROKEN + ["provisioned"] + \
        ["done earlier, skipped"] * (N_BOARDS - BROKEN - 1)
    assert len(re.findall(rb"/Type /Page\b", (tmp_path / "sheet-2.pdf").read_bytes())) == 1

    # a third run: every node done and online, nothing touched
    for s in sims.values():
        s.commands.clear()
    third = batch(jobs, opts, log_path=log, workers=N_BOARDS, sheet_path=tmp_path / "sheet-3.pdf")
    assert all(o.done_earlier for o in third) and not (tmp_path / "sheet-3.pdf").exists()
    assert all(s.commands == [] for s in sims.values())
    print(f"PROVISION-FIGURES batch_rerun_resume_1_of_{N_BOARDS}_s={rerun_s:.1f}")
